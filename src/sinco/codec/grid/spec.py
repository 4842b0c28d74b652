"""The decoder-side hyper-parameters of the latent-grid family, and their bytes (the family block)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sinco.errors import BitstreamError, InputError

#: Version 2 added the ``linear_skip`` byte; version 3 the ``warm_start`` byte. Every spec is written in the oldest
#: version that can hold it (a spec without the skip as version 1, one without a warm start as version 2), so files
#: that do not use a newer field stay readable by older decoders.
SPEC_VERSION = 3
#: Warm starts a spec can name (0: none); :mod:`sinco.codec.grid.warm_start` holds their weights.
MAX_WARM_START = 1
#: The warm start of new fits of the default spec (``--warm-start on``).
DEFAULT_WARM_START = 1
UPSAMPLING_KINDS = ("bicubic", "learned")
#: Causal neighbours of a latent in its own grid, ``(dy, dx)``, most informative first. Every offset satisfies
#: ``2 * dy + dx < 0`` so latents on one anti-diagonal wave ``2 i + j = t`` can be decoded together.
CONTEXT_OFFSETS: tuple[tuple[int, int], ...] = (
    (0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-2, -1), (-2, 1),
)  # fmt: skip

# Caps: a hostile family block must not make the decoder allocate or compute beyond these.
MAX_LEVELS = 8
MAX_WIDTH = 32
MAX_LAYERS = 4
MAX_LATENT_BOUND = 63
MAX_INPUT_SHIFT = 8
MAX_SIDE = 8192
MAX_PIXELS = 1 << 22  # the float64 synthesis of 2^22 pixels at width 16 peaks near 0.5 GB


@dataclass(frozen=True)
class GridSpec:
    """Every hyper-parameter the grid decoder needs besides the payload.

    Args:
        levels: number of latent grids ``L``; grid ``l`` is ``ceil(H / 2^l) x ceil(W / 2^l)``.
        upsampling: how grids reach full resolution, 2x per stage: ``"bicubic"`` (a fixed 8-tap kernel) or
            ``"learned"`` (a symmetric 8-tap kernel per stage, fitted with the rest and coded in the payload as its
            difference from bicubic).
        synthesis_widths: output widths of the 1x1 layers of the synthesis network (ReLU after each).
        residual_layers: number of residual ``kernel x kernel`` convolutions at the last width.
        kernel: size of the residual and output convolutions (odd).
        arm_context: number of causal same-grid neighbours the entropy model reads (first of
            :data:`CONTEXT_OFFSETS`); the co-located latent of the coarser grid is always read too.
        arm_hidden: widths of the entropy model's hidden layers (ReLU).
        latent_bound: latents are integers in ``[-latent_bound, latent_bound]``.
        input_shift: the synthesis sees latents divided by ``2^input_shift``: a finer effective quantization step,
            which images coded at high PSNR need (unit steps at the synthesis input cap the fit near 38 dB).
        linear_skip: the synthesis output adds a linear map ``(L -> 1)`` of the upsampled latents, so the latents
            code the image directly, as a pyramid, besides through the ReLU layers (without it fits stalled near
            41 dB even with unquantized latents; docs/grid-codec.md).
        warm_start: the packaged decoder weights the fit starts from and the payload codes the networks' weights as
            differences from (:mod:`sinco.codec.grid.warm_start`); 0: none (random initialization, weights coded as
            they are).

    Raises:
        InputError: on construction, if a value is out of its range.
    """

    levels: int = 7
    upsampling: str = "learned"
    synthesis_widths: tuple[int, ...] = (16, 4)
    residual_layers: int = 2
    kernel: int = 3
    arm_context: int = 9
    arm_hidden: tuple[int, ...] = (12, 12)
    latent_bound: int = 31
    input_shift: int = 3
    linear_skip: bool = True
    warm_start: int = 0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise InputError(f"grid spec: {problem}")

    def _problem(self) -> str | None:
        checks = (
            (1 <= self.levels <= MAX_LEVELS, f"levels {self.levels}: expected 1..{MAX_LEVELS}"),
            (self.upsampling in UPSAMPLING_KINDS, f"upsampling {self.upsampling!r}: expected one of {UPSAMPLING_KINDS}"),
            (1 <= len(self.synthesis_widths) <= MAX_LAYERS, f"synthesis_widths {self.synthesis_widths}: 1..{MAX_LAYERS} layers"),
            (all(1 <= w <= MAX_WIDTH for w in self.synthesis_widths), f"synthesis_widths {self.synthesis_widths}: each 1..{MAX_WIDTH}"),
            (0 <= self.residual_layers <= MAX_LAYERS, f"residual_layers {self.residual_layers}: expected 0..{MAX_LAYERS}"),
            (self.kernel in (1, 3, 5), f"kernel {self.kernel}: expected 1, 3 or 5"),
            (1 <= self.arm_context <= len(CONTEXT_OFFSETS), f"arm_context {self.arm_context}: expected 1..{len(CONTEXT_OFFSETS)}"),
            (1 <= len(self.arm_hidden) <= 3, f"arm_hidden {self.arm_hidden}: 1..3 layers"),
            (all(1 <= w <= MAX_WIDTH for w in self.arm_hidden), f"arm_hidden {self.arm_hidden}: each 1..{MAX_WIDTH}"),
            (1 <= self.latent_bound <= MAX_LATENT_BOUND, f"latent_bound {self.latent_bound}: expected 1..{MAX_LATENT_BOUND}"),
            (0 <= self.input_shift <= MAX_INPUT_SHIFT, f"input_shift {self.input_shift}: expected 0..{MAX_INPUT_SHIFT}"),
            (isinstance(self.linear_skip, bool), f"linear_skip {self.linear_skip!r}: expected True or False"),
            (isinstance(self.warm_start, int) and 0 <= self.warm_start <= MAX_WARM_START,
             f"warm_start {self.warm_start!r}: expected 0..{MAX_WARM_START}"),
        )  # fmt: skip
        return next((message for ok, message in checks if not ok), None)

    # ----------------------------------------------------------------------------------------------- geometry
    def grid_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Shapes ``(h_l, w_l)`` of the latent grids, finest (``l = 0``) first."""
        return [(math.ceil(height / 2**level), math.ceil(width / 2**level)) for level in range(self.levels)]

    def validate_for(self, height: int, width: int, *, error: type[Exception] = InputError) -> None:
        """Check that this spec can code an image of ``height x width``.

        Raises:
            InputError (or ``error``): if the geometry is outside the decoder's caps.
        """
        if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
            raise error(f"image size {height}x{width}: the grid codec takes 1..{MAX_SIDE} per side, at most {MAX_PIXELS} pixels")

    def macs_per_pixel(self) -> int:
        """Multiply-adds per pixel of the synthesis network (upsampling and entropy model excluded)."""
        widths = (self.levels, *self.synthesis_widths)
        macs = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
        k2 = self.kernel**2
        return macs + self.residual_layers * k2 * widths[-1] ** 2 + k2 * widths[-1] + (self.levels if self.linear_skip else 0)

    def decoder_macs_per_pixel(self, height: int, width: int) -> dict[str, float]:
        """Multiply-adds per pixel of the whole decoder on a ``height x width`` image, by component.

        The entropy model runs once per latent (``sum_l h_l w_l`` of them, about 4/3 per pixel); each 2x upsampling
        stage costs 4 taps per output sample per axis (the 8-tap kernel is polyphase) per grid it carries.

        Returns:
            ``{"synthesis", "entropy_model", "upsampling", "total"}``.

        Example::

            GridSpec().decoder_macs_per_pixel(240, 240)["total"]  # about 1,000
        """
        shapes = self.grid_shapes(height, width)
        pixels = height * width
        arm_widths = (self.arm_context + 1, *self.arm_hidden, 2)
        per_latent = sum(a * b for a, b in zip(arm_widths[:-1], arm_widths[1:], strict=True))
        entropy = per_latent * sum(h * w for h, w in shapes) / pixels
        upsampling = 0.0
        for level in range(self.levels - 1):  # the stage into grid ``level`` carries every coarser grid
            (h, w), (_, w_coarse) = shapes[level], shapes[level + 1]
            upsampling += 4 * (self.levels - 1 - level) * (h * w_coarse + h * w)
        parts = {"synthesis": float(self.macs_per_pixel()), "entropy_model": entropy, "upsampling": upsampling / pixels}
        return {**parts, "total": sum(parts.values())}

    # ------------------------------------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """The family block: a version byte then one byte per value (every value is below 256).

        The version is the oldest that holds the spec: 3 with a warm start (then the skip byte, 0 or 1, and the warm
        start's id), else 2 with the skip (its byte, 1), else 1.
        """
        if self.warm_start:
            version, tail = 3, [int(self.linear_skip), self.warm_start]
        else:
            version, tail = (2, [1]) if self.linear_skip else (1, [])
        return bytes(
            [version, self.levels, UPSAMPLING_KINDS.index(self.upsampling), len(self.synthesis_widths), *self.synthesis_widths,
             self.residual_layers, self.kernel, self.arm_context, len(self.arm_hidden), *self.arm_hidden, self.latent_bound,
             self.input_shift, *tail]
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, block: bytes) -> GridSpec:
        """Parse a family block written by :meth:`to_bytes`.

        Raises:
            BitstreamError: if the block is truncated, too long, of another version, or holds a value
                out of range.
        """
        data = bytes(block)
        pos = 0

        def take(count: int) -> tuple[int, ...]:
            nonlocal pos
            if pos + count > len(data):
                raise BitstreamError(f"grid spec block: truncated at byte {pos} of {len(data)}")
            pos += count
            return tuple(data[pos - count : pos])

        (version,) = take(1)
        if version not in (1, 2, SPEC_VERSION):
            raise BitstreamError(f"grid spec block: version {version} is not supported (expected 1 to {SPEC_VERSION})")
        levels, kind, n_widths = take(3)
        if kind >= len(UPSAMPLING_KINDS) or not 1 <= n_widths <= MAX_LAYERS:
            raise BitstreamError(f"grid spec block: invalid upsampling kind {kind} or layer count {n_widths}")
        widths = take(n_widths)
        residual, kernel, context, n_hidden = take(4)
        if not 1 <= n_hidden <= 3:
            raise BitstreamError(f"grid spec block: invalid entropy-model layer count {n_hidden}")
        hidden = take(n_hidden)
        bound, shift = take(2)
        (skip,) = take(1) if version >= 2 else (0,)
        (warm_start,) = take(1) if version >= 3 else (0,)
        # One spelling per spec: the skip is always 1 in a version-2 block, a version-3 block always names a warm start.
        if skip > 1 or (version == 2 and skip != 1):
            raise BitstreamError(f"grid spec block: invalid linear-skip flag {skip} in a version-{version} block")
        if version == 3 and warm_start == 0:
            raise BitstreamError("grid spec block: a version-3 block without a warm start")
        if pos != len(data):
            raise BitstreamError(f"grid spec block: {len(data) - pos} unexpected trailing bytes")
        try:
            return cls(
                levels=levels, upsampling=UPSAMPLING_KINDS[kind], synthesis_widths=widths, residual_layers=residual,
                kernel=kernel, arm_context=context, arm_hidden=hidden, latent_bound=bound, input_shift=shift,
                linear_skip=bool(skip), warm_start=warm_start,
            )  # fmt: skip
        except InputError as exc:
            raise BitstreamError(f"grid spec block: {exc}".replace("grid spec: ", "")) from None
