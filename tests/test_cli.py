import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sinco.cli import main
from sinco.codec.config import CodecConfig
from sinco.codec.inr.config import INRFitConfig
from sinco.compression.image import compress_image
from sinco.data.intensity import normalize_minmax, restore_intensity
from sinco.data.io import load_slice
from sinco.metrics import psnr


@pytest.fixture
def compressed(nifti_volume, tmp_path, capsys, run):
    out = tmp_path / "s.sinco"
    code, stdout, err = run(
        ["compress", nifti_volume, "--slice", 2, "-o", out, "--bpp", 4, "--arch", "siren", "--depth", 3, "--steps", 40, "--json", "--quiet"]
    )
    assert code == 0, err
    return out, json.loads(stdout)


def test_compress_json_report_and_sidecar(compressed, nifti_volume):
    out, report = compressed
    assert set(report) >= {"psnr", "ssim", "bpp_params", "bpp_file", "seconds"}
    assert report["bpp_file"] == pytest.approx(8 * out.stat().st_size / (32 * 32))
    # The file is the fp16 weights plus the v2 container (header, length fields, CRC) and the 11-byte SIREN block.
    from sinco.codec.format import OVERHEAD_BYTES

    assert report["bpp_params"] <= 4 and report["bpp_file"] == pytest.approx(report["bpp_params"] + 8 * (OVERHEAD_BYTES + 11) / (32 * 32))
    sidecar = json.loads(out.with_name("s.sinco.json").read_text())
    assert sidecar["fit"] == {"steps": 40, "lr": 0.001, "seed": 0, "log_every": 50, "lam": 1.0, "reg_every": 1, "compile": "auto",
                              "schedule": "constant", "warmup": 0, "final_lr_ratio": 0.01, "optimizer": "adam",
                              "lbfgs_after": 1000, "lbfgs_history": 50, "quantize_tail": 0, "quantize_lr": 3e-6,
                              "data_term": "mse"}
    assert sidecar["codec"]["arch"] == "siren" and sidecar["input"]["slice"] == 2
    assert sidecar["result"] == report
    # The reported PSNR is that of the decoded file against the input slice.
    code = main(["decompress", str(out), "-o", str(out.with_suffix(".npy"))])
    assert code == 0
    raw = load_slice(nifti_volume, slice_index=2)
    decoded = np.load(out.with_suffix(".npy"))
    scaled_input, vmin, vmax = normalize_minmax(raw)
    assert psnr(pred=(decoded - vmin) / (vmax - vmin), target=scaled_input) == pytest.approx(report["psnr"], abs=1e-3)


def test_plain_output_is_one_line(nifti_volume, tmp_path, capsys, run):
    code, out, _ = run(["compress", nifti_volume, "--slice", 0, "-o", tmp_path / "a.sinco", "--bpp", 4, "--steps", 3, "--quiet"])
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    assert "psnr=" in out and "ssim=" in out and "bpp_file=" in out and "trials" in out and "seconds=" in out  # the grid's rate search
    code, out, _ = run(["compress", nifti_volume, "--slice", 0, "-o", tmp_path / "b.sinco", "--arch", "siren", "--bpp", 4, "--steps", 3,
                        "--quiet"])  # fmt: skip
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    assert "psnr=" in out and "ssim=" in out and "bpp_params=" in out and "bpp_file=" in out and "seconds=" in out


def test_decompress_is_bit_identical_to_what_compress_measured(image, tmp_path, capsys, run):
    scaled, vmin, vmax = normalize_minmax(image)
    result = compress_image(scaled, vmin=vmin, vmax=vmax, codec=CodecConfig(arch="pe-mlp", bpp=8.0), fit_config=INRFitConfig(steps=30), device=torch.device("cpu"))
    (tmp_path / "x.sinco").write_bytes(result.data)
    code, out, _ = run(["decompress", tmp_path / "x.sinco", "-o", tmp_path / "x.npy"])
    assert code == 0 and "32x32" in out
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), restore_intensity(result.reconstruction, vmin=vmin, vmax=vmax))
    restored = restore_intensity(result.reconstruction, vmin=vmin, vmax=vmax)
    code, _, _ = run(["decompress", tmp_path / "x.sinco", "-o", tmp_path / "x.nii.gz"])
    assert code == 0
    import nibabel as nib

    nifti = np.asarray(nib.load(str(tmp_path / "x.nii.gz")).dataobj)
    assert nifti.dtype == np.float32 and nifti.tobytes() == restored.tobytes()  # the same restored intensities
    code, _, _ = run(["decompress", tmp_path / "x.sinco", "-o", tmp_path / "x.png"])
    assert code == 0
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "x.png"))
    # 16-bit: the restored intensities rounded (this range is integer), or the [0, 1] image on 0..65535.
    expected = (np.rint(restored.astype(np.float64)) if float(vmin).is_integer() and float(vmax).is_integer()
                else np.rint(result.reconstruction.astype(np.float64) * 65535))  # fmt: skip
    assert png.shape == (32, 32) and png.dtype.itemsize == 2 and np.array_equal(png.astype(np.float64), expected)
    assert png.std() > 0  # not a blank image


