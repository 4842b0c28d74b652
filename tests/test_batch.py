"""``sinco compress-batch``: Dask tasks per slice, byte-identical volumes, resumption, failures, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_phantom

from sinco.cli import main

pytest.importorskip("distributed", reason="compress-batch needs the cluster extra: pip install -e '.[test,cluster]'")

STEPS = ["--arch", "siren", "--steps", "20"]
SINCO = [sys.executable, "-m", "sinco"]


def _volume(path: Path, n: int = 6, size: int = 24) -> Path:
    """A NIfTI ``(size, size, n)``: slice 0 empty (constant), the others phantoms of growing contrast."""
    import nibabel as nib

    vol = np.stack([np.zeros((size, size))] + [make_phantom(size, size) * (1 + 0.1 * k) for k in range(n - 1)], axis=-1)
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _sequential(path: Path, out: Path, *extra: str) -> bytes:
    """``sinco compress --slices all`` with one torch thread, as a batch worker with K=1 fits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["compress", str(path), "--slices", "all", "-o", str(out), "--quiet", *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    return out.read_bytes()


def _fit_log(out: Path) -> list[dict]:
    log = out / ".sinco-work" / "fits.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def client():
    """An in-process Dask cluster (one worker, two threads): tasks run here, without process start-up."""
    import torch
    from distributed import Client

    threads = torch.get_num_threads()
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c
    torch.set_num_threads(threads)


def _run_in_process(inputs: list[str], out: Path, client, *extra: str) -> tuple[int, object]:
    """The command's library path (plan, run) on ``client``."""
    from sinco.cli import build_parser
    from sinco.cli.options import codec_and_fit_config
    from sinco.compression.batch import BatchConfig, ClusterConfig, plan_batch, run_batch

    args = build_parser().parse_args(["compress-batch", *inputs, "--out", str(out), *extra])
    codec, fit = codec_and_fit_config(args)  # as the command does (e.g. the regularized default data term)
    config = BatchConfig(codec=codec, fit_config=fit, slices=args.slices, axis=args.axis, device="cpu", seg_model=args.seg_model,
                         mask_glob=args.mask_glob)  # fmt: skip
    plans = plan_batch(inputs, config=config, out_dir=out, force=False)
    result = run_batch(plans, config=config, cluster=ClusterConfig(), out_dir=out, progress=False, client=client)
    return (3 if result.failed else 0), result


@pytest.mark.slow
def test_masks_by_glob_and_2d_inputs_give_the_files_of_compress(tmp_path, client):
    import nibabel as nib
    import torch
    from PIL import Image

    from sinco.seg.network import UNetConfig, build_unet, save_checkpoint

    for case in ("case1", "case2"):
        (tmp_path / case).mkdir()
        _volume(tmp_path / case / "flair.nii.gz", n=4)
        labels = np.zeros((24, 24, 4), np.uint8)
        labels[8:14, 6:12, 1:3] = 1  # slices 1-2 have tumour, slice 3 none: fitted on the MSE alone
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / case / "mask.nii.gz"))
    torch.manual_seed(0)
    unet = UNetConfig(channels=(4, 8), strides=(2,))
    seg = tmp_path / "seg.pt"
    save_checkpoint(seg, net=build_unet(unet), config=unet, threshold=0.5, training={})
    png = tmp_path / "flat" / "slice.png"
    png.parent.mkdir()
    Image.fromarray((make_phantom(24, 24) * 100).astype(np.uint16)).save(png)

    out = tmp_path / "out"
    regularizer = ["--seg-model", str(seg), "--mask-glob", "mask.nii.gz", "--lam", "0.5"]
    code, result = _run_in_process([str(tmp_path / "case*" / "flair.nii.gz")], out, client, *STEPS, *regularizer)
    assert code == 0 and result.fitted == 6 and result.skipped == 0
    reference = _sequential(tmp_path / "case1" / "flair.nii.gz", tmp_path / "ref.sinco", *STEPS, "--seg-model", str(seg),
                            "--mask", str(tmp_path / "case1" / "mask.nii.gz"), "--lam", "0.5")  # fmt: skip
    assert (out / "case1" / "flair.sinco").read_bytes() == reference
    entry = result.manifest["inputs"][0]
    assert entry["mask"] == str(tmp_path / "case1" / "mask.nii.gz") and entry["status"] == "done"
    assert [s["lam"] for s in entry["slices"][1:]] == [0.5, 0.5, 0.0] and "dice" in entry["slices"][1]

    code, result = _run_in_process([str(png.parent)], tmp_path / "out2", client, *STEPS)
    assert code == 0 and result.manifest["inputs"][0]["kind"] == "image"
    torch.set_num_threads(1)
    assert main(["compress", str(png), "-o", str(tmp_path / "ref2.sinco"), "--quiet", *STEPS]) == 0
    assert (tmp_path / "out2" / "slice.sinco").read_bytes() == (tmp_path / "ref2.sinco").read_bytes()


