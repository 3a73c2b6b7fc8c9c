"""The one loader every dataset goes through: grain over the TFDS array_record files.

Training sees frames only: `make_loader` yields uint8 arrays (B, T, H, W, 3) and nothing else,
whatever the dataset stores beside them (true actions, level and episode ids exist for
evaluation and are read with `read_clips`).
"""

from __future__ import annotations

import functools
import os
import pathlib

import grain
import numpy as np

from data_pipelines import storage

data_dir = storage.data_dir

BUILD_HINTS = (
    "build it with `python -m data_pipelines.coinrun --name {name}` (Procgen CoinRun) or "
    "`python -m data_pipelines.video_folder SRC_DIR --name {name}` (a folder of videos)"
)


def _require(name: str, data_dir_path: str | os.PathLike | None) -> pathlib.Path:
    path = storage.dataset_path(name, data_dir_path)
    if not storage.is_complete(path):
        flag = f" --data-dir {path.parent}" if data_dir_path is not None else ""
        hint = BUILD_HINTS.format(name=name + flag)
        state = "is incomplete" if path.exists() else "does not exist"
        raise FileNotFoundError(f"dataset {name!r} {state} at {path}: {hint}")
    return path


def _builder(path: str):
    """The TFDS builder of the dataset at `path`, cached per build: a dataset rebuilt in place
    (`--overwrite`) has a new build-info file, so it gets a fresh builder, not the old one's
    splits and sizes."""
    build_info = pathlib.Path(path) / storage.BUILD_INFO_FILE
    stamp = build_info.stat().st_mtime_ns if build_info.exists() else 0
    return _builder_of_build(path, stamp)


@functools.lru_cache(maxsize=32)
def _builder_of_build(path: str, stamp: int):
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(path)


def dataset_info_at(path: pathlib.Path) -> dict:
    builder = _builder(str(path))
    features = builder.info.features
    t, h, w, _ = features["frames"].shape
    return {
        "name": path.name,
        "path": str(path),
        "splits": {s: info.num_examples for s, info in builder.info.splits.items()},
        "clip_frames": t,
        "image_size": (h, w),
        "has_actions": "actions" in features,
        "features": sorted(features.keys()),
        "build": storage.read_build_info(path),
    }


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Split sizes, clip length, image size and whether true actions are stored."""
    return dataset_info_at(_require(name, data_dir))


def _source(path: pathlib.Path, split: str):
    builder = _builder(str(path))
    if split not in builder.info.splits:
        raise ValueError(
            f"dataset {path.name!r} has no split {split!r}; it has {list(builder.info.splits)}"
        )
    return builder.as_data_source(split=split)


def _check_clip_frames(name: str, stored: int, clip_frames: int | None) -> int:
    if clip_frames is None:
        return stored
    if not 1 <= clip_frames <= stored:
        raise ValueError(
            f"clip_frames={clip_frames} but dataset {name!r} stores clips of {stored} frames; "
            f"ask for 1..{stored} or rebuild it with --clip-frames {clip_frames}"
        )
    return clip_frames


def read_clips_at(
    path: pathlib.Path, split: str, limit: int | None = None, clip_frames: int | None = None
) -> dict[str, np.ndarray]:
    source = _source(path, split)
    t = _check_clip_frames(path.name, dataset_info_at(path)["clip_frames"], clip_frames)
    count = len(source) if limit is None else min(limit, len(source))
    records = source.__getitems__(list(range(count)))
    out: dict[str, np.ndarray] = {}
    for key in records[0] if records else ("frames",):
        out[key] = np.stack([r[key] for r in records]) if records else np.zeros((0,))
    if records:
        out["frames"] = out["frames"][:, :t]
        if "actions" in out:
            out["actions"] = out["actions"][:, : t - 1]
    return out


def read_clips(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    clip_frames: int | None = None,
) -> dict[str, np.ndarray]:
    """For evaluation and probing: the first `limit` clips of `split` in stored order, each cut
    to its first `clip_frames` frames (never a random window: evaluation sees fixed clips).

    Returns {"frames": uint8 (M, T, H, W, 3)} plus, when the dataset has them, "actions" int32
    (M, T-1) where actions[:, t] turned frames[:, t] into frames[:, t+1], and "level",
    "episode" (CoinRun) or "source" (video folders).
    """
    return read_clips_at(_require(name, data_dir), split, limit=limit, clip_frames=clip_frames)


class _FramesOnly(grain.transforms.Map):
    """Drops everything but the frames, cut to the first `clip_frames` of each clip."""

    def __init__(self, clip_frames: int):
        self.clip_frames = clip_frames

    def map(self, record):
        return np.ascontiguousarray(record["frames"][: self.clip_frames])


class _RandomWindow(grain.transforms.RandomMap):
    """Drops everything but the frames, cut to `clip_frames` consecutive frames starting at a
    uniformly random offset, so training reads every stored frame, not only the first ones.

    The offset comes from grain's per-record generator (seeded from the sampler's seed and the
    record's position in the sampled order), so the crops repeat under the same seed and a
    restored iterator continues with the same crops.
    """

    def __init__(self, clip_frames: int):
        self.clip_frames = clip_frames

    def random_map(self, record, rng: np.random.Generator):
        frames = record["frames"]
        start = rng.integers(0, len(frames) - self.clip_frames + 1)
        return np.ascontiguousarray(frames[start : start + self.clip_frames])


def _absl_flags_ready() -> None:
    """Grain's worker processes read absl flags (their defaults will do); outside an absl app
    nothing has parsed them and the first batch would fail with UnparsedFlagAccessError."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_loader(
    name: str,
    split: str = "train",
    *,
    batch_size: int,
    clip_frames: int | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    random_window: bool = True,
) -> grain.DataLoader:
    """Batches of uint8 frames (B, T, H, W, 3) from dataset `name`, and nothing else.

    With `random_window` each clip is a random window of T consecutive frames of the stored
    clip, drawn afresh every time it is read (deterministic under `seed`); otherwise, and
    always when T is the stored length, its first T frames.

    `batch_size` is global; each of the `process_count` processes (default: JAX's) gets
    B = batch_size // process_count clips from its own disjoint shard of the split. Shuffling
    is seeded; `num_epochs=None` repeats forever. The iterator's `get_state()`/`set_state()`
    (or orbax with `grain.checkpoint.CheckpointSave`) resume the exact data order.
    """
    path = _require(name, data_dir)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if batch_size % process_count:
        raise ValueError(
            f"global batch_size {batch_size} is not divisible by the {process_count} processes"
        )
    per_process = batch_size // process_count
    t = _check_clip_frames(name, dataset_info_at(path)["clip_frames"], clip_frames)
    source = _source(path, split)
    shard_size = len(source) // process_count
    if drop_remainder and shard_size < per_process:
        raise ValueError(
            f"dataset {name!r} split {split!r} has {len(source)} clips, {shard_size} per process: "
            f"too few for a per-process batch of {per_process}; build more episodes or lower "
            "the batch size"
        )
    if worker_count:
        _absl_flags_ready()
    frames = _RandomWindow(t) if random_window else _FramesOnly(t)
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=grain.sharding.ShardOptions(
            shard_index=process_index, shard_count=process_count, drop_remainder=True
        ),
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[frames, grain.transforms.Batch(per_process, drop_remainder)],
        worker_count=worker_count,
    )
