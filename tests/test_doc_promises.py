"""Promises of README.md, SECURITY.md and docs/ that no other test held: each test is named for the promise it checks.

SECURITY.md's table "Promises and the tests named for them" lists these beside the tests of the other files. Every test
here is small (tiny synthetic inputs, a few fitting steps at most) and asserts the behaviour the documents describe.
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import make_phantom

from sinco.codec.family import BenchmarkMethod, CodecFamily, FamilyOption, FitOutcome, FitReport
from sinco.codec.files import decode_file, parse_file, write_file
from sinco.codec.inr.spec import INRSpec
from sinco.codec.volume import SliceRecord, VolumeHeader, decode_volume, encode_volume
from sinco.errors import BitstreamError, InputError

DATA = Path(__file__).parent / "data"
TINY = INRSpec(arch="siren", width=4, depth=2)
TINY_BLOCK_BYTES = 11  # the SIREN block


def _tiny_sinco(*, height: int = 12, width: int = 10, vmin: float = 0.0, vmax: float = 1.0, seed: int = 0) -> bytes:
    weights = np.random.default_rng(seed).normal(0, 0.3, TINY.n_params()).astype("<f2")
    return write_file(family="siren", spec=TINY, payload=weights.tobytes(), height=height, width=width, vmin=vmin, vmax=vmax)


def _with_crc(body: bytes | bytearray) -> bytes:
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def _levels(height: int = 14, width: int = 15, seed: int = 0) -> np.ndarray:
    """8-bit grey levels with an edge and noise, ``(H, W)`` uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    base = 40 + 3 * (x + y) + 60 * (x > width // 2)
    return np.clip(base + rng.integers(-4, 5, base.shape), 0, 255).astype(np.uint8)


# ============================================================================ command line: exit status, options
def test_an_operating_system_failure_exits_1_with_one_line_and_no_traceback(tmp_path, run):
    """docs/usage.md "Exit status": 1 is an operating-system failure, reported in one line, nothing left behind."""
    good = tmp_path / "x.sinco"
    good.write_bytes(_tiny_sinco())
    out = tmp_path / ("a" * 300 + ".npy")  # longer than any file system's name limit: the write fails in the OS
    code, _, err = run(["decompress", good, "-o", out])
    assert code == 1 and err.startswith("sinco: error: File name too long") and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sinco"]


@pytest.mark.parametrize("mode", [[], ["--lossless"], ["--arch", "siren"]])
def test_an_empty_image_is_refused_in_one_line(tmp_path, run, mode):
    """docs/usage.md "Exit status and failures": bad input is one line and exit 2, never a traceback (an empty array
    once raised numpy's zero-size error)."""
    np.save(tmp_path / "empty.npy", np.zeros((0, 0)))
    code, _, err = run(["compress", tmp_path / "empty.npy", "-o", tmp_path / "e.sinco", *mode])
    assert code == 2 and err.startswith("sinco: error: INPUT") and err.count("\n") == 1 and not (tmp_path / "e.sinco").exists()


@pytest.mark.parametrize("args", [
    ["compress", "IMG", "-o", "OUT", "--seed", "-1"],
    ["compress", "IMG", "-o", "OUT", "--seed", "-1", "--lossless"],  # once a ValueError traceback from the context fit
    ["compress", "IMG", "-o", "OUT", "--seed", "-1", "--arch", "siren"],
    ["benchmark", "--data", "IMG", "--out", "OUT", "--seed", "-1"],
    ["train-seg", "--data", "IMG", "-o", "OUT", "--seed", "-1"],
])  # fmt: skip
def test_a_negative_seed_is_a_usage_error_of_every_command(tmp_path, run, args):
    """docs/usage.md `--seed S` (0 and up, as the API requires): a negative seed is refused as a usage error, the error
    and where to read more, exit 2, whatever the family or mode."""
    np.save(tmp_path / "img.npy", _levels())
    code, _, err = run([{"IMG": tmp_path / "img.npy", "OUT": tmp_path / "out.sinco"}.get(a, a) for a in args])
    lines = err.splitlines()
    assert code == 2 and lines[0] == "sinco: error: argument --seed: -1: expected an integer in 0..2^63-1" and len(lines) == 2
    assert not (tmp_path / "out.sinco").exists()


@pytest.mark.parametrize("flag", ["--images", "--steps"])
def test_the_demo_refuses_a_count_that_is_not_positive_before_writing_anything(tmp_path, run, flag):
    """docs/usage.md "The demo" and "Exit status": `--images 0` or `--steps 0` is bad input (it once ran the default
    demo), refused in one line before the dataset is written."""
    code, _, err = run(["demo", flag, 0, "--out", tmp_path / "demo"])
    assert code == 2 and err == f"sinco: error: {flag} 0: must be a positive integer\n" and not (tmp_path / "demo").exists()


def test_decompress_to_tif_holds_the_float32_restored_intensities(tmp_path, run):
    """docs/usage.md "What is written": `.npy`, `.nii.gz` and `.tif` hold the float32 restored intensities."""
    import tifffile

    good = tmp_path / "x.sinco"
    good.write_bytes(_tiny_sinco(vmin=-3.5, vmax=250.25))
    assert run(["decompress", good, "-o", tmp_path / "x.tif"])[0] == 0
    assert run(["decompress", good, "-o", tmp_path / "x.npy"])[0] == 0
    tif, npy = tifffile.imread(tmp_path / "x.tif"), np.load(tmp_path / "x.npy")
    assert tif.dtype == np.float32 and np.array_equal(tif, npy)
    _, scaled = decode_file(good.read_bytes())
    assert np.allclose(npy, -3.5 + scaled * 253.75, rtol=0, atol=1e-4) and npy.std() > 0


def test_the_quantise_tail_spelling_is_accepted_as_quantize_tail(nifti_volume, tmp_path, run):
    """docs/usage.md: "`--quantise-tail` is accepted too"; it sets the same setting as `--quantize-tail`."""
    outs = {}
    for flag in ("--quantize-tail", "--quantise-tail"):
        out = tmp_path / f"{flag[2:]}.sinco"
        code, _, err = run(["compress", nifti_volume, "--slice", 2, "-o", out, "--arch", "siren", "--depth", 2, "--bpp", 8, "--steps", 6,
                            flag, 3, "--compile", "off", "--quiet"])  # fmt: skip
        assert code == 0, err
        outs[flag] = out
        assert json.loads(out.with_name(out.name + ".json").read_text())["fit"]["quantize_tail"] == 3
    assert outs["--quantize-tail"].read_bytes() == outs["--quantise-tail"].read_bytes()


def test_every_family_option_is_tagged_in_help_with_its_families_and_refused_for_the_others_naming_them(monkeypatch):
    """docs/usage.md "`compress` options" and docs/format.md "Codec families": an option marked with families in brackets
    in `sinco compress --help` is read by those only; given to another family it is refused with one line that names
    the families that read it. `--arch` offers every registered family."""
    from sinco.cli import build_parser, options
    from sinco.codec.registry import all_families

    families = all_families()
    readers: dict[str, list[str]] = {}
    for family in families:
        for option in (*family.options, *family.fit_options):
            readers.setdefault(option.flag, []).append(family.name)
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside an option's help (argparse wraps at hyphens)
    parser = build_parser()
    compress = parser._subparsers._group_actions[0].choices["compress"]
    lines: list[str] = []  # one entry per option: its flags and its help, as printed
    for line in compress.format_help().splitlines():
        if line.startswith("  -"):
            lines.append(line.strip())
        elif line.startswith("      ") and lines:
            lines[-1] += " " + line.strip()
    arch = next(line for line in lines if line.startswith("--arch "))
    assert set(arch.split("{")[1].split("}")[0].split(",")) == {f.name for f in families}
    for flag, names in readers.items():
        line = next(line for line in lines if line.startswith(flag + " ") or line.startswith(flag + ","))
        assert line.endswith(f"[{', '.join(names)}]"), (flag, line)
        for family in families:
            if family.name in names:
                continue
            args = parser.parse_args(["compress", "x.npy", "-o", "y.sinco", "--arch", family.name, flag, "2"])
            args.bpp = 1.2
            with pytest.raises(InputError) as info:
                options.codec_and_fit_config(args)
            assert str(info.value) == f"{flag}: does not apply to --arch {family.name} (an option of --arch {', '.join(names)})"


def _flags(text: str) -> set[str]:
    import re

    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def _section(doc: str, start: str, end: str) -> str:
    text = (ROOT / doc).read_text()
    return text[text.index(start) : text.index(end)]


def test_every_option_the_docs_name_is_an_option_of_its_command():
    """docs/usage.md "Every option below is in `sinco compress --help`", and likewise every flag the other pages give a
    `sinco` command: each is an option of that command (the pages of benchmark scripts, whose flags are the scripts',
    are left out)."""
    from sinco.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    options = {name: set(parser._option_string_actions) for name, parser in commands.items()}
    checks = [
        (_section("docs/usage.md", "## `compress` options", "## Whole volumes"), {"compress"}),
        (_section("docs/usage.md", "## Whole volumes", "## What is written"), {"compress", "decompress"}),
        (_section("docs/usage.md", "## The demo", "## Benchmark: the paper's comparison"), {"demo"}),
        (_section("docs/usage.md", "## Benchmark: the paper's comparison", "## Rates"), {"benchmark", "report"}),
        (_section("docs/lossless.md", "## Benchmark", "## Design"), {"benchmark"}),
        # compress-batch takes every fitting option of compress; the page names three that it does not take, as such.
        (_section("docs/cluster.md", "## Usage", "## What is written").replace("--batch-slices 1", "")
         .replace("(`--lossless` and `--max-error` are\noptions of `compress` only.)", ""), {"compress-batch"}),
    ]  # fmt: skip
    for doc in ("README.md", "docs/your-own-data.md", "docs/segmentation.md", "docs/grid-codec.md", "docs/inr-codec.md",
                "docs/benchmark.md", "docs/format.md"):  # fmt: skip
        # A line that runs a benchmark script gives that script's flags.
        text = "\n".join(line for line in (ROOT / doc).read_text().splitlines() if "benchmarks/" not in line)
        checks.append((text, set(commands)))
    for text, names in checks:
        unknown = {flag for flag in _flags(text) if not any(flag in options[name] for name in names)}
        assert not unknown, (sorted(names), sorted(unknown))


def test_the_presets_and_option_defaults_are_the_documented_ones():
    """docs/usage.md "`compress` options" and docs/grid-codec.md: presets' steps and candidates, the INR presets, and the
    defaults of --arch, --bpp, --seed, --lam, --axis, --channel, --device, --lbfgs-after."""
    from sinco.cli import build_parser, options
    from sinco.cli.compress import DEFAULT_BPP
    from sinco.codec.registry import get_family

    grid = get_family("grid")
    documented = {"fast": (900, 1), "quality": (6000, 4), "long": (12000, 4)}
    assert grid.default_preset == "fast"
    for preset, (steps, candidates) in documented.items():
        config = grid.fit_config(preset, {}).grid
        assert (config.steps, config.candidates) == (steps, candidates), preset
    for arch, adam_steps, tail in (("siren", 2000, 200), ("pe-mlp", 1000, 0)):
        family = get_family(arch)
        paper, fast = family.fit_config("paper", {}), family.fit_config("fast", {})
        assert family.default_preset == "paper"
        assert (paper.steps, paper.lr, paper.schedule, paper.optimizer) == (50_000, 1e-3, "constant", "adam")
        assert (fast.steps, fast.lr, fast.optimizer, fast.adam_steps, fast.quantize_tail) == (
            4000,
            1e-3,
            "adam+lbfgs",
            adam_steps,
            tail,
        )
    args = build_parser().parse_args(["compress", "x.npy", "-o", "y.sinco"])
    assert (args.arch, args.seed, float(args.lam), args.axis, args.channel, args.device) == ("grid", 0, 1.0, 2, 0, "auto")
    assert DEFAULT_BPP == 1.2
    args = build_parser().parse_args(["compress", "x.npy", "-o", "y.sinco", "--arch", "siren", "--optimizer", "adam+lbfgs"])
    args.bpp = DEFAULT_BPP
    assert options.codec_and_fit_config(args)[1].lbfgs_after == 1000


def test_at_1_2_bpp_on_240_by_240_the_default_networks_are_siren_24x8_and_pe_mlp_20x6_in_51_and_46_bytes_of_container():
    """docs/inr-codec.md "Rate" and docs/usage.md "Rates": the widest network of the default depth within the rate
    (SIREN 24 x 8, 4,297 parameters, w0 30; PE-MLP 20 x 6, 4,061, Lf 12, the encoding again at depth // 2), and the file
    is `16 x params + 408` bits (SIREN) or `+ 368` (PE-MLP)."""
    from sinco.codec.registry import get_family

    siren = get_family("siren").make_spec(bpp=1.2, height=240, width=240, options={})
    pe = get_family("pe-mlp").make_spec(bpp=1.2, height=240, width=240, options={})
    assert (siren.width, siren.depth, siren.n_params(), siren.w0) == (24, 8, 4297, 30.0)
    assert (pe.width, pe.depth, pe.n_params(), pe.n_freqs, pe.skips) == (20, 6, 4061, 12, (3,))
    for spec, container_bits in ((siren, 408), (pe, 368)):
        payload = np.zeros(spec.n_params(), "<f2").tobytes()
        data = write_file(family=spec.arch, spec=spec, payload=payload, height=240, width=240, vmin=0.0, vmax=1.0)
        assert 8 * len(data) == 16 * spec.n_params() + container_bits, spec.arch


def test_progress_bars_write_at_most_a_line_every_10_seconds_when_stderr_is_not_a_terminal(monkeypatch):
    """docs/usage.md `--quiet`: "when stderr is a file or a pipe, progress bars write at most a line every 10 seconds";
    on a terminal the same updates redraw the bar several times."""
    from sinco.utils.progress import progress_bar

    class Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    written = {}
    for tty in (False, True):
        stream = Stream(tty)
        monkeypatch.setattr(sys, "stderr", stream)
        bar = progress_bar(total=14, desc="fit", unit="step")
        for _ in range(14):  # 1.4 s of updates
            time.sleep(0.1)
            bar.update(1)
        bar.close()
        written[tty] = stream.getvalue().count("\r") + stream.getvalue().count("\n")
    monkeypatch.undo()
    assert written[False] <= 3  # the bar's first line, its last, and its closing
    assert written[True] > written[False]


def test_the_api_file_is_at_most_its_bpp_and_decodes_to_float32_or_to_exact_values():
    """README.md "The Python API": `sinco.compress(image, bpp=T)` gives the bytes of a file of at most T bits per pixel,
    header included; `sinco.decompress` gives float32 intensities, or, for a file of context-coded grey levels (which the
    search may choose), the exact values (float64 on this float lattice)."""
    import sinco

    image = make_phantom(32, 32) * 3.0 + 100.0
    for bpp, fit_options in ((5.0, {"steps": 20}), (6.0, {"steps": 20, "context": "off"})):
        data = sinco.compress(image, bpp=bpp, fit_options=fit_options, device="cpu")
        assert 8 * len(data) / image.size <= bpp
        restored = sinco.decompress(data)
        exact = parse_file(data).payload[:1] == b"\x03"  # grid payload version 3: context-coded grey levels
        assert restored.shape == image.shape and restored.dtype == (np.float64 if exact else np.float32), (bpp, exact)
        assert exact == ("context" not in fit_options)  # both kinds of file are seen here
        assert np.abs(restored - image).mean() < 0.05 * np.ptp(image)


# A codec family of a few lines, to check that naming an adapter in the registry is all adding a family takes.
@dataclass(frozen=True)
class BlockFit:
    """The toy family's fitting configuration (nothing to fit: the block means are computed)."""

    seed: int = 0
    lam: float = 1.0
    steps: int = 0
    data_term: str = "mse"

    def to_dict(self) -> dict:
        return {"seed": self.seed, "lam": self.lam, "steps": self.steps, "data_term": self.data_term}

    def resolved(self, *, regularized: bool) -> BlockFit:
        return self


class BlockFamily(CodecFamily):
    """Block means in 8 bits: each `--block` x `--block` tile's mean, decoded by repeating it."""

    name = "block"
    family_id = 200
    summary = "block means in 8 bits (a test family)"
    options = (FamilyOption("block", "--block", int, "tile side in pixels (default: 4)", "N"),)
    common_fit_options = ("seed",)
    methods = {"block": BenchmarkMethod(label="Block means", regularized=False)}
    presets = ("only",)
    default_preset = "only"

    def encode_spec(self, spec):
        return bytes([spec])

    def decode_spec(self, block, *, version):
        if len(block) != 1 or not 1 <= block[0] <= 64:
            raise BitstreamError(f"a block spec of {len(block)} bytes")
        return block[0]

    def check_payload(self, spec, *, payload_bytes, height, width):
        if payload_bytes != math.ceil(height / spec) * math.ceil(width / spec):
            raise BitstreamError(f"a block payload of {payload_bytes} bytes")

    def fit_config(self, preset, overrides):
        return BlockFit(**self.given_overrides(overrides))

    def fit(self, targets, *, bpp, options, config, device, regularizer=None, lam=None, progress=False, desc="fit"):
        side = int(options.get("block") or 4)
        outcomes = []
        for target in targets.numpy():
            rows, cols = math.ceil(target.shape[0] / side), math.ceil(target.shape[1] / side)
            padded = np.pad(target, ((0, rows * side - target.shape[0]), (0, cols * side - target.shape[1])), mode="edge")
            means = padded.reshape(rows, side, cols, side).mean(axis=(1, 3))
            report = FitReport(steps=0, evaluations=0, seconds=0.0, lam=0.0, details={})
            outcomes.append(FitOutcome(spec=side, payload=np.rint(means * 255).astype(np.uint8).tobytes(), report=report))
        return outcomes

    def decode(self, spec, payload, *, height, width):
        means = np.frombuffer(payload, np.uint8).reshape(math.ceil(height / spec), -1).astype(np.float32) / 255
        return np.repeat(np.repeat(means, spec, axis=0), spec, axis=1)[:height, :width]

    def describe(self, spec):
        return {"arch": self.name, "block": spec}


def test_a_family_named_in_the_registry_gets_the_command_line_info_and_the_benchmark(monkeypatch, tmp_path, run):
    """docs/format.md "Codec families": "Adding a family is writing its adapter and naming it in
    `sinco.codec.registry.FAMILY_CLASSES`": `--arch` and its flag, `compress`, `info`, `decompress` and the benchmark's
    methods come from the registry; its flag given to another family is refused naming it."""
    import sinco.codec.registry as registry
    from sinco.benchmark.methods import all_methods

    monkeypatch.setattr(registry, "FAMILY_CLASSES", (*registry.FAMILY_CLASSES, f"{__name__}:BlockFamily"))
    monkeypatch.setattr(registry, "_REGISTRY", {})
    image = make_phantom(20, 22)
    np.save(tmp_path / "img.npy", image)
    out = tmp_path / "b.sinco"
    code, stdout, err = run(["compress", tmp_path / "img.npy", "-o", out, "--arch", "block", "--block", 2, "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["bpp_file"] == 8 * out.stat().st_size / image.size
    header, decoded = decode_file(out.read_bytes())
    assert header.family == "block" and header.spec == 2 and decoded.shape == image.shape
    scaled = (image - image.min()) / np.ptp(image)
    assert report["psnr"] == pytest.approx(-10 * np.log10(np.mean((decoded - scaled) ** 2)), abs=1e-3)  # measured on the file
    code, stdout, _ = run(["info", out])
    assert code == 0 and "block means in 8 bits" in stdout
    assert run(["decompress", out, "-o", tmp_path / "b.npy"])[0] == 0
    assert np.load(tmp_path / "b.npy").shape == image.shape
    assert "block" in all_methods()
    code, _, err = run(["compress", tmp_path / "img.npy", "-o", tmp_path / "g.sinco", "--block", 2])
    assert code == 2 and err == "sinco: error: --block: does not apply to --arch grid (an option of --arch block)\n"


# ============================================================================ regularizer options
def test_reg_every_applies_the_regularizer_on_every_kth_step_only():
    """docs/usage.md `--reg-every K`: the regularizer applies on every K-th step (SIREN, PE-MLP)."""
    import torch

    from sinco.codec.inr.config import INRFitConfig
    from sinco.codec.inr.networks import build_inr
    from sinco.codec.inr.training import fit_inr

    calls = []

    def regularizer(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x.mean(dim=(1, 2, 3))

    target = torch.tensor(make_phantom(12, 12) / 180.0, dtype=torch.float32).clamp(0, 1)
    counts = {}
    for every in (1, 3):
        calls.clear()
        torch.manual_seed(0)
        model = build_inr(TINY)
        config = INRFitConfig(steps=12, reg_every=every, lam=1.0, compile="off")
        result = fit_inr(model, target=target, config=config, device=torch.device("cpu"), regularizer=regularizer, progress=False)
        assert result.reg_every == every
        counts[every] = len(calls)
    # The steps that evaluate the regularizer: 12 with K = 1, steps 0, 3, 6, 9 with K = 3 (any extra evaluation, such as a
    # final scoring, is the same in both).
    assert counts[1] - counts[3] == 12 - 4


def test_seg_perturb_draws_a_flip_with_probability_half_a_gain_in_0_9_1_1_and_noise_of_0_02(tmp_path):
    """docs/regularizer.md `--seg-perturb N`: each perturbation is a left-right flip with probability 1/2, an intensity
    gain uniform in [0.9, 1.1] and Gaussian noise of standard deviation 0.02, drawn from the regularizer's own
    generator seeded by `--seed` (the same draws again with the same seed)."""
    import torch

    from sinco.regularizer.loss import RegularizerOptions, build_regularizer
    from sinco.seg.network import UNetConfig, build_unet, load_seg_model, save_checkpoint

    torch.manual_seed(0)
    unet = UNetConfig(channels=(4, 8), strides=(2,))
    save_checkpoint(tmp_path / "seg.pt", net=build_unet(unet), config=unet, threshold=0.5, training={})
    seg = load_seg_model(tmp_path / "seg.pt")
    image = np.full((8, 16, 16), 0.2, np.float32)  # 8 slices x 64 perturbations (the most): 512 draws
    image[..., 8:] = 0.8  # bright on the right: a flip puts it on the left
    draws = []
    for _ in range(2):
        regularizer = build_regularizer([seg], options=RegularizerOptions(perturb=64, seed=3), masks=np.ones((8, 16, 16)),
                                        images=image, device=torch.device("cpu"))  # fmt: skip
        copies, flips = regularizer._perturbations(torch.from_numpy(image)[:, None])
        draws.append((copies.numpy()[:, 0], flips.numpy()))
    assert np.array_equal(draws[0][0], draws[1][0])  # seeded
    copies, flips = draws[0]
    assert np.array_equal(copies[:, :, :8].mean(axis=(1, 2)) > copies[:, :, 8:].mean(axis=(1, 2)), flips)
    assert 0.4 < flips.mean() < 0.6
    unflipped = np.where(flips[:, None, None], copies[:, :, ::-1], copies)
    gains = unflipped.mean(axis=(1, 2)) / image[0].mean()
    assert gains.min() > 0.89 and gains.max() < 1.11 and gains.min() < 0.92 and gains.max() > 1.08
    noise = unflipped - gains[:, None, None] * image[0]
    assert 0.018 < noise.std() < 0.022


def test_grid_takes_the_regularizer_on_every_step_only(nifti_volume, tmp_path, run):
    """docs/usage.md `--reg-every K`: the grid family applies the regularizer on every step; another K is refused in one line."""
    code, _, err = run(
        ["compress", nifti_volume, "--slice", 2, "-o", tmp_path / "g.sinco", "--reg-every", 2, "--steps", 3, "--quiet"]
    )
    assert code == 2 and err.count("\n") == 1 and "--reg-every 2" in err and not (tmp_path / "g.sinco").exists()


@pytest.mark.parametrize("extra", [
    ["--seg-model", "b.pt"],  # an ensemble
    ["--seg-target", "self"],
    ["--seg-perturb", "2"],
    ["--eval-seg-model", "judge.pt"],
])  # fmt: skip
def test_volumes_refuse_an_ensemble_self_target_perturbations_and_a_judge_in_one_line(nifti_volume, tmp_path, run, extra):
    """docs/usage.md "Whole volumes" and docs/regularizer.md "Limits": with --slices these work on single slices only."""
    out = tmp_path / "v.sinco"
    code, _, err = run(["compress", nifti_volume, "--slices", "all", "-o", out, "--arch", "siren", "--seg-model", "a.pt", "--mask",
                        nifti_volume, *extra, "--steps", 2, "--quiet"])  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "single slices only" in err and not out.exists()


# ============================================================================ lossless and near-lossless
@pytest.fixture
def png8(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "slice.png"
    Image.fromarray(_levels()).save(path)
    return path


@pytest.mark.parametrize(("flags", "named"), [
    (["--lambda-rd", "1e-4"], "--lambda-rd"),
    (["--batch-slices", "2"], "--batch-slices"),
    (["--seg-model", "seg.pt"], "--seg-model"),
    (["--mask", "mask.png"], "--mask"),
    (["--roi", "roi.png"], "--roi"),
])  # fmt: skip
@pytest.mark.parametrize("mode", [["--lossless"], ["--max-error", "2"]])
def test_lossless_and_max_error_refuse_every_option_of_lossy_fits_in_one_line(png8, tmp_path, run, mode, flags, named):
    """docs/usage.md and docs/lossless.md: --lossless and --max-error refuse --bpp, --preset (tests/test_lossless.py),
    --lambda-rd, --batch-slices, --seg-model, --mask and --roi with one line; nothing is written."""
    out = tmp_path / "x.sinco"
    code, _, err = run(["compress", png8, "-o", out, *mode, *flags, "--steps", 2])
    assert code == 2 and err.count("\n") == 1 and f"{mode[0]} and {named}" in err and not out.exists()


def test_the_sidecar_of_an_exact_file_records_the_input_the_coder_its_seed_the_device_and_the_thread_count(png8, tmp_path, run):
    """README.md and docs/usage.md "What is written": every `compress` writes `OUT.sinco.json` with the input, the full
    configuration, the seed, the device and torch's thread count, and the measured result; `--lossless` too."""
    import torch

    out = tmp_path / "l.sinco"
    assert run(["compress", png8, "-o", out, "--max-error", 1, "--steps", 3, "--seed", 4])[0] == 0
    sidecar = json.loads(out.with_name("l.sinco.json").read_text())
    assert sidecar["input"]["path"] == str(png8) and sidecar["coder"]["seed"] == 4 and sidecar["coder"]["steps"] == 3
    assert sidecar["device"] == "cpu" and sidecar["torch_threads"] == torch.get_num_threads()
    assert sidecar["result"]["file_bytes"] == out.stat().st_size and sidecar["result"]["measured_max_error"] <= 1


def test_max_error_0_is_lossless(png8, tmp_path, run):
    """docs/usage.md: "`--max-error 0` is `--lossless`": the same file, and it decodes to the input's levels."""
    from PIL import Image

    lossless, zero = tmp_path / "l.sinco", tmp_path / "z.sinco"
    assert run(["compress", png8, "-o", lossless, "--lossless", "--steps", 3])[0] == 0
    assert run(["compress", png8, "-o", zero, "--max-error", 0, "--steps", 3])[0] == 0
    assert lossless.read_bytes() == zero.read_bytes()
    assert run(["decompress", zero, "-o", tmp_path / "d.png"])[0] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "d.png")), _levels())


def test_the_encoder_decodes_the_file_and_checks_the_bound_before_it_writes(png8, tmp_path, run, monkeypatch):
    """docs/lossless.md: "the encoder decodes the file and checks the bound before it writes anything": a decoder that
    disagreed with the encoder by more than K would stop the command before the output exists."""
    import sinco.codec.grid.lossless as lossless

    real = lossless.decode_levels
    monkeypatch.setattr(lossless, "decode_levels", lambda data: real(data) + 3)  # 3 levels off: above K = 2
    out = tmp_path / "n.sinco"
    with pytest.raises(RuntimeError, match="above --max-error 2"):
        run(["compress", png8, "-o", out, "--max-error", 2, "--steps", 3])
    assert not out.exists() and not out.with_name(out.name + ".json").exists()
    monkeypatch.setattr(lossless, "decode_levels", real)
    assert run(["compress", png8, "-o", out, "--max-error", 2, "--steps", 3])[0] == 0 and out.exists()


def test_exact_files_decode_to_the_smallest_integer_type_and_float_lattices_to_float32_which_png_refuses(tmp_path, run):
    """docs/lossless.md "What exact means" and docs/usage.md "What is written": `sinco decompress` writes an integer
    image's levels in the smallest integer type that holds them (`sinco.decompress` returns int64); a float lattice's
    values come back as float32, and `.png` refuses them in one line."""
    import sinco

    signed = _levels().astype(np.int16) - 100  # negative values: int16
    np.save(tmp_path / "signed.npy", signed)
    rng = np.random.default_rng(1)
    lattice = ((rng.integers(0, 300, (12, 13)) - 111.5) / 37.25).astype(np.float32)  # z-scores of a scan's integers
    np.save(tmp_path / "lattice.npy", lattice)
    for name in ("signed", "lattice"):
        assert run(["compress", tmp_path / f"{name}.npy", "-o", tmp_path / f"{name}.sinco", "--lossless", "--steps", 3])[0] == 0
        assert run(["decompress", tmp_path / f"{name}.sinco", "-o", tmp_path / f"{name}-back.npy"])[0] == 0
    back = np.load(tmp_path / "signed-back.npy")
    assert back.dtype == np.int16 and np.array_equal(back, signed)
    api = sinco.decompress((tmp_path / "signed.sinco").read_bytes())
    assert api.dtype == np.int64 and np.array_equal(api, signed)
    values = np.load(tmp_path / "lattice-back.npy")
    assert values.dtype == np.float32 and np.abs(values - lattice).max() <= 1e-3 / 37.25
    code, _, err = run(["decompress", tmp_path / "lattice.sinco", "-o", tmp_path / "lattice.png"])
    assert code == 2 and err.count("\n") == 1 and "PNG" in err and not (tmp_path / "lattice.png").exists()


def test_the_grid_codec_takes_images_up_to_8192_a_side_and_2_22_pixels():
    """docs/grid-codec.md "Limits": images up to 8,192 pixels a side and 2^22 pixels (the decoder's caps): a grid file
    announcing more is refused before its payload is read, and the encoder refuses such an image in one line."""
    from sinco.codec.grid.spec import GridSpec
    from sinco.codec.registry import get_family

    spec, family = GridSpec(), get_family("grid")
    family.check_payload(spec, payload_bytes=100, height=8192, width=512)  # 2^22 pixels: within the caps
    for height, width in ((8193, 1), (4096, 1025)):
        with pytest.raises(BitstreamError, match="the grid codec takes"):
            family.check_payload(spec, payload_bytes=100, height=height, width=width)
        with pytest.raises(InputError, match=f"image size {height}x{width}") as info:
            spec.validate_for(height, width)
        assert "\n" not in str(info.value)


def _context_section() -> tuple[bytes, int, int]:
    from sinco.codec.grid import context as C
    from sinco.codec.grid.context_fit import ContextFitConfig, fit_context

    levels = _levels(8, 9).astype(np.int64)
    section, _ = C.encode(levels, fit_context(levels, top=255, config=ContextFitConfig(hidden=4, steps=3)))
    return section, 8, 9


def _set(offset: int, fmt: str, value: int):
    def mutate(section: bytearray) -> bytes:
        struct.pack_into(fmt, section, offset, value)
        return bytes(section)

    return mutate


@pytest.mark.parametrize(("mutate", "message"), [
    (_set(5, "<B", 17), "head out of range"),  # scale shift above 16
    (_set(6, "<B", 0), "head out of range"),  # hidden width outside 1..64
    (_set(6, "<B", 65), "head out of range"),
    (_set(7, "<B", 3), "head out of range"),  # more than 2 side planes
    (_set(12, "<I", 1 << 30), "runs past the end"),  # the network block
    (lambda s: bytes(s[:-1]), "not whole 32-bit words"),
    (_set(8, "<I", 12345), "checksum mismatch"),  # the decoded levels' CRC-32
])  # fmt: skip
def test_every_field_of_the_context_section_is_checked_before_use(mutate, message):
    """docs/format.md "Grid payload version 3": a shift above 16, a hidden width outside 1..64, more than 2 planes, a
    network block running past the section, a stream that is not whole words, a CRC-32 mismatch: each a one-line
    BitstreamError (the version and `N > top // 2`: tests/test_lossless.py)."""
    from sinco.codec.grid import context as C

    section, height, width = _context_section()
    with pytest.raises(BitstreamError, match=message) as info:
        C.decode(mutate(bytearray(section)), height=height, width=width)
    assert "\n" not in str(info.value)


# ============================================================================ container and volume files
def test_a_side_above_32768_a_family_block_over_1_kib_and_a_non_finite_intensity_range_are_refused():
    """SECURITY.md: sides above 32,768 are refused even when the pixel count is small; a family block over 1 KiB is refused
    before it is read; a non-finite intensity range is refused (`intensity range ...`)."""
    body = bytearray(_tiny_sinco()[:-4])
    struct.pack_into("<II", body, 6, 40000, 1)  # 40,000 pixels, under every other cap
    with pytest.raises(BitstreamError, match="outside the supported range"):
        parse_file(_with_crc(body))
    body = bytearray(_tiny_sinco()[:-4])
    struct.pack_into("<H", body, 30, 1025)  # a family block of 1,025 bytes, all of them present
    body[32:32] = bytes(1025 - TINY_BLOCK_BYTES)
    with pytest.raises(BitstreamError, match="a family block of 1025 bytes"):
        parse_file(_with_crc(body))
    for value in (math.nan, math.inf):
        body = bytearray(_tiny_sinco()[:-4])
        struct.pack_into("<d", body, 14, value)
        with pytest.raises(BitstreamError, match="intensity range"):
            decode_file(_with_crc(body))


def _volume(n_slices: int = 3, inner_shape: tuple[int, int] = (12, 10)) -> bytes:
    inner = _tiny_sinco(height=inner_shape[0], width=inner_shape[1])
    records = [SliceRecord(data=inner) if k % 2 == 0 else SliceRecord(constant=-1.5) for k in range(n_slices)]
    return encode_volume(VolumeHeader(axis=2, height=12, width=10, n_slices=n_slices, first_index=0, affine=np.eye(4)), records)


def test_volume_headers_past_the_caps_records_of_another_shape_and_bytes_left_over_are_refused():
    """SECURITY.md "Volume files": at most 65,535 slices and 2^29 voxels, every embedded record of the volume's slice
    shape, no bytes left over; each refused with a one-line BitstreamError even behind a valid CRC-32."""
    valid = _volume()
    assert decode_volume(valid)[1].shape == (3, 12, 10)
    cases = []
    body = bytearray(valid[:-4])
    struct.pack_into("<I", body, 16, 65536)  # slices
    cases.append((body, "implausible .sinco volume header"))
    body = bytearray(valid[:-4])
    struct.pack_into("<III", body, 8, 32768, 32768, 1)  # 2^30 voxels in one slice: over the pixel cap too
    cases.append((body, "implausible .sinco volume header"))
    body = bytearray(valid[:-4])
    struct.pack_into("<III", body, 8, 8192, 8192, 9)  # 9 x 2^26 voxels: each slice within the caps, the volume over 2^29
    cases.append((body, "implausible .sinco volume header: 9 slices"))
    body = bytearray(valid[:-4])
    struct.pack_into("<I", body, 8, 11)  # the records are 12 x 10
    cases.append((body, "slice record 0 is 12x10"))
    cases.append((bytearray(valid[:-4]) + b"\0\0", "bytes after the last slice record"))
    for body, message in cases:
        with pytest.raises(BitstreamError, match=message) as info:
            decode_volume(_with_crc(body))
        assert "\n" not in str(info.value)


def test_version_1_volume_files_still_decode():
    """docs/format.md "Format v1": "version-1 volume files are read too" (the same container around v1 records)."""
    record = (DATA / "v1-siren-16x16.sinco").read_bytes()
    expected = np.load(DATA / "v1-siren-16x16.npy")
    header = parse_file(record)
    data = bytearray(encode_volume(VolumeHeader(axis=2, height=16, width=16, n_slices=2, first_index=7, affine=np.eye(4)),
                                   [SliceRecord(data=record), SliceRecord(constant=2.0)])[:-4])  # fmt: skip
    data[4] = 1  # volume format version 1
    volume_header, volume, headers = decode_volume(_with_crc(data))
    assert (volume_header.n_slices, volume_header.first_index) == (2, 7) and headers[0].version == 1 and headers[1] is None
    from sinco.data.intensity import restore_intensity

    np.testing.assert_allclose(
        volume[0],
        restore_intensity(expected, vmin=header.vmin, vmax=header.vmax),
        rtol=0,
        atol=2e-6 * (header.vmax - header.vmin),
    )
    assert np.all(volume[1] == 2.0)


# ============================================================================ demo, benchmark, cluster
def test_the_demo_codes_one_slice_at_0_6_bpp_beside_the_classical_codecs_the_docs_name(tmp_path):
    """README.md and docs/usage.md "The demo": the default codec at its `fast` preset beside the classical codecs sinco
    provides among JPEG 2000, VVC, HEVC, 12-bit AVIF, JPEG XL and JPEG, on one slice, at 0.6 bpp."""
    from sinco.benchmark.demo import plan_demo

    config = plan_demo(tmp_path, paper=False).config
    assert config.bpps == (0.6,) and config.images == 1 and config.preset == "fast" and config.methods[0] == "grid"
    assert set(config.methods[1:]) <= {"jpeg2000", "vvc", "hevc", "avif12", "jpegxl", "jpeg"} and "jpeg2000" in config.methods


ROOT = Path(__file__).resolve().parents[1]
#: The labels of the BD-rate tables in README.md and docs/results.md, and the method each names in `sinco report`'s tables.
DOC_LABELS = {"VVC intra (VVenC, 10-bit)": "VVC intra (VVenC, 10-bit)", "HEVC intra (x265, 12-bit)": "HEVC intra (x265, 12-bit)",
              "AV1 intra (libaom, 12-bit)": "AVIF (AV1 intra, libaom, 12-bit)", "**grid, preset `fast`** (default)": "Latent grids",
              "**grid, `fast`**": "Latent grids", "JPEG 2000 (16-bit)": "JPEG 2000", "JPEG XL": "JPEG XL", "AVIF (8-bit)": "AVIF (8-bit)",
              "JPEG (12-bit)": "JPEG", "COIN (SIREN, `fast`, 0.6 and 1.2 bpp only)": "COIN (SIREN)"}  # fmt: skip


def _first_number(cell: str) -> float | None:
    import re

    found = re.search(r"[-+]?\d+(?:\.\d+)?", cell.replace("**", ""))
    return None if found is None else float(found.group())


def _bd_rates_of_report(page: str) -> dict[str, tuple[float | None, float | None]]:
    """``method -> (BD-rate per image against the anchor, against JPEG 2000)`` of a `sinco report` page's first BD table."""
    section = page.split("## Bjontegaard deltas against ", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] not in ("method", "---"):
            rows[cells[0]] = (_first_number(cells[1]), _first_number(cells[5]))
    return rows


RUNS = ("fast-brats", "fast-lgg", "fast-demo")


@pytest.fixture(scope="module")
def redrawn(tmp_path_factory) -> dict[str, str]:
    """The pages of `sinco report results/fast-brats results/fast-lgg results/fast-demo --anchor vvc`, by run."""
    from sinco.cli import main

    out = tmp_path_factory.mktemp("report")
    assert main(["report", *(str(ROOT / "results" / r) for r in RUNS), "--anchor", "vvc", "--out", str(out)]) == 0
    return {r: (out / f"{r}.md").read_text() for r in RUNS}


def _doc_table(doc: str, header: str) -> list[list[str]]:
    lines = (ROOT / doc).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _doc_precision(cell: str) -> float:
    text = cell.replace("**", "").split("%")[0].split(" ")[0]
    return 0.5 * 10.0 ** -(len(text.split(".")[1]) if "." in text else 0) + 1e-3


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md"])
def test_the_bd_rate_tables_of_the_docs_are_what_sinco_report_redraws_from_the_committed_results(doc, redrawn):
    """README.md "Where it stands" and docs/results.md: "every number comes from a command and a JSON file":
    `sinco report results/fast-brats results/fast-lgg results/fast-demo --anchor vvc` redraws each BD-rate of their
    tables (the mean of the slices' deltas) from the JSON kept under results/."""
    pages = {r: _bd_rates_of_report(page) for r, page in redrawn.items()}
    assert all(page.count("## Bjontegaard deltas against VVC intra") == 1 for page in redrawn.values())
    checked = 0
    for cells in _doc_table(doc, "| method | BraTS vs VVC | BraTS vs JPEG 2000 |"):
        method = DOC_LABELS[cells[0]]
        for index, run_name in enumerate(RUNS):
            for column, against in ((1 + 2 * index, 0), (2 + 2 * index, 1)):
                documented = _first_number(cells[column])
                if documented is None:
                    continue
                measured = pages[run_name][method][against]
                assert measured is not None and abs(measured - documented) <= _doc_precision(cells[column]), (
                    cells[0],
                    run_name,
                    measured,
                )
                checked += 1
    assert checked >= 20


def test_the_mean_psnr_table_of_the_results_is_what_sinco_report_redraws_from_the_committed_results(redrawn):
    """docs/results.md "Mean PSNR (dB) at each target": each PSNR (and each rate it names, and each `lossless`) is the
    redrawn table's mean over the slices."""
    runs = {"BraTS": "fast-brats", "LGG": "fast-lgg", "demo": "fast-demo"}
    methods = {"grid `fast`": "Latent grids", "JPEG 2000": "JPEG 2000", "VVC intra": "VVC intra (VVenC, 10-bit)",
               "COIN (SIREN) `fast`": "COIN (SIREN)"}  # fmt: skip
    checked = 0
    for cells in _doc_table("docs/results.md", "| data | method | 0.3 bpp | 0.6 bpp | 1.2 bpp | 2 bpp |"):
        page = redrawn[runs[cells[0]]]
        for rate, cell in zip(("0.3", "0.6", "1.2", "2"), cells[2:], strict=True):
            if not cell:
                continue
            section = page.split(f"## Target {rate} bpp", 1)[1].split("## ", 1)[0]
            row = next(
                r for r in (line.strip("| ").split(" | ") for line in section.splitlines()) if r[0].startswith(methods[cells[1]])
            )
            bpp, psnr = row[2], row[4]
            if cell.startswith("lossless at "):
                assert psnr == "lossless" and abs(_first_number(bpp) - float(cell.split()[2])) <= _doc_precision(
                    cell.split()[2]
                ), (cells, rate)
            else:
                assert abs(_first_number(psnr) - _first_number(cell)) <= _doc_precision(cell), (cells, rate, psnr)
                if " at " in cell:
                    named = cell.split(" at ")[1].split()[0]
                    assert abs(_first_number(bpp) - float(named)) <= _doc_precision(named), (cells, rate, bpp)
                if "lossless" in cell:
                    assert "1 lossless" in psnr, (cells, rate, psnr)
            checked += 1
    assert checked >= 35


@pytest.mark.parametrize(("run_name", "header", "labels"), [
    ("quality-brats", "| method | 0.3 bpp | 0.6 bpp | 1.2 bpp | BD-rate vs VVC |",
     {"grid `quality`": "Latent grids", "JPEG 2000": "JPEG 2000"}),
    ("volume-brats", "| method | 0.3 bpv | 0.6 bpv | 1.2 bpv | BD-rate vs VVC intra |",
     {"grid `fast`, slice by slice": "Latent grids", "JPEG 2000, slice by slice": "JPEG 2000",
      "VVC intra, slice by slice": "VVC intra (VVenC, 10-bit)", "HEVC random access": "HEVC random access",
      "VVC random access": "VVC random access"}),
])  # fmt: skip
def test_the_quality_and_volume_tables_of_the_results_are_what_sinco_report_redraws(tmp_path, run, run_name, header, labels):
    """docs/results.md "The default family grid, preset quality" and "Per volume": each PSNR (and the rate it names) and
    each BD-rate is what `sinco report results/<run> --anchor vvc` redraws from the committed JSON."""
    code, _, err = run(["report", ROOT / "results" / run_name, "--anchor", "vvc", "--out", tmp_path])
    assert code == 0, err
    page = (tmp_path / f"{run_name}.md").read_text()
    deltas = _bd_rates_of_report(page)
    checked = 0
    for cells in _doc_table("docs/results.md", header):
        if cells[0] not in labels:
            continue  # a row from another run (the `fast` preset on the same slice)
        method = labels[cells[0]]
        for rate, cell in zip(("0.3", "0.6", "1.2"), cells[1:4], strict=True):
            section = page.split(f"## Target {rate} bpp", 1)[1].split("## ", 1)[0]
            row = next(r for r in (line.strip("| ").split(" | ") for line in section.splitlines()) if r[0].startswith(method))
            psnr_column = 3 if run_name.startswith("volume") else 4  # the volume table has no `bpp (params)` column
            assert abs(_first_number(row[psnr_column]) - _first_number(cell)) <= _doc_precision(cell), (cells[0], rate, row)
            if " at " in cell:
                named = cell.split(" at ")[1].split()[0]
                assert abs(_first_number(row[2]) - float(named)) <= _doc_precision(named), (cells[0], rate, row[2])
            checked += 1
        anchor_rate, jpeg2000_rate = next(v for k, v in deltas.items() if k.startswith(method))
        for cell, measured in ((cells[4], anchor_rate), (cells[5], jpeg2000_rate)):
            if _first_number(cell) is not None:
                assert measured is not None and abs(measured - _first_number(cell)) <= _doc_precision(cell), (cells[0], measured)
                checked += 1
    assert checked >= 3 * len(labels) + len(labels)


class _Planned(Exception):
    """Raised by a stand-in for the benchmark runner: the configuration the command built, not run."""


@pytest.mark.parametrize(("seg_model", "methods", "cases"), [
    ([], ("coin", "vanilla-inr", "jpeg", "jpeg2000"), "all"),
    (["--seg-model", "seg.pt"], ("coin", "vanilla-inr", "sinco-siren", "sinco-inr", "jpeg", "jpeg2000"), "val"),
])  # fmt: skip
def test_the_benchmark_defaults_follow_the_segmentation_model(monkeypatch, tmp_path, run, seg_model, methods, cases):
    """docs/usage.md "Benchmark" and docs/your-own-data.md: the default methods are the four INR methods, `jpeg` and
    `jpeg2000`, and `--cases val`; without `--seg-model`, `coin,vanilla-inr,jpeg,jpeg2000` on `--cases all`, and the
    `sinco-*` methods are refused in one line."""
    import sinco.benchmark.runner as runner

    def planned(config, **_):
        raise _Planned(config)

    monkeypatch.setattr(runner, "run_benchmark", planned)
    with pytest.raises(_Planned) as info:
        run(["benchmark", "--data", tmp_path, "--out", tmp_path / "out", *seg_model])
    config = info.value.args[0]
    assert (config.methods, config.cases) == (methods, cases)
    if not seg_model:
        code, _, err = run(["benchmark", "--data", tmp_path, "--out", tmp_path / "out", "--methods", "sinco-siren,jpeg"])
        assert code == 2 and err.count("\n") == 1 and "needs --seg-model" in err


def test_label_glob_none_drops_the_default_labels_of_the_folders_layout():
    """docs/your-own-data.md: "`--label-glob none` drops the default `OTMultiClass.nii.gz` of the folders layout"."""
    from sinco.cli import build_parser
    from sinco.cli.options import dataset_globs

    default = build_parser().parse_args(["benchmark", "--data", "d", "--out", "o"])
    assert dataset_globs(default) == ("Flair*.nii.gz", "OTMultiClass.nii.gz")
    none = build_parser().parse_args(["benchmark", "--data", "d", "--out", "o", "--label-glob", "none"])
    assert dataset_globs(none) == ("Flair*.nii.gz", None)


def test_batch_inputs_take_a_folders_files_not_its_subfolders_and_outputs_mirror_their_paths(tmp_path):
    """docs/cluster.md "Usage": a folder gives its image files, not its subfolders'; each input becomes
    `DIR/<its path below the inputs' common folder>.sinco`; two inputs that would share an output are refused."""
    from sinco.compression.batch import _output_names, expand_inputs

    for rel in ("lgg/TCGA_a/flair.nii.gz", "lgg/TCGA_b/flair.nii.gz", "lgg/TCGA_b/deeper/other.nii.gz", "lgg/TCGA_b/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert expand_inputs([str(tmp_path / "lgg" / "TCGA_b")]) == [tmp_path / "lgg" / "TCGA_b" / "flair.nii.gz"]
    inputs = expand_inputs([str(tmp_path / "lgg" / "*" / "flair.nii.gz")])
    assert _output_names(inputs) == [Path("TCGA_a/flair.sinco"), Path("TCGA_b/flair.sinco")]
    (tmp_path / "lgg" / "TCGA_a" / "flair.npy").write_bytes(b"")
    with pytest.raises(InputError, match="both would be written to"):
        _output_names(expand_inputs([str(tmp_path / "lgg" / "TCGA_a")]))


def test_a_batch_whose_cluster_fails_leaves_a_manifest_with_status_error(tmp_path):
    """docs/cluster.md "What is written": `manifest.json`'s status is `error` when the cluster could not be started or
    reached (here a client whose every submission fails, as a lost scheduler's does), and no output is written."""
    from sinco.codec.config import CodecConfig
    from sinco.codec.inr.config import INRFitConfig
    from sinco.compression.batch import MANIFEST_NAME, BatchConfig, ClusterConfig, plan_batch, run_batch

    class LostScheduler:
        def scheduler_info(self) -> dict:
            return {}

        def submit(self, *args, **kwargs):
            raise OSError("Timed out trying to connect to the scheduler")

        def cancel(self, futures) -> None:
            pass

    np.save(tmp_path / "img.npy", make_phantom(16, 16))
    config = BatchConfig(codec=CodecConfig(arch="siren", bpp=8.0), fit_config=INRFitConfig(steps=2), device="cpu")
    out = tmp_path / "out"
    plans = plan_batch([str(tmp_path / "img.npy")], config=config, out_dir=out, force=False)
    with pytest.raises(OSError, match="Timed out"):
        run_batch(plans, config=config, cluster=ClusterConfig(), out_dir=out, progress=False, client=LostScheduler())
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "error" and manifest["counts"]["outputs_written"] == 0 and not (out / "img.sinco").exists()


def test_batch_records_are_keyed_by_input_and_settings_but_not_by_the_slice_range(tmp_path):
    """docs/cluster.md "What is written": `<key>` hashes the input file's path, size and modification time and every
    setting that decides the bytes; the slice range is not part of it, so runs over `40:120` and `all` share records."""
    import os

    from sinco.codec.config import CodecConfig
    from sinco.codec.inr.config import INRFitConfig
    from sinco.compression.batch import BatchConfig, work_key

    image = tmp_path / "flair.nii.gz"
    image.write_bytes(b"0")
    base = BatchConfig(codec=CodecConfig(arch="siren", bpp=1.2), fit_config=INRFitConfig(steps=20), slices="all", device="cpu")
    key = work_key(base, image=image, mask=None)
    other_range = BatchConfig(
        codec=CodecConfig(arch="siren", bpp=1.2), fit_config=INRFitConfig(steps=20), slices="40:120", device="cpu"
    )
    assert work_key(other_range, image=image, mask=None) == key
    for changed in (BatchConfig(codec=CodecConfig(arch="siren", bpp=0.6), fit_config=INRFitConfig(steps=20), device="cpu"),
                    BatchConfig(codec=CodecConfig(arch="siren", bpp=1.2), fit_config=INRFitConfig(steps=21), device="cpu"),
                    BatchConfig(codec=CodecConfig(arch="siren", bpp=1.2), fit_config=INRFitConfig(steps=20), device="cpu", torch_threads=2)):  # fmt: skip
        assert work_key(changed, image=image, mask=None) != key
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the same bytes, modified later
    assert work_key(base, image=image, mask=None) != key


@pytest.mark.parametrize(("doc", "package"), [("docs/grid-codec.md", "grid"), ("docs/inr-codec.md", "inr")])
def test_every_module_a_design_note_names_is_in_its_package_and_every_module_is_named(doc, package):
    """docs/grid-codec.md and docs/inr-codec.md "Design": each module the table of modules names is in the package
    (`sinco.codec.grid`, `sinco.codec.inr`), and each module of the package is named on the page."""
    import re

    text = (ROOT / doc).read_text()
    table = [line for line in text.splitlines() if re.match(r"\| `[a-z_0-9]+\.py`", line)]
    named = {name for line in table for name in re.findall(r"`([a-z_0-9]+\.py)`", line.split("|")[1])}
    present = {path.name for path in (ROOT / "src" / "sinco" / "codec" / package).glob("*.py")} - {"__init__.py"}
    assert named and named <= present, sorted(named - present)
    assert {name for name in present if f"`{name}`" not in text} == set()


# ============================================================================ the table itself
def test_every_test_the_promise_table_names_exists_and_every_test_of_this_file_is_in_it():
    """SECURITY.md "Promises and the tests named for them": each `tests/FILE::TEST` it names is a test function of that
    file, and each test of this file (written for a promise) is named there."""
    import re

    table = (ROOT / "SECURITY.md").read_text().split("## Promises and the tests named for them", 1)[1]
    named = set(re.findall(r"`(test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`", table))
    assert len(named) > 200
    for file, test in sorted(named):
        source = ROOT / "tests" / file
        assert source.exists() and re.search(rf"^\s*def {test}\(", source.read_text(), re.M), f"{file}::{test}"
    here = set(re.findall(r"^def (test_[a-z0-9_]+)\(", Path(__file__).read_text(), re.M))
    assert here - {t for f, t in named if f == Path(__file__).name} == set()
