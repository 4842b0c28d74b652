"""``sinco decompress`` and ``sinco info``: reading ``.sinco`` files (slices and volumes)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sinco.cli import options
from sinco.cli.common import EXIT_OK
from sinco.errors import InputError


def add_parsers(sub: Any) -> None:
    """Register ``decompress`` and ``info``."""
    p = sub.add_parser("decompress", help="decode a .sinco file to an image")
    p.add_argument("input", metavar="IN.sinco")
    options.add_output(p, metavar="OUT", help="output: .npy, .png (16-bit), .nii.gz, .nii or .tif")
    p.add_argument("--slices", default=None, metavar="A:B",
                   help="of a volume file: only its slices A:B (0-based positions in the file, half-open, like indexing the "
                        "decoded array); a volume of slabs decodes only the slabs that hold them")  # fmt: skip
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="print the header of a .sinco file")
    p.add_argument("input", metavar="IN.sinco")
    options.add_json(p, what="the header")
    p.set_defaults(func=cmd_info)


def cmd_decompress(args: argparse.Namespace) -> int:
    """``sinco decompress``: decode a ``.sinco`` file to an image file."""
    import numpy as np

    from sinco.codec.files import decode_file
    from sinco.codec.format import read_file
    from sinco.codec.grid.lossless import exact_values, exact_volume
    from sinco.codec.volume import decode_volume, decode_volume_file, is_slab_volume, is_volume_file
    from sinco.data.io import (
        OUTPUT_SUFFIXES,
        VOLUME_SUFFIXES,
        image_suffix,
        parse_slice_range,
        save_exact,
        save_image,
        save_volume,
    )
    from sinco.utils.atomic import check_output_path

    if image_suffix(args.output) not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {args.output!r}: unsupported output format (expected one of {', '.join(OUTPUT_SUFFIXES)})")
    data = read_file(args.input)
    if args.slices is not None and not is_volume_file(data):
        raise InputError(f"--slices {args.slices}: {args.input!r} is a single image, not a volume file")
    if is_volume_file(data):
        if image_suffix(args.output) not in VOLUME_SUFFIXES:
            raise InputError(f"-o {args.output!r}: {args.input!r} is a volume; write it as {', '.join(VOLUME_SUFFIXES)}")
        out = check_output_path(args.output, inputs=[args.input], force=args.force)
        if is_slab_volume(data):
            return _decompress_slabs(data, out=out, slices=args.slices)
        exact = exact_volume(data)
        if exact is not None and args.slices is not None:
            header, _ = decode_volume_file(data)
            exact = exact[parse_slice_range(args.slices, size=header.n_slices)]
        if exact is not None:
            header, _ = decode_volume_file(data)
            what = save_exact(out, np.moveaxis(exact, 0, header.axis), affine=header.affine)
            print(f"{out}: {exact.shape[0]} slices of {header.height}x{header.width} ({what})")
            return EXIT_OK
        header, volume, _ = decode_volume(data)
        if args.slices is not None:  # slice records decode one by one: every one is decoded, then the range kept
            volume = volume[parse_slice_range(args.slices, size=header.n_slices)]
        what = save_volume(out, volume, axis=header.axis, affine=header.affine)
        print(f"{out}: {volume.shape[0]} slices of {header.height}x{header.width} ({what})")
        return EXIT_OK
    out = check_output_path(args.output, inputs=[args.input], force=args.force)
    exact = exact_values(data)
    if exact is not None:
        what = save_exact(out, exact)
        print(f"{out}: {exact.shape[0]}x{exact.shape[1]} ({what})")
        return EXIT_OK
    parsed, image = decode_file(data)
    what = save_image(out, scaled=image, vmin=parsed.vmin, vmax=parsed.vmax)
    print(f"{out}: {parsed.height}x{parsed.width} ({what})")
    return EXIT_OK


def _decompress_slabs(data: bytes, *, out: Any, slices: str | None) -> int:
    """A volume file of slabs: the slices asked for (all by default), from the slabs that hold them only."""
    import time

    from sinco.codec.volume import decode_slab_volume, parse_slab_volume
    from sinco.data.io import parse_slice_range, save_volume

    header = parse_slab_volume(data).header
    wanted = None if slices is None else parse_slice_range(slices, size=header.n_slices)
    start = time.perf_counter()
    _, volume = decode_slab_volume(data, slices=wanted)
    seconds = time.perf_counter() - start
    what = save_volume(out, volume, axis=header.axis, affine=header.affine)
    shown = "" if wanted is None else f" (slices {wanted.start}:{wanted.stop} of {header.n_slices})"
    print(f"{out}: {volume.shape[0]} slices of {header.height}x{header.width}{shown} ({what}) decoded in {seconds:.2f} s")
    return EXIT_OK


def _slab_volume_info(data: bytes, *, as_json: bool) -> int:
    from sinco.codec.registry import family_by_id
    from sinco.codec.volume import check_slab_crcs, parse_slab_volume

    volume = parse_slab_volume(data)
    check_slab_crcs(volume)
    header, family = volume.header, family_by_id(volume.family_id)
    slabs = [{"slab": k, "slices": [start, start + s.slices], "payload_bytes": len(s.payload), "constant": not s.payload,
              "bpp": 8 * len(s.payload) / (s.slices * header.height * header.width), "intensity_range": [s.vmin, s.vmax],
              **(family.describe_payload(volume.spec, s.payload) if s.payload else {})}
             for k, (start, s) in enumerate(zip(volume.slab_starts(), volume.slabs, strict=True))]  # fmt: skip
    info = {
        "format_version": data[4], "kind": "volume", "axis": header.axis, "family": family.name,
        "slices": [header.first_index, header.first_index + header.n_slices], "shape": [header.n_slices, header.height, header.width],
        "arch": family.describe(volume.spec), "header_bytes": volume.header_bytes, "slabs": slabs,
        "file_bytes": len(data), "bpp_file": 8 * len(data) / header.n_voxels,
    }  # fmt: skip
    if as_json:
        print(json.dumps(info))
        return EXIT_OK
    last = header.first_index + header.n_slices - 1
    rows = [("format", f".sinco volume v{data[4]} (slabs)"), ("family", f"{family.name}: {family.summary}"),
            ("arch", ", ".join(f"{k}={v}" for k, v in info["arch"].items() if k != "arch")),
            ("slices", f"{header.n_slices} in {len(slabs)} slab(s), source indices {header.first_index}..{last} along axis {header.axis}"),
            ("shape", f"{header.height} x {header.width} per slice")]  # fmt: skip
    for slab in slabs:
        a, b = slab["slices"]
        what = "constant" if slab["constant"] else (f"{slab['payload_bytes']} bytes ({slab['bpp']:.4f} bpp; networks "
                                                    f"{slab['network_bytes']}, latents {slab['latent_bytes']})")  # fmt: skip
        rows.append((f"slab {slab['slab']}", f"slices {a}:{b}, {what}"))
    _print_rows(rows + [("file", f"{len(data)} bytes ({volume.header_bytes} of header and slab table), {info['bpp_file']:.4f} bpp (file)")])
    return EXIT_OK


def _print_rows(rows: list[tuple[str, str]]) -> None:
    for key, value in rows:
        print(f"{key:<11} {value}")


def _volume_info(data: bytes, *, as_json: bool) -> int:
    from sinco.codec.files import parse_file
    from sinco.codec.registry import get_family
    from sinco.codec.volume import decode_volume_file

    header, records = decode_volume_file(data)
    inner = [parse_file(r.data) for r in records if r.data is not None]
    first = inner[0] if inner else None
    info = {
        "format_version": data[4], "kind": "volume", "axis": header.axis,
        "slices": [header.first_index, header.first_index + header.n_slices],
        "shape": [header.n_slices, header.height, header.width], "fitted_slices": len(inner),
        "constant_slices": header.n_slices - len(inner), "family": first.family if first else None,
        "record_format_version": first.version if first else None,
        "arch": get_family(first.family).describe(first.spec) if first else None,
        "file_bytes": len(data), "bpp_file": 8 * len(data) / header.n_voxels,
    }  # fmt: skip
    if as_json:
        print(json.dumps(info))
        return EXIT_OK
    last = header.first_index + header.n_slices - 1
    rows = [("format", f".sinco volume v{data[4]}"),
            ("slices", f"{header.n_slices} ({len(inner)} fitted, {info['constant_slices']} constant), source indices "
                       f"{header.first_index}..{last} along axis {header.axis}"),
            ("shape", f"{header.height} x {header.width} per slice")]  # fmt: skip
    if first:
        rows += [("family", f"{first.family} (records in .sinco v{first.version})"),
                 ("arch", ", ".join(f"{k}={v}" for k, v in info["arch"].items() if k != "arch"))]  # fmt: skip
    _print_rows(rows + [("file", f"{len(data)} bytes, {info['bpp_file']:.4f} bpp (file)")])
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """``sinco info``: what a ``.sinco`` file holds: format version, family, geometry, rate."""
    from sinco.cli.compress import lattice_phrase
    from sinco.codec.files import parse_file
    from sinco.codec.format import read_file
    from sinco.codec.registry import get_family
    from sinco.codec.volume import is_slab_volume, is_volume_file

    data = read_file(args.input)
    if is_slab_volume(data):
        return _slab_volume_info(data, as_json=args.json)
    if is_volume_file(data):
        return _volume_info(data, as_json=args.json)
    parsed = parse_file(data)
    family, header = get_family(parsed.family), parsed.header
    info = {
        "format_version": parsed.version, "family": parsed.family, "arch": family.describe(parsed.spec),
        "shape": [header.height, header.width], **family.rate_fields(parsed.spec, n_pixels=header.n_pixels),
        "payload_bytes": len(parsed.payload), "file_bytes": len(data), "bpp_file": 8 * len(data) / header.n_pixels,
        "intensity_range": [header.vmin, header.vmax], **family.describe_payload(parsed.spec, parsed.payload),
    }  # fmt: skip
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    rows = [("format", f".sinco v{parsed.version}"), ("family", f"{parsed.family}: {family.summary}"),
            ("arch", ", ".join(f"{k}={v}" for k, v in info["arch"].items() if k != "arch")),
            ("shape", f"{header.height} x {header.width}"),
            ("file", f"{len(data)} bytes ({len(parsed.payload)} of payload), {info['bpp_file']:.4f} bpp (file)")]  # fmt: skip
    if "n_params" in info:
        rows.append(("parameters", f"{info['n_params']} (fp16), {info['bpp_params']:.4f} bpp (parameters)"))
    if "network_bytes" in info:
        rows.append(("parts", f"payload v{info['payload_version']}: decoder networks {info['network_bytes']} bytes, "
                              f"latents {info['latent_bytes']} bytes"))  # fmt: skip
    if "grid_prediction" in info:
        grid = info["grid_prediction"]
        rows.append(("prediction", f"grid payload v1 of {grid['bytes']} bytes (decoder networks {grid['network_bytes']} bytes, "
                                   f"latents {grid['latent_bytes']} bytes): its image is the context coder's side plane"))  # fmt: skip
    if "context" in info:
        coded = info["context"]
        bound = "lossless (exact levels)" if coded["max_error"] == 0 else f"near-lossless, every pixel within {coded['max_error']} levels"
        rows.append(("levels", f"payload v{info['payload_version']}: context coder, {bound}; levels 0..{coded['top']}, "
                               f"networks {coded['network_bytes']} bytes of {coded['bytes']}"))  # fmt: skip
    if "residual" in info:
        layer = info["residual"]
        rows.append(("residual", f"{layer['bytes']} bytes of coded error, step {layer['step']} x "
                                 f"{lattice_phrase(layer['levels'], step=layer['step'])}"))  # fmt: skip
    _print_rows(rows + [("intensity", f"{header.vmin:.6g} .. {header.vmax:.6g}")])
    return EXIT_OK
