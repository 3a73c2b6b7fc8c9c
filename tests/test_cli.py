"""Errors a user can cause end in one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genie.__main__ import main


def _one_line_error(capsys, argv, *, code=2) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_missing_run_folder_is_one_line(capsys, tmp_path):
    err = _one_line_error(capsys, ["eval", str(tmp_path / "nowhere")])
    assert err.startswith("genie eval: error:") and "nowhere" in err
    err = _one_line_error(capsys, ["probe", str(tmp_path / "nowhere")])
    assert err.startswith("genie probe: error:") and "nowhere" in err


def test_missing_dataset_is_one_line(capsys, tiny_run, tmp_path):
    # tiny_run trained on synthetic clips: there is no dataset on disk to evaluate on.
    err = _one_line_error(capsys, ["eval", str(tiny_run), "--data-dir", str(tmp_path)])
    assert "dataset 'synthetic' does not exist" in err and "build it" in err


def test_later_stage_without_its_tokenizer_is_one_line(capsys, tmp_path):
    err = _one_line_error(
        capsys, ["train", "dynamics", "--config", "coinrun_tiny", "--run-dir", str(tmp_path)]
    )
    assert "tokenizer" in err


def test_python_dash_m_entry_points_report_the_same_way(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "genie.evaluate", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("genie eval: error:")


def test_overrides_of_a_frozen_model_are_refused_naming_its_saved_config(capsys, tmp_path):
    from genie.train import parse_args

    argv = ["train", "dynamics", "--tokenizer.num-codes", "5", "--run-dir", str(tmp_path)]
    err = _one_line_error(capsys, argv)
    assert "--tokenizer.num-codes" in err and "RUN_DIR/tokenizer/config.json" in err
    # Co-training trains the LAM (its overrides count) and reads the tokenizer (refused).
    _, config = parse_args(["lam_dynamics", "--lam.num-codes", "8", "--run-dir", str(tmp_path)])
    assert config.lam.num_codes == 8
    with pytest.raises(ValueError, match="tokenizer/config.json"):
        parse_args(["lam_dynamics", "--tokenizer.patch-size=4"])


@pytest.mark.parametrize("module", ["data_pipelines.coinrun", "data_pipelines.video_folder"])
def test_dataset_builders_report_a_bad_name_in_one_line(module, tmp_path):
    args = ["--name", "bad/name", "--data-dir", str(tmp_path)]
    if module.endswith("video_folder"):
        args = [str(tmp_path), *args]
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: dataset name 'bad/name' must be a plain folder name, e.g. 'coinrun_tiny'"
    ]
