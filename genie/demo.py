"""`make demo`: a small CoinRun world, end to end, on a laptop CPU.

1. builds the `coinrun_tiny` dataset (random-policy Procgen CoinRun) and prints its summary;
2. trains the tokenizer, the latent action model and the dynamics model (`coinrun_tiny`);
3. probes what each latent action does (and writes a key map), evaluates reconstruction,
   rollouts and controllability on the test split, and plays the world headless to a GIF.

Every step is resumable: run it again and finished work is reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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

    run_dir = str(config.run_path)
    print(f"== 3/3 using the world in {run_dir}")
    prompt = write_prompt(config, run_dir)

    from genie import evaluate, play, probe

    probe.main([run_dir, "--split", "validation", "--keymap-out", f"{run_dir}/keymap.json"])
    evaluate.main([run_dir, "--split", "test", "--clips", "64"])
    actions = demo_actions(f"{run_dir}/keymap.json")
    rollout = f"{run_dir}/rollout.gif"
    play.main([run_dir, "--prompt", prompt, "--actions", actions, "--out", rollout, "--scale", "4"])
    print(
        f"== done. Look at {rollout}, {run_dir}/probe_validation/actions.gif and "
        f"{run_dir}/eval_test/eval.md. Play it yourself:\n"
        f"   .venv/bin/genie play {run_dir} --prompt {prompt} --keymap {run_dir}/keymap.json\n"
        f"   .venv/bin/genie play {run_dir} --prompt {prompt} --serve   # in a browser"
    )


def write_prompt(config, run_dir: str) -> str:
    """The first frame of the first test clip, as a PNG prompt for `genie play`."""
    from data_pipelines.loader import read_clips
    from genie.plots import save_png

    clip = read_clips(config.data.dataset, "test", data_dir=config.data.data_dir, limit=1)
    path = f"{run_dir}/prompt.png"
    save_png(path, clip["frames"][0, 0])
    return path


def demo_actions(keymap_path: str) -> str:
    """Right, jump, left, each held a few frames, through the key map the probe learned."""
    keymap = json.loads(Path(keymap_path).read_text())
    held = [keymap["right"]] * 6 + [keymap["up"]] * 4 + [keymap["left"]] * 6
    return ",".join(str(code + 1) for code in held)  # `genie play --actions` is 1-based


if __name__ == "__main__":
    main()
