"""benchmarks/gpu.py in its dry mode (the demo's tiny config, a few steps, on this CPU): the
script a GPU session runs must not be the first to find its own bugs."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import gpu


def test_dry_run_writes_every_figure(tmp_path):
    rng = np.random.default_rng(0)
    clips = tmp_path / "clips.npz"
    np.savez_compressed(
        clips,
        train=rng.integers(0, 256, (6, 16, 64, 64, 3), dtype=np.uint8),
        test=rng.integers(0, 256, (4, 16, 64, 64, 3), dtype=np.uint8),
    )
    out = tmp_path / "gpu.json"
    gpu.main(["--dry", "--clips", str(clips), "--out", str(out), "--stages", "tokenizer", "lam"])
    report = json.loads(out.read_text())
    assert report["dry"] and report["dtype"] == "bfloat16" and report["config"] == "coinrun_tiny"
    assert [r["stage"] for r in report["training"]] == ["tokenizer", "lam"]
    for result in report["training"]:
        assert result["frames_per_s"] > 0 and result["tflops_per_step"] > 0
        assert result["mfu"] is None  # no peak rate is known for a CPU
    assert report["play"]["fps"] > 0 and report["play"]["maskgit_steps"] == 8
    training = report["tokenizer_training"]
    assert len(training["curve"]) == 2 and training["steps"] > 1
    # Uniform random pixels: a prediction that ignores them scores at most 10.8 dB (MSE 1/12 at
    # mid-grey, where the untrained decoder starts), and one on the wrong scale (pixels / 255)
    # about 4.8 dB; 2 seconds of training cannot reconstruct noise much beyond that.
    assert all(9.0 < point["test_psnr"] < 14.0 for point in training["curve"])


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
