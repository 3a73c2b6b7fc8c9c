"""The one metrics writer: TensorBoard event files, a JSONL log and PNG images in a run folder."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("genie")


def setup_logging() -> None:
    """genie's own messages at INFO; the libraries' (orbax, absl, jax) at WARNING only."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)


class MetricWriter:
    """Writes scalars to `metrics.jsonl` and TensorBoard, images to `images/` and TensorBoard.

    Only process 0 of a multi-host job writes; the others get a writer that does nothing.
    """

    def __init__(self, folder: Path, *, enabled: bool = True):
        self.folder = Path(folder)
        self.enabled = enabled
        self._tensorboard = None
        self._jsonl = None
        if enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.folder / "metrics.jsonl", "a")

    @property
    def tensorboard(self):
        if self._tensorboard is None and self.enabled:
            from tensorboardX import SummaryWriter  # imported late: it is slow to import

            self._tensorboard = SummaryWriter(str(self.folder / "tensorboard"))
        return self._tensorboard

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        record = {"step": int(step)} | {
            k: (v if math.isfinite(v) else str(v)) for k, v in values.items()
        }
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(name, value, step)

    def image(self, step: int, name: str, image: np.ndarray) -> Path | None:
        """Saves a uint8 (H, W, 3) image as images/<name>_<step>.png and to TensorBoard."""
        if not self.enabled:
            return None
        path = self.folder / "images" / f"{name}_{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
        self.tensorboard.add_image(name, np.asarray(image), step, dataformats="HWC")
        return path

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(folder: Path) -> list[dict]:
    """Reads back `metrics.jsonl` (for tests, plots and resume checks)."""
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_safe(value):
    """Replaces non-finite floats by the strings "inf", "-inf", "nan" (JSON has no infinity)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.generic):
        return value.item()
    return value
