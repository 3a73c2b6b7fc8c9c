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
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from genie.config import load_config
from genie.plots import save_gif, upscale
from genie.world import World, as_prompt

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


# ---------------------------------------------------------------------------------------------
# Keys -> commands, shared by the window and the browser


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


# ---------------------------------------------------------------------------------------------
# Saving episodes


def save_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0, scale: int = 1):
    """uint8 (T, H, W, 3) -> H.264 MP4 (MPEG-4 part 2 where libx264 is missing) via PyAV."""
    import av

    frames = upscale(np.asarray(frames, np.uint8), scale)
    # yuv420p needs even sides: pad the right and bottom edge by one pixel where odd.
    _, height, width, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=max(1, round(fps)))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def save_episode(frames: np.ndarray, stem: str | os.PathLike, *, fps: float, scale: int):
    """Writes STEM.gif and STEM.mp4; returns both paths."""
    stem = Path(stem)
    gif, mp4 = stem.with_suffix(".gif"), stem.with_suffix(".mp4")
    save_gif(gif, frames, fps=fps, scale=scale)
    save_mp4(mp4, frames, fps=fps, scale=scale)
    return gif, mp4


def save_video(path: str | os.PathLike, frames: np.ndarray, *, fps: float, scale: int) -> None:
    """A GIF or MP4, by the suffix of `path`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        save_gif(path, frames, fps=fps, scale=scale)
    elif suffix == ".mp4":
        save_mp4(path, frames, fps=fps, scale=scale)
    else:
        raise ValueError(f"--out {path}: write a .gif or an .mp4")


# ---------------------------------------------------------------------------------------------
# A play session: the world, its prompt, the last action, frames per second


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


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The pygame window


def run_window(
    session: Session,
    controls: Controls,
    *,
    scale: int = 8,
    events: Callable[[], Iterable] | None = None,
    frame_rate: int = 60,
) -> None:
    """Shows the world x`scale` (nearest neighbour) with a status line and plays it from the
    keyboard until q, Esc or the window closes. `events` replaces `pygame.event.get` (tests
    script the keys with it)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    pygame.init()
    try:
        height, width = session.frame.shape[:2]
        font = pygame.font.Font(None, 20)
        bar = font.get_linesize() + 6
        try:
            screen = pygame.display.set_mode((width * scale, height * scale + bar))
        except pygame.error as error:
            raise RuntimeError(
                f"cannot open a window ({error}): use --serve to play in a browser, or "
                "--actions ... --out FILE to write a rollout"
            ) from error
        pygame.display.set_caption("genie play")
        clock = pygame.time.Clock()
        next_events = events or pygame.event.get
        running = True
        while running:
            for event in next_events():
                if event.type == pygame.QUIT:
                    running = False
                elif event.type == pygame.KEYDOWN:
                    ctrl = bool(event.mod & pygame.KMOD_CTRL)
                    command = controls.command(pygame.key.name(event.key), ctrl=ctrl)
                    running = session.apply(command) and running
                if not running:
                    break
            image = upscale(session.frame, scale)
            screen.fill((0, 0, 0))
            screen.blit(pygame.surfarray.make_surface(image.swapaxes(0, 1)), (0, 0))
            text = font.render(session.status(), True, (255, 255, 255))
            screen.blit(text, (4, height * scale + 3))
            pygame.display.flip()
            clock.tick(frame_rate)
    finally:
        pygame.quit()


