"""Procgen CoinRun clips as a TFDS array_record dataset (Genie, Bruce et al. 2024, appendix).

Each episode plays one level seed with a random policy that holds each action for 1..max_hold
steps. Episodes are cut into non-overlapping clips of T frames (a shorter tail is dropped).
Features: `frames` uint8 (T, 64, 64, 3); for evaluation only, `actions` int32 (T-1,) where
actions[t] turned frames[t] into frames[t+1], `episode`, `level` and `start_frame`.

Splits are by level seed, so test levels are never seen in training:
level % 10 == 9 -> test, level % 10 == 8 -> validation, otherwise train.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import time
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from data_pipelines import report, storage
from data_pipelines.coinrun.actions import action_metadata
from data_pipelines.coinrun.episodes import EpisodeSpec, episode_clips

IMAGE_SIZE = 64
SPLITS = ("train", "validation", "test")


def split_of_level(level: int) -> str:
    return {9: "test", 8: "validation"}.get(level % 10, "train")


class GenieCoinrun(tfds.core.GeneratorBasedBuilder):
    """Fixed-length CoinRun clips; generation is spread over worker processes."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(
        self,
        *,
        episodes: Sequence[EpisodeSpec] = (),
        clip_frames: int = 16,
        workers: int = 1,
        progress: tqdm | None = None,
        **kwargs,
    ):
        self._episodes = list(episodes)
        self._clip_frames = clip_frames
        self._workers = workers
        self._progress = progress
        self._pool = None
        self.episode_lengths: list[int] = []
        super().__init__(**kwargs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def _info(self) -> tfds.core.DatasetInfo:
        t = self._clip_frames
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Tensor(
                        shape=(t, IMAGE_SIZE, IMAGE_SIZE, 3),
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.ZLIB,
                    ),
                    "actions": tfds.features.Tensor(shape=(t - 1,), dtype=np.int32),
                    "episode": tfds.features.Scalar(dtype=np.int32),
                    "level": tfds.features.Scalar(dtype=np.int32),
                    "start_frame": tfds.features.Scalar(dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        by_split: dict[str, list[EpisodeSpec]] = {}
        for spec in self._episodes:
            by_split.setdefault(split_of_level(spec.level), []).append(spec)
        return {s: self._generate_examples(by_split[s]) for s in SPLITS if s in by_split}

    def _generate_examples(self, specs: list[EpisodeSpec]):
        if self._workers > 1:
            if self._pool is None:  # one pool for all splits; spawn: never fork a threaded parent
                self._pool = multiprocessing.get_context("spawn").Pool(self._workers)
            tasks = [(spec, self._clip_frames) for spec in specs]
            yield from self._examples(self._pool.imap(_episode_clips_star, tasks))
        else:
            yield from self._examples(episode_clips(spec, self._clip_frames) for spec in specs)

    def _examples(self, results):
        for spec, length, clips in results:
            self.episode_lengths.append(length)
            for start, frames, actions in clips:
                yield (
                    f"{spec.episode}_{start}",
                    {
                        "frames": frames,
                        "actions": actions,
                        "episode": spec.episode,
                        "level": spec.level,
                        "start_frame": start,
                    },
                )
            if self._progress is not None:
                self._progress.update(1)


def _episode_clips_star(task):
    return episode_clips(*task)


def episode_specs(
    episodes: int,
    seed: int = 0,
    levels: int | Sequence[int] | None = None,
    max_hold: int = 8,
    distribution_mode: str = "hard",
) -> list[EpisodeSpec]:
    """Episode i plays level seed levels[i % len(levels)]; `levels` defaults to 0..episodes-1
    (one level per episode, as in the paper); an int n means level seeds 0..n-1."""
    if levels is None:
        levels = episodes
    level_seeds = list(range(levels)) if isinstance(levels, int) else list(levels)
    if not level_seeds:
        raise ValueError("levels must name at least one level seed")
    return [
        EpisodeSpec(i, level_seeds[i % len(level_seeds)], seed, max_hold, distribution_mode)
        for i in range(episodes)
    ]


def build_coinrun(
    name: str,
    episodes: int,
    clip_frames: int = 16,
    seed: int = 0,
    levels: int | Sequence[int] | None = None,
    data_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    *,
    overwrite: bool = False,
    max_hold: int = 8,
    distribution_mode: str = "hard",
    verbose: bool = True,
) -> pathlib.Path:
    """Generates `episodes` CoinRun episodes into `<data_dir>/<name>/`; returns that folder.

    A no-op when the dataset is already complete (unless `overwrite`).
    """
    final = storage.dataset_path(name, data_dir)
    if storage.is_complete(final) and not overwrite:
        if verbose:
            print(f"dataset {name!r} already exists at {final}; pass --overwrite to rebuild")
            print(report.summarize(name, data_dir))
        return final
    if clip_frames < 2:
        raise ValueError(f"clip_frames={clip_frames}: a clip needs at least 2 frames")
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: build at least one episode")
    if workers is None:  # starting a worker costs seconds, about as much as 50 episodes
        workers = max(1, min(os.cpu_count() or 1, episodes // 100))
    specs = episode_specs(episodes, seed, levels, max_hold, distribution_mode)
    started = time.time()
    with storage.atomic_build(final, overwrite=overwrite) as staging:
        with tqdm(
            total=episodes, desc=f"coinrun {name}", unit="episode", disable=not verbose
        ) as bar:
            builder = GenieCoinrun(
                episodes=specs,
                clip_frames=clip_frames,
                workers=workers,
                progress=bar,
                data_dir=str(staging / "tfds"),
                file_format="array_record",
            )
            try:
                with storage.quiet_tfds():
                    builder.download_and_prepare()
            except AssertionError as error:
                if "No examples were yielded" not in str(error):
                    raise
                raise ValueError(
                    f"a split of {name!r} got no clip of {clip_frames} frames ({error}); "
                    "build more episodes or shorter clips"
                ) from error
            finally:
                builder.close()
        storage.move_tfds_output(staging / "tfds", staging)
        lengths = builder.episode_lengths
        storage.write_build_info(
            staging,
            source="coinrun",
            name=name,
            episodes=episodes,
            clip_frames=clip_frames,
            seed=seed,
            num_levels=len({s.level for s in specs}),
            max_hold=max_hold,
            distribution_mode=distribution_mode,
            workers=workers,
            mean_episode_frames=float(np.mean(lengths)) if lengths else 0.0,
            build_seconds=time.time() - started,
            built_at=storage.now(),
            actions=action_metadata(),
        )
        report.write_sample_png(staging)
    if verbose:
        print(report.summarize(name, data_dir))
    return final
