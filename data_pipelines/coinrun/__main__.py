"""python -m data_pipelines.coinrun --name coinrun_tiny --episodes 64 --clip-frames 16 --seed 0"""

from __future__ import annotations

import argparse

from data_pipelines.coinrun.builder import build_coinrun


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipelines.coinrun",
        description="Generate Procgen CoinRun clips with a random policy into <data-dir>/<name>.",
    )
    parser.add_argument("--name", default="coinrun", help="dataset name (a folder name)")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per clip (T)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    parser.add_argument(
        "--levels",
        type=int,
        default=None,
        help="use level seeds 0..levels-1 (default: one level per episode)",
    )
    parser.add_argument("--max-hold", type=int, default=8, help="hold each action 1..N steps")
    parser.add_argument("--distribution-mode", default="hard", choices=("easy", "hard"))
    parser.add_argument("--data-dir", default=None, help="default: $GENIE_DATA_DIR or ./data")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="default: one per 100 episodes, up to all CPU cores",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
    args = parser.parse_args(argv)
    try:
        build_coinrun(
            args.name,
            args.episodes,
            clip_frames=args.clip_frames,
            seed=args.seed,
            levels=args.levels,
            data_dir=args.data_dir,
            workers=args.workers,
            overwrite=args.overwrite,
            max_hold=args.max_hold,
            distribution_mode=args.distribution_mode,
        )
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:  # one line, no traceback
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