def test_a_slice_failing_twice_is_reported_and_the_rest_completes(tmp_path, client):
    import nibabel as nib

    good = _volume(tmp_path / "good.nii.gz", n=3)
    bad = _volume(tmp_path / "bad.nii.gz", n=4)
    out = tmp_path / "out"
    from sinco.cli import build_parser
    from sinco.codec.config import CodecConfig
    from sinco.codec.inr.config import INRFitConfig
    from sinco.compression.batch import BatchConfig, ClusterConfig, plan_batch, run_batch

    args = build_parser().parse_args(["compress-batch", str(good), "--out", str(out)])
    config = BatchConfig(codec=CodecConfig(arch="siren"), fit_config=INRFitConfig(steps=20), device="cpu", axis=args.axis)
    plans = plan_batch([str(good), str(bad)], config=config, out_dir=out, force=False)
    # The file changes after planning: its slice 2 now holds a NaN, which the worker refuses, twice.
    vol = np.asarray(nib.load(str(bad)).dataobj)
    vol[3, 3, 2] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(bad))
    result = run_batch(plans, config=config, cluster=ClusterConfig(), out_dir=out, progress=False, client=client)
    assert [(Path(p).name, i) for p, i, _ in result.failed] == [("bad.nii.gz", 2)]
    assert "NaN" in result.failed[0][2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["counts"]["failed"] == 1
    good_entry, bad_entry = manifest["inputs"]
    assert good_entry["status"] == "done" and (out / "good.sinco").is_file()
    assert bad_entry["status"] == "failed" and not (out / "bad.sinco").exists()
    assert [s["status"] for s in bad_entry["slices"]] == ["done", "done", "failed", "done"]
    assert "NaN" in bad_entry["slices"][2]["error"]
    assert manifest["config"]["fit"]["steps"] == 20 and manifest["sinco_version"]
    # A rerun fits nothing that is done (the failed slice fails again: the file still holds the NaN).
    again = run_batch(plans, config=config, cluster=ClusterConfig(), out_dir=out, progress=False, client=client)
    assert again.fitted == 0 and again.skipped == 4 and len(again.failed) == 1


def _wait_for_fits(out: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fits = _fit_log(out)
        if len(fits) >= n:
            return fits
        if proc.poll() is not None:
            pytest.fail(f"compress-batch ended (rc {proc.returncode}) before {n} fits: {proc.stderr.read()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {n} fits within {timeout} s")


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A shell's background jobs ignore SIGINT, and a child inherits that: give it the default, as a terminal would.
    return subprocess.Popen([*SINCO, "compress-batch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)  # fmt: skip


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_a_killed_worker_and_an_interrupted_run_end_in_the_sequential_file_with_no_slice_fitted_twice(tmp_path):
    """Two LocalCluster worker processes: one is killed mid-run, then the run gets Ctrl-C, then it is rerun."""
    vol = _volume(tmp_path / "vol.nii.gz", n=13)
    out = tmp_path / "out"
    args = [str(vol), "--out", str(out), "--workers", "2", "--quiet", "--arch", "siren", "--steps", "100"]
    proc = _start(args)
    first = _wait_for_fits(out, 1, proc)
    victim = int(first[0]["worker"].rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)  # it dies in its next fit; the nanny starts a new worker and Dask reruns the task
    killed_at = time.time()
    _wait_for_fits(out, 4, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    first_run = _fit_log(out)
    assert manifest["status"] == "interrupted" and manifest["counts"]["done"] == 1 + len(first_run) < 13
    assert not [f for f in first_run if f["worker"].endswith(f":{victim}") and f["finished"] > killed_at + 1]
    assert not (out / "vol.sinco").exists()
    records = {p: p.stat().st_mtime_ns for p in (out / ".sinco-work").glob("*/slice_*.sinco")}
    assert len(records) == len(first_run)

    again = subprocess.run([*SINCO, "compress-batch", *args, "--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout)
    assert counts["skipped_done_before"] == len(first_run) and counts["fitted_this_run"] == 12 - len(first_run)
    assert sorted(f["index"] for f in _fit_log(out)) == list(range(1, 13))  # every slice fitted once: none twice
    assert all(p.stat().st_mtime_ns == t for p, t in records.items())  # the finished records were left alone
    assert (out / "vol.sinco").read_bytes() == _sequential(vol, tmp_path / "ref.sinco", "--arch", "siren", "--steps", "100")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and [s["status"] for s in manifest["inputs"][0]["slices"]] == ["done"] * 13
    assert {s["torch_threads"] for s in manifest["inputs"][0]["slices"][1:]} == {1}  # --threads-per-worker default


def test_a_rerun_of_a_finished_batch_starts_no_cluster(tmp_path, client, capsys):
    vol = _volume(tmp_path / "vol.nii.gz", n=3)
    out = tmp_path / "out"
    assert _run_in_process([str(vol)], out, client, *STEPS)[0] == 0
    data = (out / "vol.sinco").read_bytes()
    # No client: if anything were left to fit this would start a LocalCluster.
    assert main(["compress-batch", str(vol), "--out", str(out), "--quiet", "--device", "cpu", *STEPS]) == 0
    assert "3 of 3 slices done (0 fitted now, 2 before)" in capsys.readouterr().out
    assert (out / "vol.sinco").read_bytes() == data


def test_the_default_family_grid_gives_the_file_of_compress(tmp_path, client, capsys):
    vol = _volume(tmp_path / "vol.nii.gz", n=3, size=40)
    out = tmp_path / "out"
    grid = ["--steps", "40", "--lambda-rd", "1e-3"]  # no --arch: the default family, grid
    code, result = _run_in_process([str(vol)], out, client, *grid)
    assert code == 0 and result.fitted == 2
    assert (out / "vol.sinco").read_bytes() == _sequential(vol, tmp_path / "ref.sinco", *grid)
    capsys.readouterr()
    assert main(["info", str(out / "vol.sinco")]) == 0
    assert "family      grid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nothing*.nii.gz"], "INPUT '{tmp}/nothing*.nii.gz': matches no image file"),
        (["{tmp}/missing.nii.gz"], "INPUT '{tmp}/missing.nii.gz': no such file or folder"),
        (["{tmp}/empty"], "INPUT '{tmp}/empty': folder holds no image file"),
        (["{vol}", "--workers", "0"], "--workers 0: must be a positive integer"),
        (["{vol}", "--threads-per-worker", "0"], "--threads-per-worker 0: must be a positive integer"),
        (["{vol}", "--scheduler", "cluster.example:8786"], "--scheduler 'cluster.example:8786': expected 'local' or an address"),
        (["{vol}", "--mask-glob", "mask.nii.gz"], "--mask-glob needs --seg-model"),
        (["{vol}", "--seg-model", "{tmp}/seg.pt", "--mask-glob", "x"], "--seg-model '{tmp}/seg.pt': no such file"),
        (["{vol}", "--slices", "1:99"], "--slices '1:99': must satisfy 0 <= A < B <= 6"),
        (["{vol}", "--bpp", "0.01"], "--bpp 0.01: too low for a siren"),
        (["{vol}", "{tmp}/vol.npy"], "both would be written to 'vol.sinco'; rename one"),
        (["{vol}", "--out", "{vol}"], "is a file, expected a folder"),
    ],
)
def test_bad_batch_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    vol = _volume(tmp_path / "vol.nii.gz")
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "vol.npy", np.stack([make_phantom(24, 24)] * 3, axis=-1))
    fill = {"tmp": str(tmp_path), "vol": str(vol)}
    argv = [a.format(**fill) for a in args]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "out")]
    code = main(["compress-batch", *argv, *out, *STEPS])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sinco: error: ") and err.count("\n") == 1
    assert message.format(**fill) in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_existing_output_is_not_replaced_without_force(tmp_path, capsys):
    vol = _volume(tmp_path / "vol.nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "vol.sinco").write_bytes(b"someone else's file")
    assert main(["compress-batch", str(vol), "--out", str(tmp_path / "out"), *STEPS]) == 2
    assert "vol.sinco' exists (pass --force to replace it)" in capsys.readouterr().err


def test_mask_glob_finds_one_file_per_input(tmp_path):
    from sinco.compression.batch import find_mask
    from sinco.errors import InputError

    for name in ("a.nii.gz", "a_seg.nii.gz", "b.nii.gz", "b_seg.nii.gz", "b_seg2.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert find_mask(tmp_path / "a.nii.gz", "{stem}_seg.nii.gz") == tmp_path / "a_seg.nii.gz"
    with pytest.raises(InputError, match=r"--mask-glob '\{stem\}_seg\*': 2 files"):
        find_mask(tmp_path / "b.nii.gz", "{stem}_seg*")
    with pytest.raises(InputError, match="no file"):
        find_mask(tmp_path / "a.nii.gz", "missing*")


@pytest.mark.slow
def test_a_running_scheduler_is_used_by_address(tmp_path, capsys):
    import torch
    from distributed import LocalCluster

    vol = _volume(tmp_path / "vol.nii.gz", n=3)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        with LocalCluster(processes=False, protocol="tcp://", n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
            address = cluster.scheduler_address
            assert address.startswith("tcp://")
            code = main(["compress-batch", str(vol), "--out", str(out), "--scheduler", address, "--device", "cpu", "--json", *STEPS])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["fitted_this_run"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cluster"]["scheduler"] == address and manifest["status"] == "complete"
    assert (out / "vol.sinco").read_bytes() == _sequential(vol, tmp_path / "ref.sinco", *STEPS)


# ------------------------------------------------------------------------------------- grid3d: one task per slab
GRID3D = ["--arch", "grid3d", "--slab", "2", "--bpp", "10", "--steps", "20"]


def _slab_volume(path: Path) -> Path:
    """A NIfTI ``(24, 24, 6)``: slices 0-1 empty (a constant slab of 2), the others a smooth pattern changing slowly."""
    import nibabel as nib

    z, y, x = np.meshgrid(np.arange(4), np.arange(24), np.arange(24), indexing="ij")
    moving = 100 + 80 * np.sin(x / 4 + z / 3) * np.cos(y / 5)
    vol = np.concatenate([np.zeros((2, 24, 24)), moving]).astype(np.float32)
    nib.save(nib.Nifti1Image(np.moveaxis(vol, 0, 2), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def test_grid3d_volumes_run_one_task_per_slab_and_give_the_file_of_compress(tmp_path, client, capsys):
    import nibabel as nib

    vol = _slab_volume(tmp_path / "vol.nii.gz")
    out = tmp_path / "out"
    code, result = _run_in_process([str(vol)], out, client, *GRID3D)
    assert code == 0 and result.fitted == 2 and result.skipped == 0  # the slabs 2:4 and 4:6; 0:2 is constant
    assert sorted(f["index"] for f in _fit_log(out)) == [2, 4]
    assert (out / "vol.sinco").read_bytes() == _sequential(vol, tmp_path / "ref.sinco", *GRID3D)
    entry = result.manifest["inputs"][0]
    assert [(s["slices"], s["kind"], s["status"]) for s in entry["slabs"]] == [
        ([0, 2], "constant", "done"), ([2, 4], "slab", "done"), ([4, 6], "slab", "done")]  # fmt: skip
    assert entry["slices_done"] == 6 and result.manifest["counts"]["done"] == 6 == result.manifest["counts"]["slices"]
    assert all(s["payload_bytes"] <= s["budget_bytes"] for s in entry["slabs"][1:]) and entry["bpp_file"] <= 10
    # Each slab's PSNR (on its own range) is that of the output file's decode.
    from sinco.codec.volume import decode_slab_volume

    source = np.moveaxis(np.asarray(nib.load(str(vol)).dataobj, dtype=np.float64), 2, 0)
    decoded = decode_slab_volume((out / "vol.sinco").read_bytes())[1].astype(np.float64)
    for slab in entry["slabs"][1:]:
        a, b = slab["slices"]
        span = source[a:b].max() - source[a:b].min()
        assert slab["psnr"] == pytest.approx(10 * np.log10(span**2 / np.mean((decoded[a:b] - source[a:b]) ** 2)), abs=1e-6)
        assert slab["psnr"] > 10 * np.log10(span**2 / np.var(source[a:b]))  # better than the slab's mean: a real fit
    # A rerun fits nothing and starts no cluster; the file is left as it was.
    capsys.readouterr()
    assert main(["compress-batch", str(vol), "--out", str(out), "--quiet", "--device", "cpu", *GRID3D]) == 0
    assert "6 of 6 slices done (0 fitted now, 2 before)" in capsys.readouterr().out
    # Another slice range is another budget per slab: its records are not those of this range (slices share theirs).
    from dataclasses import replace

    from sinco.compression.batch import work_key

    config = result.manifest["config"]
    assert config["slices"] == "all" and config["codec"]["arch"] == "grid3d"
    plan = _plan(vol, "--arch", "grid3d", "--slab", "2")
    assert work_key(plan, image=vol, mask=None) != work_key(replace(plan, slices="2:6"), image=vol, mask=None)
    siren = _plan(vol, *STEPS)
    assert work_key(siren, image=vol, mask=None) == work_key(replace(siren, slices="2:6"), image=vol, mask=None)


def _plan(vol: Path, *extra: str):
    """The batch configuration of ``compress-batch VOL *extra``."""
    from sinco.cli import build_parser
    from sinco.cli.options import codec_and_fit_config
    from sinco.compression.batch import BatchConfig

    args = build_parser().parse_args(["compress-batch", str(vol), "--out", "unused", *extra])
    codec, fit = codec_and_fit_config(args)
    return BatchConfig(codec=codec, fit_config=fit, slices=args.slices, axis=args.axis, device="cpu")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seg-model", "{tmp}/seg.pt", "--mask-glob", "x"], "--seg-model: does not apply to --arch grid3d"),
        (["--slab", "0"], "--slab 0: expected 1..64 slices"),
        (["--bpp", "0.01"], "--bpp 0.01: below the"),
    ],
)
def test_grid3d_batch_refuses_what_cannot_apply_in_one_line(tmp_path, capsys, args, message):
    vol = _slab_volume(tmp_path / "vol.nii.gz")
    (tmp_path / "seg.pt").write_bytes(b"")
    argv = [a.format(tmp=tmp_path) for a in args]
    code = main(["compress-batch", str(vol), "--out", str(tmp_path / "out"), "--arch", "grid3d", "--steps", "20", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sinco: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out" / "manifest.json").exists()
    np.save(tmp_path / "flat.npy", np.ones((24, 24), np.float32))
    code = main(["compress-batch", str(tmp_path / "flat.npy"), "--out", str(tmp_path / "out"), "--arch", "grid3d"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "a 2-D image; --arch grid3d codes volumes" in err


def test_a_grid3d_slab_that_fails_is_reported_by_its_slices_and_no_file_is_written(tmp_path, client):
    import nibabel as nib

    from sinco.cli import build_parser
    from sinco.cli.options import codec_and_fit_config
    from sinco.compression.batch import BatchConfig, ClusterConfig, plan_batch, run_batch

    vol = _slab_volume(tmp_path / "vol.nii.gz")
    out = tmp_path / "out"
    args = build_parser().parse_args(["compress-batch", str(vol), "--out", str(out), "--arch", "grid3d", "--slab", "2", "--lambda-rd",
                                      "1e-3", "--steps", "5"])  # fmt: skip
    codec, fit = codec_and_fit_config(args)
    config = BatchConfig(codec=codec, fit_config=fit, device="cpu", axis=args.axis)
    plans = plan_batch([str(vol)], config=config, out_dir=out, force=False)
    # The file changes after planning: slice 5 (in the slab 4:6) now holds a NaN, which the worker refuses, twice.
    source = nib.load(str(vol))
    voxels = np.asarray(source.dataobj)
    voxels[3, 3, 5] = np.nan
    nib.save(nib.Nifti1Image(voxels, source.affine), str(vol))
    result = run_batch(plans, config=config, cluster=ClusterConfig(), out_dir=out, progress=False, client=client)
    assert result.fitted == 1 and result.failed_units == ["slab 4:6"] and [i for _, i, _ in result.failed] == [4]
    assert "NaN" in result.failed[0][2] and "\n" not in result.failed[0][2]
    entry = result.manifest["inputs"][0]
    assert entry["status"] == "failed" and [s["status"] for s in entry["slabs"]] == ["done", "done", "failed"]
    assert entry["slices_failed"] == 2 and entry["slices_done"] == 4 and not (out / "vol.sinco").exists()
