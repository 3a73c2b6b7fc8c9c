"""Ablation scripts: each trains one stage under named variants and keeps one JSON line per
measurement in docs/ablations/<stage>.jsonl, from which its table is redrawn."""

from __future__ import annotations

import json
from pathlib import Path


def append_row(path: Path, row: dict) -> None:
    """Adds one measurement to the JSON-lines file `path` (created with its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(row) + "\n")


def latest_rows(path: Path) -> list[dict]:
    """The latest measurement of each (base, variant) in `path`, in first-measured order (a
    re-measured variant keeps its history in the file)."""
    latest = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            latest[row["base"], row["variant"]] = row
    return list(latest.values())


def action_classes(config):
    """The classes (and the left/none/right group) that `config`'s dataset declares for its
    true actions (CoinRun's builder writes them), for scoring codes against them; an error
    naming the dataset where it declares none."""
    from data_pipelines.loader import dataset_info
    from genie import metrics

    metadata = dataset_info(config.data.dataset, config.data.data_dir)["build"].get("actions")
    if metadata is None:
        raise SystemExit(
            f"error: dataset {config.data.dataset!r} declares no action classes; rebuild it "
            "with --overwrite"
        )
    return metrics.ActionClasses.from_metadata(metadata, config.data.dataset)
