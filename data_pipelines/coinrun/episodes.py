"""Procgen CoinRun episodes from a random policy that holds each action for a while.

Kept free of TFDS and JAX so that worker processes start quickly.

Alignment: an episode is frames o_0..o_{n-1} and actions a_0..a_{n-2}; `act(a_t)` on o_t gave
o_{t+1}. The episode ends when Procgen reports `first` (the frame after the last action
belongs to the next episode and is dropped, with that last action).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings

import numpy as np

NUM_ACTIONS = 15
# procgen's get_combos: index = 3 * horizontal + vertical for the nine {left, none, right} x
# {down, none, up} moves; 9..14 are extra keys CoinRun ignores, so they are rarely chosen.
MOVE_ACTIONS = 9
IGNORED_ACTION_PROBABILITY = 0.05
MAX_EPISODE_STEPS = 1000  # CoinRun's own time limit


def _import_procgen():
    # gym 0.26 prints a long deprecation notice on import; keep the CLI output clean.
    with (
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    episode: int
    level: int
    seed: int
    max_hold: int = 8
    distribution_mode: str = "hard"


def random_actions(rng: np.random.Generator, max_hold: int):
    """Endless actions: mostly one of the nine moves, each held for 1..max_hold steps."""
    while True:
        if rng.random() < IGNORED_ACTION_PROBABILITY:
            action = int(rng.integers(MOVE_ACTIONS, NUM_ACTIONS))
        else:
            action = int(rng.integers(MOVE_ACTIONS))
        for _ in range(int(rng.integers(1, max_hold + 1))):
            yield action


def play_episode(spec: EpisodeSpec) -> tuple[np.ndarray, np.ndarray]:
    """One episode on level `spec.level`: frames uint8 (n, 64, 64, 3), actions int32 (n-1,)."""
    env_class = _import_procgen()
    rng = np.random.default_rng([spec.seed, spec.episode])
    env = env_class(
        num=1,
        env_name="coinrun",
        start_level=spec.level,
        num_levels=1,
        distribution_mode=spec.distribution_mode,
        rand_seed=int(rng.integers(2**31 - 1)),
    )
    _, obs, _ = env.observe()
    frames = [obs["rgb"][0].copy()]
    actions = []
    for action in random_actions(rng, spec.max_hold):
        env.act(np.array([action]))
        _, obs, first = env.observe()
        if first[0] or len(actions) >= MAX_EPISODE_STEPS:
            break
        actions.append(action)
        frames.append(obs["rgb"][0].copy())
    return np.stack(frames), np.asarray(actions, np.int32)


def cut_clips(frames: np.ndarray, actions: np.ndarray, clip_frames: int):
    """Non-overlapping clips of `clip_frames` frames from the start; a shorter tail is dropped.

    Yields (start, frames (T, ...), actions (T-1,)) with actions[t] turning frame t into t+1.
    """
    for start in range(0, len(frames) - clip_frames + 1, clip_frames):
        yield (
            start,
            frames[start : start + clip_frames],
            actions[start : start + clip_frames - 1],
        )


def episode_clips(spec: EpisodeSpec, clip_frames: int) -> tuple[EpisodeSpec, int, list]:
    """Worker task: plays one episode; returns (spec, episode length, its clips)."""
    frames, actions = play_episode(spec)
    return spec, len(frames), list(cut_clips(frames, actions, clip_frames))
