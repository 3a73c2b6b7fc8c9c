"""`make demo`: a small CoinRun world, end to end, on a laptop CPU.

1. builds the `coinrun_tiny` dataset (random-policy Procgen CoinRun) and prints its summary;
2. trains the tokenizer, the latent action model and the dynamics model (`coinrun_tiny`);
3. rolls the world out, probes its latent actions and evaluates it.

Every step is resumable: run it again and finished work is reused.
"""

from __future__ import annotations

import argparse

from genie.config import load_experiment
from genie.writer import setup_logging

DEMO_EPISODES = 160


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genie demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", default="coinrun_tiny", help="experiment (default coinrun_tiny)"
    )
    parser.add_argument("--episodes", type=int, default=DEMO_EPISODES, help="CoinRun episodes")
    parser.add_argument("--data-dir", default=None, help="default $GENIE_DATA_DIR or ./data")
    args = parser.parse_args(argv)
    setup_logging()

    from data_pipelines.coinrun import build_coinrun

    config = load_experiment(args.config)
    print(f"== 1/3 dataset {config.data.dataset!r}")
    build_coinrun(
        config.data.dataset, episodes=args.episodes, clip_frames=16, seed=0, data_dir=args.data_dir
    )

    import dataclasses

    from genie.train import train

    if args.data_dir:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, data_dir=args.data_dir)
        )
    for number, stage in enumerate(("tokenizer", "lam", "dynamics"), start=1):
        print(f"== 2/3 training {stage} ({number}/3) in {config.run_path / stage}")
        result = train(config, stage)
        shown = {k: round(v, 4) for k, v in result["metrics"].items() if k != "codes_reset"}
        print(f"   last metrics: {shown}")
    print(f"== done: run folder {config.run_path}")


if __name__ == "__main__":
    main()
