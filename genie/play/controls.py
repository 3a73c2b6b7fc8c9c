"""Keys -> commands, shared by the window and the browser; key maps; `--actions` lists."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ARROWS = {"left": "a", "right": "d", "up": "w", "down": "s"}  # arrow -> its WASD twin
RESERVED = {"space", "r", "q", "escape", *"0123456789"}
# Browser KeyboardEvent.key -> pygame key name, for the keys whose names differ.
BROWSER_KEYS = {
    "ArrowLeft": "left",
    "ArrowRight": "right",
    "ArrowUp": "up",
    "ArrowDown": "down",
    " ": "space",
    "Escape": "escape",
    "Enter": "return",
    "Backspace": "backspace",
    "Tab": "tab",
}


@dataclass(frozen=True)
class Command:
    kind: str  # "act", "repeat", "reset", "save" or "quit"
    action: int | None = None


def load_keymap(path: str | os.PathLike | None, num_actions: int) -> dict[str, int]:
    """Reads a key-map JSON file -> {pygame key name: latent action id}, arrows expanded to
    their WASD twins. None gives an empty map (digit keys only)."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read key map {path}: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError(f'key map {path} must be a JSON object like {{"left": 3, "right": 1}}')
    return keymap_from_dict(raw, num_actions, source=str(path))


def keymap_from_dict(raw: dict, num_actions: int, source: str = "key map") -> dict[str, int]:
    keymap: dict[str, int] = {}
    for name, action in raw.items():
        key = str(name).lower()
        if key in RESERVED:
            raise ValueError(f"{source}: key {name!r} is reserved (digits, space, r, q, escape)")
        if isinstance(action, bool) or not isinstance(action, int):
            raise ValueError(
                f"{source}: key {name!r} must map to a latent action id, got {action!r}"
            )
        if not 0 <= action < num_actions:
            raise ValueError(
                f"{source}: key {name!r} maps to action {action}, outside the codebook of "
                f"{num_actions} latent actions (0..{num_actions - 1})"
            )
        keymap[key] = action
    for arrow, twin in ARROWS.items():
        if arrow in keymap and twin not in keymap:
            keymap[twin] = keymap[arrow]
    return keymap


class Controls:
    """Turns a key (pygame key name) into a Command."""

    def __init__(self, num_actions: int, keymap: dict[str, int] | None = None):
        self.num_actions = num_actions
        self.keymap = dict(keymap or {})

    def digit_action(self, key: str) -> int | None:
        key = key.strip("[]")  # keypad digits are "[1]" in pygame
        if len(key) == 1 and key.isdigit():
            action = (int(key) - 1) % 10  # 1..9 then 0 for the tenth
            if action < self.num_actions:
                return action
        return None

    def command(self, key: str, *, ctrl: bool = False) -> Command | None:
        key = key.lower()
        if key == "s" and ctrl:
            return Command("save")
        action = self.digit_action(key)
        if action is not None:
            return Command("act", action)
        if key in self.keymap:
            return Command("act", self.keymap[key])
        return {
            "space": Command("repeat"),
            "r": Command("reset"),
            "s": Command("save"),
            "q": Command("quit"),
            "escape": Command("quit"),
        }.get(key)

    def help(self) -> str:
        count = min(self.num_actions, 10)
        digits = f"1..{count}" if count <= 9 else "1..9, 0"
        lines = [f"keys {digits}: latent actions 0..{count - 1} (key k takes action k-1)"]
        lines += [f"key {k}: action {a}" for k, a in sorted(self.keymap.items())]
        save = "ctrl+s" if "s" in self.keymap else "s (or ctrl+s)"
        lines.append(f"space: repeat last action, r: reset, {save}: save GIF+MP4, q/Esc: quit")
        return "\n".join(lines)

    def browser_keys(self) -> dict[str, str]:
        """KeyboardEvent.key values the page forwards, with the pygame names they stand for."""
        return dict(BROWSER_KEYS)


def parse_actions(text: str, num_actions: int) -> list[int]:
    """Parses 1-based actions as on the digit keys: "1,1,3,2" -> latent actions [0, 0, 2, 1]."""
    actions = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        if not item.lstrip("-").isdigit() or not 1 <= int(item) <= num_actions:
            raise ValueError(
                f"--actions: {item!r} is not one of 1..{num_actions} (numbers as on the digit "
                f"keys: k takes latent action k-1 of {num_actions})"
            )
        actions.append(int(item) - 1)
    if not actions:
        raise ValueError("--actions needs at least one action, e.g. --actions 1,1,3,2")
    return actions
