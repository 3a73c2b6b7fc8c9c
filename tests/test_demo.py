"""`make demo` end to end: CoinRun data, three trained stages, probe, eval and a rollout GIF."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_trains_a_world_that_beats_chance(tmp_path):
    env = dict(os.environ, GENIE_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "genie", "demo"], cwd=tmp_path, env=env, check=True, timeout=1800
    )
    run = tmp_path / "runs" / "coinrun_tiny"
    for stage in ("tokenizer", "lam", "dynamics"):
        assert list((run / stage / "checkpoints").iterdir()), stage
        assert list((run / stage / "images").glob("*.png")), stage
    with Image.open(run / "rollout.gif") as gif:
        assert gif.n_frames > 1
    report = json.loads((run / "eval_test" / "eval.json").read_text())
    text = json.dumps(report)
    assert "reconstruction" in text and "delta" in text.lower()
    keymap = json.loads((run / "keymap.json").read_text())
    assert {"left", "right", "up"} <= set(keymap)
    # Training must have worked: the tokenizer reconstructs well above noise level.
    metrics = [json.loads(line) for line in (run / "tokenizer" / "metrics.jsonl").open()]
    assert math.isfinite(metrics[-1]["psnr"]) and metrics[-1]["psnr"] > 18.0
    assert metrics[-1]["loss"] < metrics[0]["loss"] / 2
