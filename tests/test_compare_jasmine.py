"""benchmarks/compare_jasmine.py without jasmine's code: the matched genie configs and genie's
side of the comparison at the script's tiny size (jasmine itself is never vendored here)."""

from __future__ import annotations

import json

import pytest

from benchmarks import compare_jasmine
from genie.config import STAGES


@pytest.mark.parametrize("name", ["128x2", "256x4"])
def test_every_transformer_of_every_stage_has_the_compared_size(name):
    size = compare_jasmine.SIZES[name]
    config = compare_jasmine.genie_config(size)
    blocks = [
        config.tokenizer.encoder,
        config.tokenizer.decoder,
        config.lam.encoder,
        config.lam.decoder,
        config.dynamics.transformer,
    ]
    assert {(b.width, b.depth, b.heads) for b in blocks} == {(size.width, size.depth, size.heads)}
    assert config.dtype == "float32" and not config.fsdp
    assert (config.tokenizer.patch_size, config.lam.patch_size) == (4, 16)
    assert (config.data.clip_frames, config.data.image_size) == (16, 64)
    assert {config.train(stage).batch_size for stage in STAGES} == {4}


def test_a_folder_that_is_not_a_jasmine_checkout_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a jasmine checkout"):
        compare_jasmine.import_jasmine(tmp_path)


def test_genie_side_runs_and_reports_without_jasmine(tmp_path, capsys):
    out = tmp_path / "compare.json"
    rows = compare_jasmine.main(
        ["--sizes", "tiny", "--stages", "tokenizer", "--steps", "1", "--runs", "1"]
        + ["--out", str(out)]
    )
    assert len(rows) == 1 and rows[0]["jasmine"] == [] and rows[0]["ratio"] is None
    assert rows[0]["genie"][0] > 0 and rows[0]["genie_params"] > 0
    report = json.loads(out.read_text())
    assert report["jasmine"] is None and report["rows"] == rows
    assert "tokenizer" in capsys.readouterr().out
