"""A real two-process job on this machine: jax.distributed on localhost, one CPU device per
process, gloo collectives. It trains, resumes where an uninterrupted job would be, and stops
cleanly with a checkpoint when either process alone gets SIGTERM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _job(run_dir: Path, steps: int, sigterm: dict[int, int] | None = None) -> list[dict]:
    """Runs both processes to the end; returns their reports (process 0 first)."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.multihost_worker",
                str(pid),
                str(port),
                str(run_dir),
                str(steps),
                str((sigterm or {}).get(pid, 0)),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    reports = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("the two-process job hung (a collective waited for a process that left)")
        assert process.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_two_processes_train_stop_together_and_resume(tmp_path):
    whole = _job(tmp_path / "whole", 6)
    # Both processes computed the same global losses (one global batch of 4, 2 from each).
    assert whole[0]["losses"] == whole[1]["losses"] and len(whole[0]["losses"]) == 6
    assert whole[0]["saved"] == [3, 6]
    assert whole[0]["images"] == ["tokenizer_0000003.png", "tokenizer_0000006.png"]

    # SIGTERM to process 1 alone after its second batch: both stop at step 2 and save it (a
    # process saving alone would wait for the other in orbax's barrier forever).
    stopped = _job(tmp_path / "halves", 6, sigterm={1: 2})
    assert stopped[0]["saved"] == stopped[1]["saved"] == [2]
    assert sorted(stopped[0]["losses"]) == sorted(stopped[1]["losses"]) == ["1", "2"]

    # The same when process 0 (the one that writes logs and pictures) gets it.
    stopped = _job(tmp_path / "stopped_0", 6, sigterm={0: 2})
    assert stopped[0]["saved"] == stopped[1]["saved"] == [2]

    # Resumed on both hosts into the sharded model: the rest of the uninterrupted job.
    resumed = _job(tmp_path / "halves", 6)
    assert resumed[0]["saved"] == [2, 3, 6]
    for step in ("3", "4", "5", "6"):
        assert resumed[0]["losses"][step] == pytest.approx(whole[0]["losses"][step], rel=1e-6)
        assert resumed[1]["losses"][step] == resumed[0]["losses"][step]
