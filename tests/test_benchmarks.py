"""benchmarks/gpu.py in its dry mode (the demo's tiny config, a few steps, on this CPU): the
script a GPU session runs must not be the first to find its own bugs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import gpu
from benchmarks.train import step_flops
from genie.config import load_experiment


def write_clips(tmp_path, train: int, test: int):
    """Random 16-frame clips in the layout of `gpu.py --export-clips`: its part 3 reads them."""
    rng = np.random.default_rng(0)
    clips = tmp_path / "clips.npz"
    np.savez_compressed(
        clips,
        train=rng.integers(0, 256, (train, 16, 64, 64, 3), dtype=np.uint8),
        test=rng.integers(0, 256, (test, 16, 64, 64, 3), dtype=np.uint8),
    )
    return clips


def test_dry_run_writes_every_figure(tmp_path):
    clips = write_clips(tmp_path, train=6, test=4)
    out = tmp_path / "gpu.json"
    gpu.main(["--dry", "--clips", str(clips), "--out", str(out), "--stages", "tokenizer", "lam"])
    report = json.loads(out.read_text())
    assert report["dry"] and report["dtype"] == "bfloat16" and report["config"] == "coinrun_tiny"
    assert [r["stage"] for r in report["training"]] == ["tokenizer", "lam"]
    config = load_experiment("coinrun_tiny")
    patch = {"tokenizer": config.tokenizer.patch_size, "lam": config.lam.patch_size}
    for result in report["training"]:
        assert result["frames_per_s"] > 0
        # A training step costs about 6 FLOPs per parameter per token (forward 2, backward 4);
        # 4 is a floor that a count missing the matrix products (as a GPU's compiled
        # analysis does) falls far below.
        per_frame = (config.data.image_size // patch[result["stage"]]) ** 2
        tokens = result["batch"] * config.data.clip_frames * per_frame
        assert result["tflops_per_step"] * 1e12 >= 4 * result["params"] * tokens
        assert result["mfu"] is None  # no peak rate is known for a CPU
    assert report["play"]["fps"] > 0 and report["play"]["maskgit_steps"] == 8
    training = report["tokenizer_training"]
    assert len(training["curve"]) == 2 and training["steps"] > 1
    # Uniform random pixels: a prediction that ignores them scores at most 10.8 dB (MSE 1/12 at
    # mid-grey, where the untrained decoder starts), and one on the wrong scale (pixels / 255)
    # about 4.8 dB; 2 seconds of training cannot reconstruct noise much beyond that.
    assert all(9.0 < point["test_psnr"] < 14.0 for point in training["curve"])


def test_profiled_dry_run_reports_the_busiest_operations(tmp_path):
    """--profile: each timed stage also leaves a jax.profiler trace beside the report, and the
    report names its busiest operations (on a CPU only the host's: XLA's thunks and the
    Python calls around them; on a GPU also the device's kernels)."""
    clips = write_clips(tmp_path, train=4, test=2)
    out = tmp_path / "gpu.json"
    gpu.main(["--dry", "--clips", str(clips), "--out", str(out), "--stages", "lam", "--profile"])
    (result,) = json.loads(out.read_text())["training"]
    assert list((tmp_path / "profile" / "lam").glob("plugins/profile/*/*.xplane.pb"))
    processes = result["profile"]["processes"]
    host = next(entry for name, entry in processes.items() if "CPU" in name)
    assert host["busy_ms"] > 0 and 0 < len(host["top"]) <= 15
    shares = [row["share"] for row in host["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0 + 1e-6


def test_trace_summary_sums_event_durations_by_process_and_name(tmp_path):
    """A hand-written trace: durations (microseconds) summed per process and name, shares of
    the process's total, metadata and instant events ignored, the newest trace read."""
    import gzip
    import os

    from benchmarks.trace_summary import format_summary, summarize

    def write(run, events, mtime):
        folder = tmp_path / "plugins" / "profile" / run
        folder.mkdir(parents=True)
        path = folder / "host.trace.json.gz"
        with gzip.open(path, "wt") as file:
            json.dump({"traceEvents": events}, file)
        os.utime(path, (mtime, mtime))

    meta = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
    ]
    write("old", [*meta, {"ph": "X", "pid": 1, "name": "stale", "dur": 9e9}], 1_000)
    write(
        "new",
        [
            *meta,
            {"ph": "X", "pid": 1, "name": "gemm", "dur": 3000.0},
            {"ph": "X", "pid": 1, "name": "softmax", "dur": 500.0},
            {"ph": "X", "pid": 1, "name": "gemm", "dur": 1500.0},
            {"ph": "X", "pid": 2, "name": "launch", "dur": 250.0},
            {"ph": "i", "pid": 1, "name": "marker"},
        ],
        2_000,
    )
    summary = summarize(tmp_path, top=5)
    gpu_entry = summary["processes"]["/device:GPU:0"]
    assert list(summary["processes"]) == ["/device:GPU:0", "/host:CPU"]
    assert gpu_entry["busy_ms"] == 5.0 and gpu_entry["events"] == 3
    assert gpu_entry["top"] == [
        {"name": "gemm", "ms": 4.5, "share": 0.9},
        {"name": "softmax", "ms": 0.5, "share": 0.1},
    ]
    assert summary["processes"]["/host:CPU"]["top"] == [
        {"name": "launch", "ms": 0.25, "share": 1.0}
    ]
    assert "90.0%" in format_summary(summary)


def test_step_flops_counts_a_matrix_product_by_hand():
    lowered = jax.jit(lambda a, b: a @ b).lower(jnp.ones((64, 32)), jnp.ones((32, 16)))
    assert step_flops(lowered) == 2 * 64 * 32 * 16


def test_export_writes_the_first_clips_of_each_split(tmp_path, monkeypatch):
    from data_pipelines import loader

    frames = {s: np.full((5, 4, 8, 8, 3), i, np.uint8) for i, s in enumerate(("train", "test"))}
    calls = []

    def read_clips(name, split, data_dir=None, limit=None):
        calls.append((name, split, limit))
        return {"frames": frames[split][:limit]}

    monkeypatch.setattr(loader, "read_clips", read_clips)
    shapes = gpu.export_clips(tmp_path / "c.npz", "coinrun_cpu", None, train=3, test=2)
    assert shapes == {"train": [3, 4, 8, 8, 3], "test": [2, 4, 8, 8, 3]}
    assert calls == [("coinrun_cpu", "train", 3), ("coinrun_cpu", "test", 2)]
    stored = np.load(tmp_path / "c.npz")
    assert stored["test"].max() == 1 and stored["train"].shape == (3, 4, 8, 8, 3)