def test_info(compressed, capsys, run):
    out, report = compressed
    code, text, _ = run(["info", out])
    assert code == 0
    assert "siren" in text and "32 x 32" in text and f"{out.stat().st_size} bytes" in text
    code, text, _ = run(["info", out, "--json"])
    info = json.loads(text)
    assert info["n_params"] == report["n_params"] and info["bpp_file"] == pytest.approx(report["bpp_file"])


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "CRC"),
        (lambda d: b"\x89PNG" + d[4:], "magic"),
        (lambda d: b"", "magic"),
    ],
)
def test_bad_sinco_files_give_one_line_and_exit_2(compressed, tmp_path, capsys, mangle, message, run):
    out, _ = compressed
    bad = tmp_path / "bad.sinco"
    bad.write_bytes(mangle(out.read_bytes()))
    for cmd in (["info", bad], ["decompress", bad, "-o", tmp_path / "bad.npy"]):
        code, stdout, err = run(cmd)
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("sinco: error:") and message in err
    assert not (tmp_path / "bad.npy").exists()


def test_bad_arguments_give_one_line_and_exit_2(nifti_volume, tmp_path, capsys, run):
    cases = [
        (["compress", nifti_volume, "-o", tmp_path / "a.sinco"], "--slice K"),
        (["compress", nifti_volume, "--slice", 9, "-o", tmp_path / "a.sinco"], "--slice 9: out of range"),
        (["compress", tmp_path / "nope.nii.gz", "--slice", 0, "-o", tmp_path / "a.sinco"], "no such file"),
        (["compress", nifti_volume, "--slice", 0, "--arch", "siren", "--bpp", 0.001, "-o", tmp_path / "a.sinco", "--steps", 1], "too low"),
        (["compress", nifti_volume, "--slice", 0, "--device", "tpu", "-o", tmp_path / "a.sinco"], "--device 'tpu'"),
        (["compress", nifti_volume, "--slice", 0, "-o", nifti_volume, "--force"], "overwrite the input"),
        (["decompress", tmp_path / "none.sinco", "-o", tmp_path / "a.npy"], "no such file"),
        (["decompress", tmp_path / "none.sinco", "-o", tmp_path / "a.jpg"], "unsupported output format"),
    ]
    for args, message in cases:
        code, _, err = run(args)
        assert code == 2, args
        assert err.count("\n") == 1 and message in err, (args, err)
    assert not (tmp_path / "a.sinco").exists()


def test_existing_output_needs_force(compressed, nifti_volume, capsys, run):
    out, _ = compressed
    before = out.read_bytes()
    code, _, err = run(["compress", nifti_volume, "--slice", 2, "-o", out, "--bpp", 4, "--steps", 2, "--quiet"])
    assert code == 2 and "--force" in err
    assert out.read_bytes() == before
    code, _, _ = run(["compress", nifti_volume, "--slice", 2, "-o", out, "--bpp", 4, "--steps", 2, "--quiet", "--force"])
    assert code == 0 and out.read_bytes() != before


def test_console_script_reports_errors_without_traceback(tmp_path, run):
    bad = tmp_path / "bad.sinco"
    bad.write_bytes(b"SNCO\x01" + b"\0" * 10)
    proc = subprocess.run([sys.executable, "-m", "sinco", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "sinco: error: truncated .sinco file: 15 bytes, the header alone needs 50\n"
    assert "Traceback" not in proc.stderr


def test_fast_preset_uses_lbfgs_for_pe_mlp_and_counts_evaluations(nifti_volume, tmp_path, capsys, run):
    out = tmp_path / "pe.sinco"
    code, stdout, err = run(["compress", nifti_volume, "--slice", 1, "-o", out, "--arch", "pe-mlp", "--bpp", 8, "--depth", 2,
                             "--preset", "fast", "--steps", 30, "--lbfgs-after", 10, "--json", "--quiet"])  # fmt: skip
    assert code == 0, err
    sidecar = json.loads(out.with_name("pe.sinco.json").read_text())
    fit = sidecar["fit"]
    assert (fit["optimizer"], fit["steps"], fit["lbfgs_after"], fit["schedule"]) == ("adam+lbfgs", 30, 10, "constant")
    assert 0 <= sidecar["result"]["best_step"] <= 30
    assert set(sidecar["result"]["phase_seconds"]) == {"adam", "lbfgs"}
    assert sidecar["torch_threads"] == torch.get_num_threads()  # a fit's bytes depend on it
    code, _, err = run(["compress", nifti_volume, "--slice", 1, "-o", tmp_path / "x.sinco", "--arch", "pe-mlp", "--lbfgs-after", -1,
                          "--quiet"])  # fmt: skip
    assert code == 2 and "--lbfgs-after -1" in err
