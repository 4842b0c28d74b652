"""Fitting the context coder's networks (:mod:`sinco.codec.grid.context`) to one image: float training in torch on
every pixel at once (the true levels are every context), then a step exponent per tensor chosen for the fewest bits
of image plus networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sinco.codec.grid.context import (
    ERROR_NEIGHBOURS,
    NEIGHBOURS,
    ContextModel,
    check_levels,
    encode,
    network_shapes,
    quantize_networks,
    scale_shift,
)
from sinco.codec.grid.entropy import LOG2_SCALE_MIN
from sinco.codec.grid.numerics import ACT_LIMIT, FRAC_BITS
from sinco.codec.grid.quantizer import descend_exponents, golomb_bits

_LIMIT = ACT_LIMIT / (1 << FRAC_BITS)


@dataclass(frozen=True)
class ContextFitConfig:
    """How the context model is fitted.

    Args:
        hidden: hidden width of both networks (each has two hidden layers).
        steps: Adam steps on the whole image.
        lr: peak learning rate (cosine decay to zero). On a BraTS slice (float code lengths): 5e-3, 1e-2, 2e-2,
            4e-2, 8e-2 gave 1.859, 1.692, 1.421, 1.442, 1.601 bpp in 200 steps; 2e-2 gave 1.328 in 400 and 1.286 in
            800 (1e-2: 1.322). 600 steps fit the 60 s a slice on two cores.
        seed: seed of the initialization.
    """

    hidden: int = 16
    steps: int = 600
    lr: float = 2e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if not (1 <= self.hidden <= 64 and self.steps >= 0 and math.isfinite(self.lr) and self.lr > 0 and self.seed >= 0):
            raise ValueError(f"context fit: hidden {self.hidden} (1..64), steps {self.steps} (>= 0), lr {self.lr} (> 0), seed {self.seed} (>= 0)")


def _shifted(padded: torch.Tensor, offsets: Sequence[tuple[int, int]], *, pad: int, height: int, width: int) -> torch.Tensor:
    return torch.stack([padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width] for dy, dx in offsets])


class _FloatModel:
    """The two networks in float, on every pixel of one image at once (teacher forcing: the true levels)."""

    def __init__(self, levels: np.ndarray, planes: Sequence[np.ndarray], *, top: int, near: int, hidden: int, seed: int,
                 tensors: list[torch.Tensor] | None = None, context: np.ndarray | None = None) -> None:  # fmt: skip
        self.top, self.near, self.shift = top, near, scale_shift(top)
        self.unit = float(1 << self.shift)
        height, width = levels.shape
        # The contexts: the levels themselves, or (near-lossless) a reconstruction the decoder will have.
        x = torch.from_numpy((levels if context is None else context).astype(np.float64))
        self.target = torch.from_numpy(levels.astype(np.float32)).reshape(-1)
        padded = F.pad(x[None, None], (2, 2, 2, 0))[0, 0]
        neighbours = _shifted(padded, NEIGHBOURS, pad=2, height=height, width=width)
        w, n, nw = neighbours[0], neighbours[1], neighbours[2]
        high, low = torch.maximum(w, n), torch.minimum(w, n)
        self.ref = torch.where(nw >= high, low, torch.where(nw <= low, high, w + n - nw))
        columns = [(neighbours - self.ref) / self.unit, (torch.floor(self.ref * (1 << FRAC_BITS) / top) / (1 << FRAC_BITS) - 0.5)[None]]
        for plane in planes:
            p = F.pad(torch.from_numpy(np.asarray(plane, np.float64))[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
            columns.append((_shifted(p, [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], pad=1, height=height, width=width) - self.ref) / self.unit)
        self.inputs = torch.cat(columns).clamp(-_LIMIT, _LIMIT).reshape(-1, height * width).T.float()
        self.x, self.shape = x.float(), (height, width)
        self.ref = self.ref.float()
        if tensors is not None:  # another image's networks: one model for the slices of a volume
            self.tensors = tensors
            return
        generator = torch.Generator().manual_seed(seed)
        self.tensors = []
        for index, shape in enumerate(network_shapes(hidden=hidden, planes=len(planes))):
            fan_in = shape[1] if len(shape) == 2 else network_shapes(hidden=hidden, planes=len(planes))[index - 1][1]
            bound = 1.0 / math.sqrt(fan_in)
            tensor = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            if index in (4, 5, 10, 11):  # output layers start at zero: the median predictor, scale 2^(s - 4)
                tensor = torch.zeros(shape)
            self.tensors.append(tensor.requires_grad_(True))

    @staticmethod
    def _mlp(x: torch.Tensor, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        for k in range(0, len(tensors) - 2, 2):
            x = torch.relu(torch.addmm(tensors[k + 1], x, tensors[k].T))
        return torch.addmm(tensors[-1], x, tensors[-2].T)

    def bits(self, tensors: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Code length (bits) of every pixel ``(H W,)`` under the networks ``tensors`` (default: the trained ones)."""
        tensors = self.tensors if tensors is None else tensors
        height, width = self.shape
        first_mean = self.ref.reshape(-1) + self._mlp(self.inputs, tensors[:6])[:, 0] * self.unit
        errors = ((self.x.reshape(-1) - first_mean) / self.unit).clamp(-_LIMIT, _LIMIT).reshape(height, width)
        padded = F.pad(errors[None, None], (2, 2, 2, 0))[0, 0]
        around = _shifted(padded, NEIGHBOURS[:ERROR_NEIGHBOURS], pad=2, height=height, width=width).reshape(ERROR_NEIGHBOURS, -1).T
        out = self._mlp(torch.cat([self.inputs, around, around.abs()], dim=1), tensors[6:])
        # The coder's mean is an integer level in 0..top and a fraction within half a level of it.
        mean = (first_mean + out[:, 0] * self.unit).clamp(-0.5, self.top + 0.5)
        step = 2 * self.near + 1
        log2_scale = (self.shift - 4 + out[:, 1]).clamp(LOG2_SCALE_MIN + math.log2(step), math.log2(self.top + 1))
        scale = torch.exp2(log2_scale)
        target = self.target

        def cdf(z: torch.Tensor) -> torch.Tensor:
            return 0.5 + 0.5 * torch.sign(z) * -torch.expm1(-z.abs() / scale)

        upper = torch.where(target + self.near >= self.top, torch.ones_like(target), cdf(target + step / 2 - mean))
        lower = torch.where(target - self.near <= 0, torch.zeros_like(target), cdf(target - step / 2 - mean))
        return -torch.log2((upper - lower).clamp_min(2.0**-24))


