"""Video codecs as classical anchors, through the static ffmpeg of the ``imageio-ffmpeg`` wheel: HEVC (x265), VVC
(VVenC) and AV1 (libaom), one slice as one intra picture, or the slices of a slab as the frames of a video.

Every codec feeds ffmpeg raw integer samples in the encoder's own pixel format (no conversion inside ffmpeg), keeps
the encoder's raw bitstream as the file (Annex B for HEVC and VVC, the low-overhead OBU stream for AV1: no
container), and decodes it with ffmpeg back to raw samples at the same depth. The grey image is the luma plane;
VVenC takes 4:2:0 only, so its two chroma planes are flat (mid-grey, 512), which costs a few bytes per picture.

Settings (the encoders' documented best for PSNR at a stated speed):

- ``hevc``: x265, 12-bit grey (``gray12le``), ``-preset slow``, ``tune=psnr``, all intra (``keyint=1``), the rate set
  by a constant QP; ``info=0`` drops x265's SEI message that copies its command line into every stream (about 2 KB
  of text, more than a whole slice at 0.3 bpp).
- ``vvc``: VVenC, 10-bit 4:2:0, ``-preset medium``, all intra (``IntraPeriod=1``), constant QP.
- ``avif10``, ``avif12``: AV1 intra through libaom at 10 and 12 bits of grey (monochrome), one still picture
  (``-still-picture 1``), ``-cpu-used 4``, constant quality (``-crf``), one thread (libaom's output depends on its
  thread count).
- ``hevc-ra``, ``vvc-ra``: the same encoders on a ``(D, H, W)`` slab, the slices as frames, random access with an
  intra period of :data:`INTRA_PERIOD` frames and closed groups (IDR pictures only: a slice needs no picture of an
  earlier group). x265 (``keyint=min-keyint=32``, no scene cuts, ``open-gop=0``, its default B-frames, one frame
  thread: its output depends on the frame-thread count) puts the intra picture first in each group (slices 0, 32,
  ...); VVenC (``-preset fast``, its random-access configuration, GOP 32, ``IntraPeriod=32``,
  ``DecodingRefreshType=idr``) ends its first group with it (slices 31, 63, ...; the slices before it are its leading
  pictures).

Images below an encoder's minimum size are padded by repeating the edge, and the padding is signalled in the
bitstream as a conformance window (VVenC), so the decoder returns the original size. A missing ffmpeg, an encoder
this ffmpeg lacks, or a failing ffmpeg raises :class:`~sinco.errors.EncoderError` naming the method.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from sinco.classical.base import Codec
from sinco.errors import EncoderError, InputError

#: Intra period of the random-access codecs, in frames (slices): at most this many slices share one intra frame.
INTRA_PERIOD = 32
#: Frame rate written into the raw input; it decides nothing but the encoders' rate-control bookkeeping.
_FRAME_RATE = "25"


def ffmpeg_exe() -> str:
    """The path of the ffmpeg binary of ``imageio-ffmpeg``.

    Raises:
        EncoderError: if ``imageio-ffmpeg`` or its binary is missing.
    """
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError) as exc:
        raise EncoderError(f"ffmpeg (from imageio-ffmpeg) is not available: {exc}") from None


@functools.cache
def ffmpeg_encoders(exe: str) -> frozenset[str]:
    """The video encoders the ffmpeg at ``exe`` was built with (``ffmpeg -encoders``), e.g. ``libx265``.

    Raises:
        EncoderError: if ``exe`` cannot be run.
    """
    try:
        listing = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EncoderError(f"ffmpeg at {exe!r} cannot be run: {exc}") from None
    return frozenset(m.group(1) for m in re.finditer(r"^\s*V\S*\s+(\S+)", listing, flags=re.MULTILINE))


class FFmpegCodec(Codec):
    """A video encoder of ffmpeg as a :class:`~sinco.classical.base.Codec` (see the module's description).

    Attributes (besides :class:`~sinco.classical.base.Codec`'s):
        encoder: the ffmpeg encoder (``libx265``, ``libvvenc``, ``libaom-av1``).
        pix_fmt: the raw sample format fed to and read back from ffmpeg.
        y4m_colorspace: the ``C`` tag of that format in a YUV4MPEG stream (the decoder's output is checked against it).
        muxer: the output format: the raw bitstream (``hevc``, ``vvc``, ``obu``).
        min_size: the smallest height and width the encoder takes (smaller images are padded where the bitstream can
            signal the crop, refused otherwise: see :meth:`check_size`).
        size_multiple: heights and widths are padded to a multiple of this.
        max_qp: the encoder's highest quantizer; quality is ``max_qp - QP`` (higher is better), ``quality_range``
            is ``(0, max_qp)``.
        settings: what the records' ``details`` say of the settings.
    """

    encoder: str
    pix_fmt: str
    y4m_colorspace: str
    muxer: str
    min_size: int = 1
    size_multiple: int = 1
    max_qp: int = 51
    settings: str = ""

    def qp(self, quality: float) -> int:
        """The encoder's quantizer (QP, or AV1's CRF) of a quality (lower QP, better picture).

        Raises:
            InputError: if ``quality`` is not an integer within :attr:`quality_range`.
        """
        if not (float(quality).is_integer() and 0 <= quality <= self.max_qp):
            raise InputError(f"{self.name} quality {quality!r}: must be an integer in 0..{self.max_qp}")
        return self.max_qp - int(quality)

    def check_size(self, height: int, width: int) -> None:
        """Refuse a picture size the encoder cannot code exactly (raises :class:`~sinco.errors.InputError`)."""

    def encoder_args(self, qp: int, *, pad: tuple[int, int]) -> list[str]:
        """ffmpeg's output options of one encoding at quantizer ``qp``; ``pad`` = rows and columns of padding added."""
        raise NotImplementedError

    @property
    def details(self) -> dict[str, object]:
        """What a record states of this codec: encoder, sample format, bit depth, PSNR ceiling, settings."""
        return {**super().details, "encoder": self.encoder, "pix_fmt": self.pix_fmt, "settings": self.settings,
                "bitstream": f"raw {self.muxer} stream"}  # fmt: skip

    # -- samples ------------------------------------------------------------------------------------------------------

    def _frames(self, image: np.ndarray) -> np.ndarray:
        """``(D, H, W)`` integer samples of an image ``(H, W)`` or volume ``(D, H, W)`` in ``[0, 1]``."""
        if image.ndim != self.ndim:
            raise InputError(f"{self.name} codes {self.ndim}-D arrays, got shape {tuple(image.shape)}")
        frames = self.to_samples(np.asarray(image, dtype=np.float64))
        return frames[None] if frames.ndim == 2 else frames

    def _padding(self, height: int, width: int) -> tuple[int, int]:
        def pad(n: int) -> int:
            size = max(n, self.min_size)
            return -(-size // self.size_multiple) * self.size_multiple - n

        return pad(height), pad(width)

    def _raw(self, frames: np.ndarray) -> bytes:
        """The frames as ffmpeg's raw ``pix_fmt`` bytes (little-endian 16-bit words; flat chroma after each 4:2:0 luma)."""
        words = frames.astype("<u2")
        if not self.pix_fmt.startswith("yuv420"):
            return words.tobytes()
        _, height, width = words.shape
        chroma = np.full(2 * (height // 2) * (width // 2), 1 << (self.bit_depth - 1), dtype="<u2")  # mid-grey: no colour
        return b"".join(frame.tobytes() + chroma.tobytes() for frame in words)

    # -- the codec ----------------------------------------------------------------------------------------------------

    def _run(self, args: list[str], what: str) -> None:
        try:
            exe = ffmpeg_exe()
            encoders = ffmpeg_encoders(exe)
        except EncoderError as exc:
            raise EncoderError(f"{self.name}: {exc}") from None
        if self.encoder not in encoders:
            raise EncoderError(f"{self.name}: this ffmpeg ({exe}) has no {self.encoder} encoder")
        try:
            done = subprocess.run([exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], capture_output=True, text=True)
        except OSError as exc:
            raise EncoderError(f"{self.name}: ffmpeg cannot be run ({exc})") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise EncoderError(f"{self.name}: ffmpeg failed to {what} (exit {done.returncode}): {last}")

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:
        """Compress an image ``(H, W)`` (or a volume ``(D, H, W)`` for ``ndim`` 3) in ``[0, 1]``.

        Args:
            image: the samples, in ``[0, 1]``.
            quality: an integer within :attr:`quality_range` (``max_qp - QP``).

        Returns:
            The raw bitstream.

        Raises:
            InputError: if ``quality`` or the array's shape does not fit.
            EncoderError: if ffmpeg or its encoder is missing, or the encoder fails.
        """
        qp = self.qp(quality)
        frames = self._frames(image)
        _, height, width = frames.shape
        self.check_size(height, width)
        pad = self._padding(height, width)
        if any(pad):
            frames = np.pad(frames, ((0, 0), (0, pad[0]), (0, pad[1])), mode="edge")
        with tempfile.TemporaryDirectory(prefix="sinco-ffmpeg-") as tmp:
            source, target = Path(tmp) / "in.raw", Path(tmp) / f"out.{self.muxer}"
            source.write_bytes(self._raw(frames))
            self._run(["-f", "rawvideo", "-pix_fmt", self.pix_fmt, "-s", f"{width + pad[1]}x{height + pad[0]}", "-r", _FRAME_RATE,
                       "-i", str(source), *self.encoder_args(qp, pad=pad), "-f", self.muxer, str(target)], "encode")  # fmt: skip
            return target.read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        """Decompress a raw bitstream of :meth:`encode`.

        Returns:
            float32 ``(H, W)`` in ``[0, 1]`` (``(D, H, W)`` for ``ndim`` 3).

        Raises:
            EncoderError: if ffmpeg cannot decode it, or decodes it to another sample format.
        """
        with tempfile.TemporaryDirectory(prefix="sinco-ffmpeg-") as tmp:
            source, target = Path(tmp) / f"in.{self.muxer}", Path(tmp) / "out.y4m"
            source.write_bytes(data)
            # No -pix_fmt: the decoder's own format, checked below, so that ffmpeg never rescales the samples.
            self._run(["-f", self.muxer, "-i", str(source), "-f", "yuv4mpegpipe", "-strict", "-1", str(target)], "decode")
            frames = self._read_y4m(target.read_bytes())
        # Not from_samples: it would take a volume's last axis for the channels of an RGB image.
        samples = (frames.astype(np.float64) / ((1 << self.bit_depth) - 1)).astype(np.float32)
        return samples[0] if self.ndim == 2 else samples

    def _read_y4m(self, stream: bytes) -> np.ndarray:
        """The luma planes ``(D, H, W)`` of a YUV4MPEG stream of 16-bit samples."""
        header, _, body = stream.partition(b"\n")
        fields = {f[:1]: f[1:] for f in header.decode("ascii", "replace").split()[1:]}
        if fields.get("C") != self.y4m_colorspace:
            raise EncoderError(f"{self.name}: ffmpeg decoded to {fields.get('C')!r} samples, expected {self.y4m_colorspace!r}")
        width, height = int(fields["W"]), int(fields["H"])
        luma = 2 * width * height
        plane = luma + (2 * 2 * ((width + 1) // 2) * ((height + 1) // 2) if self.pix_fmt.startswith("yuv420") else 0)
        marker = b"FRAME\n"
        frames, at = [], 0
        while at < len(body):
            if not body.startswith(marker, at):
                raise EncoderError(f"{self.name}: ffmpeg's decoded stream is malformed")
            start = at + len(marker)
            frames.append(np.frombuffer(body[start : start + luma], dtype="<u2").reshape(height, width))
            at = start + plane
        if not frames:
            raise EncoderError(f"{self.name}: ffmpeg decoded no picture")
        return np.stack(frames)


class HEVC(FFmpegCodec):
    """HEVC all-intra through x265 on 12-bit grey, ``-preset slow``, ``tune=psnr``; quality = 51 - QP."""

    name, label, extension, bit_depth, library = "hevc", "HEVC intra (x265, 12-bit)", ".hevc", 12, "ffmpeg/x265"
    encoder, pix_fmt, y4m_colorspace, muxer, max_qp, quality_range = "libx265", "gray12le", "mono12", "hevc", 51, (0, 51)
    min_size = 16
    settings = "x265 -preset slow, tune=psnr, all intra (keyint=1), constant QP, info=0"
    rate_model = (31, 0.94, 17)  # QP 20 gives about 0.94 bpp on a BraTS FLAIR slice; 17 QP halve the rate
    _params = "keyint=1"

    def check_size(self, height: int, width: int) -> None:  # noqa: D102
        if min(height, width) < self.min_size:  # x265 has no conformance-window option to crop a padded picture
            raise InputError(f"{self.name}: pictures of at least {self.min_size} x {self.min_size} pixels, got {height} x {width}")

    def encoder_args(self, qp: int, *, pad: tuple[int, int]) -> list[str]:  # noqa: D102
        return ["-c:v", "libx265", "-preset", "slow", "-x265-params", f"qp={qp}:{self._params}:tune=psnr:info=0:log-level=error"]


class VVC(FFmpegCodec):
    """VVC all-intra through VVenC on 10-bit 4:2:0 (grey in luma, flat chroma), ``-preset medium``; quality = 63 - QP."""

    name, label, extension, bit_depth, library = "vvc", "VVC intra (VVenC, 10-bit)", ".vvc", 10, "ffmpeg/VVenC"
    encoder, pix_fmt, y4m_colorspace, muxer, max_qp, quality_range = "libvvenc", "yuv420p10le", "420p10", "vvc", 63, (0, 63)
    min_size, size_multiple = 32, 8  # VVenC refuses pictures below 32 x 32 and odd chroma sizes
    settings = "VVenC -preset medium, all intra (IntraPeriod=1), constant QP, grey in luma, chroma flat at 512"
    rate_model = (43, 0.68, 11)  # QP 20: about 0.68 bpp on a BraTS FLAIR slice; 11 QP halve the rate
    preset = "medium"
    _params = "IntraPeriod=1"

    def encoder_args(self, qp: int, *, pad: tuple[int, int]) -> list[str]:  # noqa: D102
        params = self._params + (f":ConfWinBottom={pad[0]}:ConfWinRight={pad[1]}" if any(pad) else "")
        return ["-c:v", "libvvenc", "-preset", self.preset, "-qp", str(qp), "-vvenc-params", params]

    # A 4:2:0 conformance window crops whole chroma samples only, so an odd height or width cannot be signalled in the
    # bitstream. Such an image is padded by one edge row or column, and its file is the bitstream after one byte that
    # says which (bit 0: a row, bit 1: a column). An Annex B stream starts with a zero byte, so the two never mix, and
    # files of even-sized images stay the encoder's bitstream exactly.
    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        height, width = image.shape[-2:]
        crop = (height % 2) | (width % 2) << 1
        if not crop:
            return super().encode(image, quality=quality)
        padding = [(0, 0)] * (image.ndim - 2) + [(0, height % 2), (0, width % 2)]
        return bytes([crop]) + super().encode(np.pad(image, padding, mode="edge"), quality=quality)

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        if not data or data[0] == 0:
            return super().decode(data)
        if data[0] > 3:
            raise EncoderError(f"{self.name}: not a VVC bitstream (first byte {data[0]})")
        decoded = super().decode(data[1:])
        return decoded[..., : decoded.shape[-2] - (data[0] & 1), : decoded.shape[-1] - (data[0] >> 1)]


class _AV1(FFmpegCodec):
    encoder, muxer, max_qp, quality_range, library, extension = "libaom-av1", "obu", 63, (0, 63), "ffmpeg/libaom", ".obu"
    cpu_used = 4
    rate_model = (53, 0.56, 17)  # CRF 10: about 0.56 bpp on a BraTS FLAIR slice; 17 CRF steps halve the rate
    settings = f"libaom -cpu-used {cpu_used}, one still picture, monochrome, constant quality (crf), one thread"

    def encoder_args(self, qp: int, *, pad: tuple[int, int]) -> list[str]:  # noqa: D102
        # One thread: libaom's bitstream depends on its thread count.
        return ["-threads", "1", "-c:v", "libaom-av1", "-cpu-used", str(self.cpu_used), "-crf", str(qp), "-still-picture", "1"]


class AVIF10(_AV1):
    """AV1 intra (the coding of AVIF) through libaom on 10-bit grey; quality = 63 - CRF."""

    name, label, bit_depth, pix_fmt, y4m_colorspace = "avif10", "AVIF (AV1 intra, libaom, 10-bit)", 10, "gray10le", "mono10"


class AVIF12(_AV1):
    """AV1 intra (the coding of AVIF) through libaom on 12-bit grey; quality = 63 - CRF."""

    name, label, bit_depth, pix_fmt, y4m_colorspace = "avif12", "AVIF (AV1 intra, libaom, 12-bit)", 12, "gray12le", "mono12"


class _RandomAccess:
    """What the random-access codecs add to their intra ones: a slab's slices as frames, the intra period recorded."""

    ndim = 3
    intra_period = INTRA_PERIOD

    @property
    def details(self) -> dict[str, object]:  # noqa: D102
        return {**super().details, "intra_period": self.intra_period}  # type: ignore[misc]


class HEVCRandomAccess(_RandomAccess, HEVC):
    """HEVC random access through x265 on a slab's slices as 12-bit grey frames; quality = 51 - QP."""

    name, label = "hevc-ra", f"HEVC random access (x265, 12-bit, intra period {INTRA_PERIOD})"
    settings = (f"x265 -preset slow, tune=psnr, random access: intra period {INTRA_PERIOD} (keyint=min-keyint, no scene cuts), "
                "closed GOPs, default B-frames, one frame thread, constant QP, info=0")  # fmt: skip
    _params = f"keyint={INTRA_PERIOD}:min-keyint={INTRA_PERIOD}:scenecut=0:open-gop=0:frame-threads=1"
    rate_model = (31, 0.29, 10)  # QP 20: about 0.29 bits per voxel on a 32-slice BraTS FLAIR slab


class VVCRandomAccess(_RandomAccess, VVC):
    """VVC random access through VVenC on a slab's slices as 10-bit frames; quality = 63 - QP."""

    name, label = "vvc-ra", f"VVC random access (VVenC, 10-bit, intra period {INTRA_PERIOD})"
    settings = (f"VVenC -preset fast, random access (GOP 32): intra period {INTRA_PERIOD}, closed GOPs (IDR), constant QP, "
                "grey in luma, chroma flat at 512")  # fmt: skip
    # fast, not medium: on a 32-slice BraTS slab at 0.3-1.2 bits per voxel, BD-rate -1.7 % against medium for a third of
    # its time (medium takes about 1.3 s of CPU a 240 x 240 frame, too slow for a 64-slice benchmark at four rates).
    preset = "fast"
    _params = f"IntraPeriod={INTRA_PERIOD}:DecodingRefreshType=idr"
    rate_model = (42, 0.29, 10)  # QP 21: about 0.29 bits per voxel on a 32-slice BraTS FLAIR slab
