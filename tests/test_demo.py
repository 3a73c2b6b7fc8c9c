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


def test_targets_table_reads_the_test_reports_and_marks_each_target(tmp_path):
    from genie.demo import targets_table

    (tmp_path / "probe_test").mkdir()
    (tmp_path / "eval_test").mkdir()
    probe = {
        "transitions": 100,
        "true_actions": {
            "nmi": 0.25,
            "horizontal": {"probe_accuracy": 0.50, "chance_accuracy": 0.40},
        },
    }
    inferred, repeat = [20.0, 19.5, 18.0, 17.0], [20.5, 19.0, 19.5, 17.5]
    report = {
        "clips": 8,
        "reconstruction": {"psnr": 24.5},
        "rollout": {"psnr": {"inferred_actions": inferred, "repeat_last_frame": repeat}},
        "delta_psnr": {
            "random_used_codes": {"t4": 0.4},
            "lam_usage": {"perplexity": 3.2},
        },
    }
    (tmp_path / "probe_test" / "probe.json").write_text(json.dumps(probe))
    (tmp_path / "eval_test" / "eval.json").write_text(json.dumps(report))
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in targets_table(str(tmp_path)).splitlines()
        if line.startswith("| ") and not line.startswith("| metric")
    }
    assert rows["LAM: NMI with collapsed true actions"] == ["0.250", "0.2", "yes |"]
    assert rows["LAM: codebook perplexity"] == ["3.200", "3.0", "yes |"]
    # 0.50 - 0.40 = 0.10 < 0.15 above chance.
    assert rows["left/none/right probe accuracy minus chance (held out)"][2] == "**no** |"
    assert rows["ΔtPSNR@4, random over used codes (dB)"][2] == "**no** |"
    assert rows["tokenizer reconstruction PSNR (dB)"][2] == "yes |"
    # Gaps -0.5, +0.5, -1.5, -0.5: t=3 is more than 1 dB below repeating the last frame.
    gaps = rows["rollout (inferred actions) minus repeat-last-frame, dB by t"]
    assert gaps[0] == "-0.50, +0.50, -1.50, -0.50" and gaps[2] == "**no** |"


def test_a_stopped_stage_ends_the_demo_before_the_next_stage(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C saves the stage it hits; the demo must then stop, not train the next
    stage on a half-trained model."""
    import data_pipelines.coinrun
    import genie.train
    from genie import demo

    monkeypatch.setattr(data_pipelines.coinrun, "build_coinrun", lambda *a, **k: None)
    started = []

    def fake_train(config, stage):
        started.append(stage)
        return {"metrics": {}, "folder": tmp_path / stage, "stopped": "SIGINT"}

    monkeypatch.setattr(genie.train, "train", fake_train)
    with pytest.raises(SystemExit, match="SIGINT received: tokenizer saved in .*tokenizer; run"):
        demo.main(["--data-dir", str(tmp_path)])
    assert started == ["tokenizer"]