def fit_context(levels: np.ndarray, *, top: int, near: int = 0, planes: Sequence[np.ndarray] = (),
                config: ContextFitConfig = ContextFitConfig()) -> ContextModel:  # fmt: skip
    """Fit the context coder's networks to ``levels`` and quantize them.

    Args:
        levels: ``(H, W)`` integers in ``0..top``.
        top: the largest level.
        near: the largest error allowed (``0``: lossless).
        planes: side planes ``(H, W)`` the decoder will have (a prediction, a previous slice).
        config: the fitting settings.

    Returns:
        The :class:`~sinco.codec.grid.context.ContextModel` to :func:`~sinco.codec.grid.context.encode` with.

    Raises:
        ValueError: on levels outside ``0..top`` or a bound out of range.
    """
    check_levels(levels, top=top, near=near)
    threads = torch.get_num_threads()
    # One thread: these small products lose far more to thread hand-offs than they gain (10x slower with two threads
    # on a loaded 2-core machine). The fit's rounding is the encoder's own; the decoder is integer arithmetic.
    torch.set_num_threads(1)
    try:
        return _fit(levels, top=top, near=near, planes=planes, config=config)
    finally:
        torch.set_num_threads(threads)


def _fit(levels: np.ndarray, *, top: int, near: int, planes: Sequence[np.ndarray], config: ContextFitConfig) -> ContextModel:
    """Lossless: every step on the levels. Near-lossless: the first half on the levels, the second on the contexts
    the decoder will see (the reconstruction coded with the first half's networks): trained on exact neighbours
    alone, the networks trust them too much (an MNI152 slice: 1.35 bpp at N = 2, 2.26 at N = 4, above N = 1's 1.10)."""
    model = _FloatModel(levels, planes, top=top, near=near, hidden=config.hidden, seed=config.seed)
    optimizer = torch.optim.Adam(model.tensors, lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.steps, 1))
    first = config.steps // 2 if near else config.steps
    _train(model, optimizer, schedule, first)
    result = _quantized(model, top=top, near=near, hidden=config.hidden, planes=len(planes))
    if near and config.steps > first:
        _, reconstruction = encode(levels, result, planes=planes)
        model = _FloatModel(levels, planes, top=top, near=near, hidden=config.hidden, seed=config.seed, tensors=model.tensors,
                            context=reconstruction)  # fmt: skip
        _train(model, optimizer, schedule, config.steps - first)
        result = _quantized(model, top=top, near=near, hidden=config.hidden, planes=len(planes))
    return result


