"""What CoinRun's true actions mean, written into every CoinRun dataset's build info.

genie itself knows nothing of Procgen: a dataset that stores true actions also declares, under
"actions" in its genie_build.json (see `action_metadata`), the name of every action id, the
classes the actions collapse to for probing (what the game does with them), a coarser grouping
of those classes, and which class each play key stands for. Probe and the ablation scripts
read that; a video folder declares none.

Procgen's `get_combos` (procgen/env.py) lists the nine combinations of {left, none, right} with
{down, none, up} first (index = 3 * horizontal + vertical, so 4 is the no-op), then six extra
keys (9..14) that CoinRun ignores. CoinRun reads the horizontal direction and "up" as a jump
(only when standing on something); "down" matters only on a crate. So for probing the 15 ids
collapse to {none, left, right} x {no jump, jump}, and further to left/none/right alone.
"""

from __future__ import annotations

NUM_ACTIONS = 15
_HORIZONTAL = ("left", "none", "right")  # get_combos order
_VERTICAL = ("down", "none", "up")

CLASS_NAMES = ("none", "jump", "left", "left+jump", "right", "right+jump")
HORIZONTAL_NAMES = ("none", "left", "right")
# The class each play key stands for (genie.probe maps keys to the codes most associated).
KEY_CLASSES = {"left": "left", "right": "right", "up": "jump", "none": "none"}


def action_names() -> list[str]:
    """The 15 Procgen ids by name: "left+down", ..., "none" (4), ..., "right+up", "extra 9"..."""
    names = []
    for horizontal in _HORIZONTAL:
        for vertical in _VERTICAL:
            parts = [p for p in (horizontal, vertical) if p != "none"]
            names.append("+".join(parts) or "none")
    return names + [f"extra {i}" for i in range(9, NUM_ACTIONS)]


def class_of_action() -> list[int]:
    """For each Procgen id, its collapsed class (an index into CLASS_NAMES)."""
    ours = {"left": 1, "none": 0, "right": 2}  # position in HORIZONTAL_NAMES
    classes = []
    for horizontal in _HORIZONTAL:
        for vertical in _VERTICAL:
            classes.append(2 * ours[horizontal] + (vertical == "up"))
    return classes + [0] * (NUM_ACTIONS - 9)  # the ignored keys do nothing


def action_metadata() -> dict:
    """The "actions" entry of a CoinRun dataset's build info."""
    return {
        "names": action_names(),
        "classes": {"names": list(CLASS_NAMES), "of_action": class_of_action()},
        "groups": {
            "horizontal": {
                "names": list(HORIZONTAL_NAMES),
                "of_class": [CLASS_NAMES.index(c) // 2 for c in CLASS_NAMES],
            }
        },
        "keys": dict(KEY_CLASSES),
    }
