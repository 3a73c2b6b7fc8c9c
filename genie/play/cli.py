"""`genie play`: the command line."""

from __future__ import annotations

import argparse
import sys

from genie.config import load_config
from genie.media import save_video
from genie.play.controls import Controls, load_keymap, parse_actions
from genie.play.server import make_server
from genie.play.session import Session
from genie.play.window import run_window
from genie.world import World, as_prompt


def _keys_help() -> str:
    """The "Keys" and "Key map" paragraphs of the package docstring, for --help."""
    import genie.play

    return "Keys:" + genie.play.__doc__.split("Keys:", 1)[1].split("\n\nThe package:")[0]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="genie play",
        description="Play a trained world: a window (default), a headless rollout (--actions) "
        "or a page in a browser (--serve).",
        epilog=_keys_help(),
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