def _train(model: _FloatModel, optimizer: torch.optim.Optimizer, schedule: Any, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        model.bits().mean().backward()
        optimizer.step()
        schedule.step()


def _quantized(model: _FloatModel, *, top: int, near: int, hidden: int, planes: int) -> ContextModel:
    floats = [t.detach().double().numpy() for t in model.tensors]
    exponents = _choose_exponents(model, floats)
    return ContextModel(top=top, near=near, shift=model.shift, hidden=hidden, planes=planes, networks=quantize_networks(floats, exponents))


def fit_shared(slices: Sequence[np.ndarray], *, top: int, near: int = 0, previous: bool = False,
               config: ContextFitConfig = ContextFitConfig()) -> ContextModel:  # fmt: skip
    """One context model for the slices of a volume (sent once), each step on one slice in a seeded order.

    Near-lossless, as :func:`fit_context`: the first half of the steps on the levels, the second on the contexts the
    decoder will see (every slice coded in order with the first half's networks, each reading the previous slice's
    reconstruction). Trained on exact neighbours alone, a BraTS slab at ``K = 4`` cost more than at ``K = 2``.

    Args:
        slices: ``S`` levels ``(H, W)`` in ``0..top``, in coding order.
        top: the largest level of the volume.
        near: the largest error allowed.
        previous: each slice reads the one before it as a side plane (the first reads zeros).
        config: ``config.steps`` steps per four slices (at least ``config.steps``).

    Returns:
        The :class:`~sinco.codec.grid.context.ContextModel`.

    Raises:
        ValueError: on levels outside ``0..top`` or a bound out of range.
    """
    for levels in slices:
        check_levels(levels, top=top, near=near)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        planes = [[np.zeros_like(slices[0]) if k == 0 else slices[k - 1]] if previous else [] for k in range(len(slices))]
        models = _slice_models(slices, planes, top=top, near=near, config=config)
        tensors = models[0].tensors
        steps = config.steps * max(1, -(-len(slices) // 4))
        order = np.random.default_rng(config.seed).integers(0, len(models), steps)
        optimizer = torch.optim.Adam(tensors, lr=config.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
        first = steps // 2 if near else steps
        _train_shared(models, order[:first], optimizer, schedule)
        result = _quantized_shared(models, top=top, near=near, hidden=config.hidden, previous=previous)
        if near and steps > first:
            result = _fit_on_decoded_contexts(tensors, slices, result, order[first:], optimizer=optimizer, schedule=schedule,
                                              previous=previous, config=config)  # fmt: skip
        return result
    finally:
        torch.set_num_threads(threads)


#: Rounds of the near-lossless volume fit on decoded contexts (each re-codes the slices with the latest networks).
NEAR_LOSSLESS_ROUNDS = 4


def _fit_on_decoded_contexts(tensors: list[torch.Tensor], slices: Sequence[np.ndarray], result: ContextModel, order: np.ndarray, *,
                             optimizer: torch.optim.Optimizer, schedule: Any, previous: bool, config: ContextFitConfig) -> ContextModel:  # fmt: skip
    """The second half of a near-lossless volume fit: rounds of training on the contexts the latest networks decode
    to, keeping the networks whose coded slices are smallest.

    A reconstruction within K is mostly the networks' own rounded prediction, so new networks move the contexts they
    were trained on: on an LGG volume at K = 4 (150 steps) the coded slices swung from round to round (0.78, 0.98,
    0.57, 0.79, 0.54 bits per voxel) while the float model's stayed near 0.34. The rounds re-code every slice anyway
    (their contexts), so the smallest costs one more pass to find.
    """
    best, best_bits = result, math.inf
    bounds = np.linspace(0, len(order), NEAR_LOSSLESS_ROUNDS + 1).astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        contexts, planes, bits = _decoded_contexts(slices, result, previous=previous)
        best, best_bits = (result, bits) if bits < best_bits else (best, best_bits)
        models = _slice_models(slices, planes, top=result.top, near=result.near, config=config, tensors=tensors, contexts=contexts)
        _train_shared(models, order[start:stop], optimizer, schedule)
        result = _quantized_shared(models, top=result.top, near=result.near, hidden=config.hidden, previous=previous)
    bits = _decoded_contexts(slices, result, previous=previous)[2]
    return result if bits < best_bits else best


def _slice_models(slices: Sequence[np.ndarray], planes: Sequence[Sequence[np.ndarray]], *, top: int, near: int, config: ContextFitConfig,
                  tensors: list[torch.Tensor] | None = None, contexts: Sequence[np.ndarray] | None = None) -> list[_FloatModel]:  # fmt: skip
    """A float model per slice, all on one set of networks (``tensors``, or the first slice's new ones)."""
    models: list[_FloatModel] = []
    for k, (levels, side) in enumerate(zip(slices, planes, strict=True)):
        shared = tensors if tensors is not None else (models[0].tensors if models else None)
        models.append(_FloatModel(levels, side, top=top, near=near, hidden=config.hidden, seed=config.seed, tensors=shared,
                                  context=None if contexts is None else contexts[k]))  # fmt: skip
    return models


def _train_shared(models: Sequence[_FloatModel], order: np.ndarray, optimizer: torch.optim.Optimizer, schedule: Any) -> None:
    for index in order:
        optimizer.zero_grad()
        models[index].bits().mean().backward()
        optimizer.step()
        schedule.step()


def _quantized_shared(models: Sequence[_FloatModel], *, top: int, near: int, hidden: int, previous: bool) -> ContextModel:
    floats = [t.detach().double().numpy() for t in models[0].tensors]
    # The exponents on three slices (first, middle, last): the choice is a sum over pixels, and three suffice.
    picks = sorted({0, len(models) // 2, len(models) - 1})
    exponents = _choose_exponents([models[k] for k in picks], floats)
    return ContextModel(top=top, near=near, shift=models[0].shift, hidden=hidden, planes=int(previous),
                        networks=quantize_networks(floats, exponents))  # fmt: skip


def _decoded_contexts(slices: Sequence[np.ndarray], model: ContextModel, *,
                      previous: bool) -> tuple[list[np.ndarray], list[list[np.ndarray]], int]:  # fmt: skip
    """Every slice's reconstruction under ``model``, coded in order, the side planes each then reads, and the bits of
    the slices' sections (networks left out)."""
    contexts: list[np.ndarray] = []
    planes: list[list[np.ndarray]] = []
    bits, decoded_previous = 0, np.zeros_like(slices[0])
    for levels in slices:
        side = [decoded_previous] if previous else []
        section, decoded_previous = encode(levels, model, planes=side, with_networks=False)
        bits += 8 * len(section)
        contexts.append(decoded_previous)
        planes.append(side)
    return contexts, planes, bits


def _choose_exponents(model: _FloatModel | Sequence[_FloatModel], floats: list[np.ndarray]) -> list[int]:
    """A step exponent per tensor by greedy descent on image bits (the float model with those weights) plus the
    tensors' exp-Golomb bits. Layers feeding the fixed point keep at least 4 bits of fraction."""
    exps = [8] * len(floats)
    models = [model] if isinstance(model, _FloatModel) else list(model)

    def cost(index: int, exponent: int) -> float:
        trial = [*exps[:index], exponent, *exps[index + 1 :]]
        networks = quantize_networks(floats, trial)
        tensors = [torch.from_numpy(t * 2.0**-e).float() for t, e in zip(networks.tensors, networks.exponents, strict=True)]
        with torch.no_grad():
            image = sum(float(m.bits(tensors).sum()) for m in models)
        return image + sum(7 + min(golomb_bits(t, k) for k in range(8)) for t in networks.tensors)

    return descend_exponents(exps, cost, lowest=2)
