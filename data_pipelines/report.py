"""What a built dataset looks like, for people: a strip of sample frames and a summary.

Kept apart from `storage` (paths and build markers) and `loader` (reading clips) so imports
run one way: report -> loader -> storage.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from data_pipelines import loader, storage


def write_sample_png(path: pathlib.Path, rows: int = 4, columns: int = 16) -> pathlib.Path:
    """A strip of `rows` clips (rows) by their first `columns` frames, as `<path>/sample.png`."""
    from PIL import Image

    info = loader.dataset_info_at(path)
    split = "train" if "train" in info["splits"] else next(iter(info["splits"]))
    frames = loader.read_clips_at(path, split, limit=rows)["frames"][:, :columns]
    m, t, h, w, _ = frames.shape
    gap = 2
    canvas = np.full((m * (h + gap) - gap, t * (w + gap) - gap, 3), 255, np.uint8)
    for i in range(m):
        for j in range(t):
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = frames[
                i, j
            ]
    Image.fromarray(canvas).save(path / storage.SAMPLE_FILE)
    return path / storage.SAMPLE_FILE


def summarize(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """One paragraph a person can read: clips per split, frames, bytes on disk, build time."""
    path = storage.dataset_path(name, data_dir)
    info = loader.dataset_info(name, data_dir=data_dir)
    build = storage.read_build_info(path)
    t = info["clip_frames"]
    h, w = info["image_size"]
    clips = sum(info["splits"].values())
    per_split = ", ".join(f"{s} {n:,}" for s, n in info["splits"].items())
    lines = [
        f"dataset {name!r} at {path}",
        f"  clips: {per_split} (total {clips:,}) of {t} frames at {h}x{w} = {clips * t:,} frames",
        f"  on disk: {storage.disk_bytes(path) / 1e6:,.1f} MB; "
        f"actions stored: {info['has_actions']}",
    ]
    if "build_seconds" in build:
        lines.append(f"  built in {build['build_seconds']:.1f} s on {build.get('built_at', '?')}")
    lines.append(f"  sample frames: {path / storage.SAMPLE_FILE}")
    return "\n".join(lines)
