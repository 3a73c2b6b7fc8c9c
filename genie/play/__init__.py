"""`genie play RUN_DIR --prompt PATH`: step a trained world with latent actions.

Three ways to play, one set of keys:

    genie play runs/coinrun_tiny --prompt start.png                      # a pygame window
    genie play runs/coinrun_tiny --prompt start.png --actions 1,1,3,2 --out rollout.gif
    genie play runs/coinrun_tiny --prompt start.png --serve --port 8000  # a page in a browser

Keys: the digit keys 1..|A| take latent actions 0..|A|-1 (key 1 is action 0), as do the numbers
of --actions; space repeats the last action; r resets to the prompt; s saves the episode as GIF
and MP4 (ctrl+s always does, plain s only when the key map does not bind s); q or Esc quits.

Key map (`--keymap FILE`): a JSON object from key names to 0-based latent action ids, the ids
that `World.step` takes and `genie probe` reports, e.g.

    {"left": 3, "right": 1, "up": 2, "down": 0}

"left", "right", "up" and "down" bind the arrow key and its WASD twin (a, d, w, s); any other
pygame key name binds that key ("j", "k", "return", ...). Digits, space, r, q and escape are
reserved. An explicit letter beats the WASD twin of an arrow ({"up": 2, "w": 0} gives w action 0).

The package: `controls` (keys, key maps, `--actions`), `session` (one episode of play),
`window` (pygame), `server` (the browser page, `page.html`, and its HTTP server) and `cli`
(`genie play`).
"""

from genie.play.cli import main, parse_args
from genie.play.controls import (
    ARROWS,
    BROWSER_KEYS,
    RESERVED,
    Command,
    Controls,
    keymap_from_dict,
    load_keymap,
    parse_actions,
)
from genie.play.server import make_server
from genie.play.session import Session
from genie.play.window import run_window

__all__ = [
    "ARROWS",
    "BROWSER_KEYS",
    "RESERVED",
    "Command",
    "Controls",
    "Session",
    "keymap_from_dict",
    "load_keymap",
    "main",
    "make_server",
    "parse_actions",
    "parse_args",
    "run_window",
]
