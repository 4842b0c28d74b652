"""The option groups the commands share, declared once, and the parsing of their values.

Nothing heavy is imported here: building the parser reads the codec families' option declarations only.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from sinco.errors import InputError

#: The help of ``--preset``, for every family.
PRESET_HELP = ("grid: fast = 900 steps (about a minute a slice on 2 CPU cores), quality = 6000 steps, "
               "long = 12000 (for GPUs; see docs/grid-codec.md); siren and pe-mlp: paper = the paper's 50000 Adam steps at "
               "lr 1e-3, fast = 4000 gradient evaluations, Adam then L-BFGS (see docs/inr-codec.md)")  # fmt: skip


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``."""
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help="where to fit: auto (CUDA when available), cpu, "
                   "cuda or cuda:N; decoding always runs on the CPU (default: auto)")  # fmt: skip


def add_output(p: argparse.ArgumentParser, *, metavar: str, help: str) -> None:
    """``-o/--output`` and ``--force``."""
    p.add_argument("-o", "--output", required=True, metavar=metavar, help=help)
    add_force(p)


def add_force(p: argparse.ArgumentParser) -> None:
    """``--force``."""
    p.add_argument("--force", action="store_true", help="replace an existing output file")


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_json(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--json``."""
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")


def add_slicing(p: argparse.ArgumentParser, *, volumes: bool, slices_default: str | None = None) -> None:
    """How a slice (or the slices of a volume) is taken from an input: ``--slice``/``--slices``, ``--axis``, ``--channel``."""
    if volumes:
        p.add_argument("--slices", default=slices_default, metavar="all|A:B",
                       help="consecutive slices (A:B half-open, 0-based) of a volume" + (f" (default: {slices_default})" if slices_default else ""))  # fmt: skip
    else:
        p.add_argument("--slice", type=int, default=None, metavar="K", help="slice index of a 3-D/4-D volume")
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2), help="slicing axis (default: 2, axial)")
    p.add_argument("--channel", type=int, default=0, metavar="C", help="channel of a 4-D volume (default: 0, FLAIR)")


def add_rate(p: argparse.ArgumentParser, *, arch_help: bool) -> None:
    """``--arch`` and ``--bpp``."""
    from sinco.codec.registry import DEFAULT_FAMILY, all_families

    families = all_families()
    about = "codec family: " + "; ".join(f"{f.name} = {f.summary}" for f in families) + f" (default: {DEFAULT_FAMILY})"
    p.add_argument("--arch", choices=[f.name for f in families], default=DEFAULT_FAMILY,
                   help=about if arch_help else f"codec family (default: {DEFAULT_FAMILY})")  # fmt: skip
    p.add_argument("--bpp", type=float, default=1.2, help="target bits per pixel of the whole file, header included (default: 1.2)")


def _add_family_options(group: Any, attribute: str) -> None:
    """Every registered family's options of one kind (``options`` or ``fit_options``), once each, naming their readers."""
    from sinco.codec.registry import all_families

    readers: dict[str, list[str]] = {}
    options = {}
    for family in all_families():
        for option in getattr(family, attribute):
            readers.setdefault(option.flag, []).append(family.name)
            options.setdefault(option.flag, option)
    for flag, option in options.items():
        group.add_argument(flag, dest=option.dest, type=option.type, default=None, metavar=option.metavar,
                           help=f"{option.help} [{', '.join(readers[flag])}]")  # fmt: skip
        for alias in option.aliases:
            group.add_argument(alias, dest=option.dest, type=option.type, default=None, help=argparse.SUPPRESS)


def add_codec_options(p: argparse.ArgumentParser) -> None:
    """Every family's codec options (a flag several families read is added once)."""
    _add_family_options(p.add_argument_group("codec family options (each applies to the families named in its help)"), "options")


def seed_value(text: str) -> int:
    """``--seed``: an integer in ``0..2^63-1`` (a usage error otherwise, as every family and the API require).

    Raises:
        argparse.ArgumentTypeError: for anything else.
    """
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer in 0..2^63-1") from None
    if not 0 <= seed < 2**63:
        raise argparse.ArgumentTypeError(f"{seed}: expected an integer in 0..2^63-1")
    return seed


def add_fit_options(p: argparse.ArgumentParser, *, lam_help: str) -> None:
    """The fitting flags: ``--preset``, the common ones and every family's own."""
    from sinco.codec.registry import all_families

    families = all_families()
    presets = "; ".join(f"{f.name}: {', '.join(f.presets)} (default {f.default_preset})" for f in families)
    p.add_argument("--preset", default=None, help=f"fitting preset per family: {presets}. {PRESET_HELP}")
    p.add_argument("--steps", type=int, default=None, help="optimization steps (default: the preset's)")
    lr_readers = ", ".join(f.name for f in families if f.reads_option("lr"))
    p.add_argument("--lr", type=float, default=None, help=f"(peak) learning rate (default: the preset's) [{lr_readers}]")
    p.add_argument("--seed", type=seed_value, default=0, help="random seed (default: 0)")
    p.add_argument("--lam", default="1", metavar="LAMBDA", help=lam_help)
    p.add_argument("--reg-every", type=int, default=1, metavar="K", help="apply the regularizer every K-th step (default: 1)")
    _add_family_options(p.add_argument_group("fitting options of the codec families"), "fit_options")


def add_regularizer(p: argparse.ArgumentParser, *, benchmark: bool) -> None:
    """The structural regularizer's target, perturbations and independent judge (``--data-term`` is a fitting option).

    ``--seg-model`` itself is declared by each command (repeatable: ``--seg-model A --seg-model B``).
    """
    p.add_argument("--seg-target", default="mask", metavar="mask|self",
                   help="regularizer target: mask (the ground truth) or self (the loss network's own mask of the "
                        "uncompressed slice: no ground truth needed)" + ("" if benchmark else "; with self, --mask is optional"))  # fmt: skip
    p.add_argument("--seg-perturb", type=int, default=0, metavar="N",
                   help="average the Dice term over N random perturbations of the network's input each step "
                        "(flip, +-10%% intensity scaling, noise 0.02; seeded by --seed) (default: 0, off)")  # fmt: skip
    p.add_argument("--eval-seg-model", default=None, metavar="JUDGE.pt",
                   help="independent judge: Dice by a segmentation network the regularizer did not use "
                        "(refused if it is a loss network)" + ("" if benchmark else "; reported as dice_eval"))  # fmt: skip


def add_dataset(p: argparse.ArgumentParser) -> None:
    """Where a dataset is and how it is laid out."""
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder (Decathlon Task01, one folder per case, or a folder of 2-D images)")  # fmt: skip
    p.add_argument("--layout", choices=("auto", "decathlon", "folders", "images"), default="auto",
                   help="dataset layout (default: auto = decathlon if DIR/dataset.json exists, else folders); "
                        "images = 2-D PNG/TIFF/.npy files, those of one folder are one case's slices")  # fmt: skip
    p.add_argument("--image-glob", default=None,
                   help="folders layout: image file (or DICOM series folder) in each case folder (default: Flair*.nii.gz); "
                        "images layout: the images under DIR (required, e.g. '*.png')")  # fmt: skip
    p.add_argument("--label-glob", default=None,
                   help="tumour labels: folders layout, the file in each case folder (default: OTMultiClass.nii.gz; 'none' = no "
                        "labels); images layout, masks paired with the images by name (default: none)")  # fmt: skip
    p.add_argument("--channel", type=int, default=0, help="modality of 4-D volumes (default: 0, FLAIR)")


def dataset_globs(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(image_glob, label_glob)`` of a dataset command: the layout's defaults, ``--label-glob none`` for no labels.

    Raises:
        InputError: for ``--layout images`` without ``--image-glob``.
    """
    if args.layout == "images":
        if args.image_glob is None:
            raise InputError("--layout images needs --image-glob (e.g. '*.png' or 'slices/*.tif')")
        label = args.label_glob
    else:
        label = "OTMultiClass.nii.gz" if args.label_glob is None else args.label_glob
    label = None if label is not None and label.strip().lower() in ("", "none") else label
    return (args.image_glob or "Flair*.nii.gz"), label


def parse_lams(text: str | float, *, allow_list: bool) -> tuple[float, ...]:
    """Parse ``--lam``: one number, or (``allow_list``, the benchmark) comma-separated numbers.

    Raises:
        InputError: for a list where one value is expected, a non-number, or a negative or non-finite value.
    """
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) > 1 and not allow_list:
        raise InputError(f"--lam {text}: a list of lambdas is for 'sinco benchmark' (one record per value); give one value here")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise InputError(f"--lam {text}: expected {'comma-separated numbers' if allow_list else 'a number'}") from None
    if any(not (math.isfinite(v) and v >= 0) for v in values):
        raise InputError(f"--lam {text}: lambdas must be non-negative numbers")
    if len(set(values)) != len(values):
        raise InputError(f"--lam {text}: a value is listed twice")
    return values


def parse_list(text: str, *, arg: str, cast: type = float) -> tuple:
    """Comma-separated values of one type (``--bpp 0.3,0.6`` as floats, ``--channels 8,16,32`` as ints).

    Raises:
        InputError: naming ``arg`` and the text.
    """
    try:
        return tuple(cast(part) for part in text.split(","))
    except ValueError:
        kind = "integers" if cast is int else "numbers"
        raise InputError(f"{arg} {text!r}: expected comma-separated {kind}") from None


def regularizer_options(args: argparse.Namespace, *, seed: int) -> Any:
    """The :class:`~sinco.regularizer.loss.RegularizerOptions` of the parsed options (perturbations seeded by ``seed``)."""
    from sinco.regularizer.loss import RegularizerOptions

    return RegularizerOptions(target=args.seg_target, perturb=args.seg_perturb, seed=seed)


def fit_overrides(args: argparse.Namespace, *, lam_list: bool = False) -> dict[str, Any]:
    """The fitting flags (common and every family's) as given; ``None`` where not given. ``--lam`` is one value, or with
    ``lam_list`` (the benchmark, which reads the list itself) left out."""
    from sinco.codec.family import COMMON_FIT_OPTIONS
    from sinco.codec.registry import all_families

    dests = list(COMMON_FIT_OPTIONS) + sorted({o.dest for f in all_families() for o in f.fit_options})
    values = {d: getattr(args, d) for d in dests}
    values["lam"] = None if lam_list else parse_lams(args.lam, allow_list=False)[0]
    return values


def codec_and_fit_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The codec and fitting configurations of ``compress`` and ``compress-batch`` from their flags.

    The common options a family does not read keep their defaults unless given (``--seed`` and ``--lam`` default to 0
    and 1 for every family).

    Raises:
        InputError: for an option the chosen family does not read, naming the families that do, or a bad value.
    """
    from sinco.codec.config import CodecConfig
    from sinco.codec.registry import all_families, get_family
    from sinco.codec.registry import fit_config as make_fit_config
    from sinco.regularizer.terms import with_resolved_data_term

    family = get_family(args.arch)
    codec_dests = sorted({o.dest for f in all_families() for o in f.options})
    codec = CodecConfig(arch=args.arch, bpp=args.bpp, options={d: getattr(args, d) for d in codec_dests})
    overrides = fit_overrides(args)
    # --seed, --lam and --reg-every have defaults; a family that does not read one only refuses a value given.
    for dest, default in (("seed", 0), ("lam", 1.0), ("reg_every", 1)):
        if not family.reads_option(dest) and overrides.get(dest) == default:
            overrides[dest] = None
    overrides = with_resolved_data_term(overrides, regularized=getattr(args, "seg_model", None) is not None,
                                        accepted={o.dest for o in family.fit_options})  # fmt: skip
    return codec, make_fit_config(args.arch, args.preset, overrides)
