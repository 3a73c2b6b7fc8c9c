"""A play session: the world, its prompt, the last action, frames per second."""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

import numpy as np

from genie.media import png_base64, save_episode
from genie.play.controls import Command
from genie.world import World


class Session:
    """One episode of play on a batch-1 world; what both the window and the browser drive."""

    def __init__(
        self,
        world: World,
        prompt,
        *,
        save_dir: str | os.PathLike = "episodes",
        fps: float = 10.0,
        scale: int = 8,
    ):
        if world.batch_size != 1:
            raise ValueError(f"play needs a world of batch size 1, got {world.batch_size}")
        self.world, self.prompt = world, prompt
        self.save_dir, self.fps_out, self.scale = Path(save_dir), fps, scale
        self.step_seconds: deque[float] = deque(maxlen=20)
        self.saved: list[Path] = []
        self.message = ""
        self.reset()

    def reset(self) -> np.ndarray:
        self.frame = self.world.reset(self.prompt)
        self.last_action: int | None = None
        self.message = "reset"
        return self.frame

    def act(self, action: int) -> np.ndarray:
        start = time.perf_counter()
        self.frame = self.world.step(action)
        self.step_seconds.append(time.perf_counter() - start)
        self.last_action = int(action)
        self.message = ""
        return self.frame

    def save(self) -> list[Path]:
        existing = len(list(self.save_dir.glob("episode-*.gif")))
        stem = self.save_dir / f"episode-{existing:03d}"
        self.saved = list(save_episode(self.world.frames, stem, fps=self.fps_out, scale=self.scale))
        self.message = f"saved {self.saved[0]} and .mp4"
        return self.saved

    def apply(self, command: Command | None) -> bool:
        """Carries out a command; False when it asks to quit."""
        if command is None:
            return True
        if command.kind == "quit":
            return False
        if command.kind == "act":
            self.act(command.action)
        elif command.kind == "repeat":
            if self.last_action is None:
                self.message = "no action to repeat yet"
            else:
                self.act(self.last_action)
        elif command.kind == "reset":
            self.reset()
        elif command.kind == "save":
            self.save()
        return True

    @property
    def frame_count(self) -> int:
        return self.world.num_frames

    @property
    def fps(self) -> float:
        """Generated frames per second over the last steps (the first includes compilation)."""
        if not self.step_seconds:
            return 0.0
        return len(self.step_seconds) / sum(self.step_seconds)

    def status(self) -> str:
        action = (
            "-"
            if self.last_action is None
            else (f"{self.last_action} (key {self.last_action + 1})")
        )
        line = f"frame {self.frame_count} | action {action} | {self.fps:.1f} fps"
        return f"{line} | {self.message}" if self.message else line

    def state(self) -> dict:
        """What the browser page shows."""
        return {
            "image": "data:image/png;base64," + png_base64(self.frame),
            "frame": self.frame_count,
            "action": self.last_action,
            "fps": round(self.fps, 2),
            "status": self.status(),
            "saved": [str(p) for p in self.saved],
        }