# ---------------------------------------------------------------------------------------------
# The browser page

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>genie play</title>
<style>
 body { background: #111; color: #eee; font: 14px sans-serif; text-align: center; }
 #frame { image-rendering: pixelated; width: __WIDTH__px; height: __HEIGHT__px;
          border: 1px solid #444; margin-top: 16px; }
 button { margin: 2px; }
 pre { color: #aaa; }
</style></head>
<body>
<img id="frame" alt="the world">
<div id="status">loading</div>
<div>frame <span id="frame-count">0</span></div>
<div id="buttons"></div>
<pre id="help">__HELP__</pre>
<script>
const BROWSER_KEYS = __BROWSER_KEYS__;
const NUM_ACTIONS = __NUM_ACTIONS__;
let queue = Promise.resolve();
function show(state) {
  if (state.error) { document.getElementById("status").textContent = state.error; return; }
  document.getElementById("frame").src = state.image;
  document.getElementById("status").textContent = state.status;
  document.getElementById("frame-count").textContent = state.frame;
}
function post(path, body) {
  queue = queue.then(() => fetch(path, {method: "POST", body: JSON.stringify(body || {})}))
    .then(r => r.json()).then(show).catch(e => show({error: String(e)}));
}
document.addEventListener("keydown", e => {
  const key = BROWSER_KEYS[e.key] || (e.key.length === 1 ? e.key.toLowerCase() : null);
  if (!key) return;
  e.preventDefault();
  post("/key", {key: key, ctrl: e.ctrlKey || e.metaKey});
});
for (let a = 0; a < NUM_ACTIONS; a++) {
  const b = document.createElement("button");
  b.textContent = "action " + a + " (key " + ((a + 1) % 10) + ")";
  b.onclick = () => post("/step", {action: a});
  document.getElementById("buttons").appendChild(b);
}
fetch("/state").then(r => r.json()).then(show);
</script>
</body></html>
"""


def make_server(
    session: Session,
    controls: Controls,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    scale: int = 8,
) -> ThreadingHTTPServer:
    """An HTTP server (stdlib, one thread per request, one step at a time) for the page:

    GET /            the page; it forwards key presses to POST /key
    GET /state       {"image": data-URL PNG, "frame", "action", "fps", "status", "saved"}
    POST /key        {"key": pygame key name, "ctrl": bool} -> state (same keys as the window)
    POST /step       {"action": k}, k a 0-based latent action id -> state
    POST /reset, POST /save -> state
    Errors answer 400 with {"error": message}. Port 0 picks a free port (server.server_port).
    """
    height, width = session.frame.shape[:2]
    page = (
        PAGE.replace("__WIDTH__", str(width * scale))
        .replace("__HEIGHT__", str(height * scale))
        .replace("__HELP__", controls.help())
        .replace("__BROWSER_KEYS__", json.dumps(controls.browser_keys()))
        .replace("__NUM_ACTIONS__", str(controls.num_actions))
    ).encode()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: the status line says what happens
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: dict) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif self.path == "/state":
                with lock:
                    self._json(200, session.state())
            else:
                self._json(404, {"error": f"no page {self.path}"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    if self.path == "/step":
                        action = body.get("action")
                        if isinstance(action, bool) or not isinstance(action, int):
                            raise ValueError(f'POST /step takes {{"action": k}}, got {body}')
                        session.act(action)
                    elif self.path == "/key":
                        command = controls.command(
                            str(body.get("key", "")), ctrl=bool(body.get("ctrl"))
                        )
                        if command is not None and command.kind != "quit":
                            session.apply(command)
                    elif self.path == "/reset":
                        session.reset()
                    elif self.path == "/save":
                        session.save()
                    else:
                        self._json(404, {"error": f"no endpoint {self.path}"})
                        return
                    self._json(200, session.state())
            except (ValueError, json.JSONDecodeError, AttributeError) as error:
                self._json(400, {"error": str(error)})

    return ThreadingHTTPServer((host, port), Handler)


# ---------------------------------------------------------------------------------------------
# The command line


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


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="genie play",
        description="Play a trained world: a window (default), a headless rollout (--actions) "
        "or a page in a browser (--serve).",
        epilog="Keys:" + __doc__.split("Keys:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run folder with tokenizer/, lam/ and dynamics/")
    parser.add_argument(
        "--prompt", required=True, help="an image (png, jpg) or video (mp4, gif, ...) to start from"
    )
    parser.add_argument(
        "--actions",
        help="headless: 1-based actions as on the digit keys, "
        "e.g. 1,1,3,2 (key/number k = latent action k-1)",
    )
    parser.add_argument(
        "--out",
        default="rollout.gif",
        help="headless: where to write the episode (.gif or .mp4): the prompt "
        "frames, then one frame per action (default rollout.gif)",
    )
    parser.add_argument(
        "--keymap",
        help='JSON key map, e.g. {"left": 3, "right": 1} (0-based latent action ids; see below)',
    )
    parser.add_argument("--serve", action="store_true", help="serve a page instead of a window")
    parser.add_argument("--host", default="127.0.0.1", help="--serve: address (default localhost)")
    parser.add_argument("--port", type=int, default=8000, help="--serve: port (default 8000)")
    parser.add_argument("--scale", type=int, default=8, help="pixel scale of window and videos")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of saved videos")
    parser.add_argument("--save-dir", default="episodes", help="where s saves episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="MaskGIT steps (default: the run's config)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: config)")
    args = parser.parse_args(argv)
    if args.actions is not None and args.serve:
        parser.error("--actions (headless) and --serve are two different ways to play: pick one")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        # Check the cheap things (actions, key map, prompt) before loading any checkpoint.
        config = load_config(args.run_dir)
        num_actions = config.lam.num_codes
        controls = Controls(num_actions, load_keymap(args.keymap, num_actions))
        actions = None if args.actions is None else parse_actions(args.actions, num_actions)
        prompt = as_prompt(
            args.prompt,
            batch_size=1,
            image_size=config.data.image_size,
            clip_frames=config.data.clip_frames,
        )
        world = World.from_run(
            args.run_dir, seed=args.seed, steps=args.steps, temperature=args.temperature
        )
        if actions is not None:
            world.reset(prompt)
            world.rollout([actions])
            save_video(args.out, world.frames, fps=args.fps, scale=args.scale)
            print(
                f"wrote {args.out}: {len(world.frames)} frames "
                f"({len(world.frames) - len(actions)} prompt + {len(actions)} generated)"
            )
            return
        session = Session(world, prompt, save_dir=args.save_dir, fps=args.fps, scale=args.scale)
        print(controls.help())
        if args.serve:
            server = make_server(
                session, controls, host=args.host, port=args.port, scale=args.scale
            )
            print(f"playing at http://{args.host}:{server.server_port}/ (Ctrl+C stops)")
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
        else:
            run_window(session, controls, scale=args.scale)
    except (TypeError, RuntimeError) as error:  # no display, a window library missing
        print(f"genie play: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from genie import cli

    cli.run(main, None, prog="genie play")
