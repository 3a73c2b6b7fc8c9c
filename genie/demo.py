"""`make demo`: a small CoinRun world, end to end, on a laptop CPU.

1. builds the `coinrun_tiny` dataset (random-policy CoinRun) and prints its summary;
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
    parser.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"CoinRun episodes (default: the experiment's metadata['episodes'], else "
        f"{DEMO_EPISODES})",
    )
    parser.add_argument("--data-dir", default=None, help="default $GENIE_DATA_DIR or ./data")
    args = parser.parse_args(argv)
    setup_logging()

    from data_pipelines.coinrun import build_coinrun

    config = load_experiment(args.config)
    episodes = args.episodes or config.metadata.get("episodes", DEMO_EPISODES)
    print(f"== 1/3 dataset {config.data.dataset!r}")
    build_coinrun(
        config.data.dataset, episodes=episodes, clip_frames=16, seed=0, data_dir=args.data_dir
    )

    import dataclasses

    from genie.train import train

    if args.data_dir:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, data_dir=args.data_dir)
        )
    # A recipe may name its own stages, e.g. ["tokenizer", "lam_dynamics"] to co-train.
    stages = tuple(config.metadata.get("stages", ("tokenizer", "lam", "dynamics")))
    for number, stage in enumerate(stages, start=1):
        print(f"== 2/3 training {stage} ({number}/{len(stages)}) in {config.run_path / stage}")
        result = train(config, stage)
        if result["stopped"]:
            # The stage saved where it stopped; the next one must not start from a half-trained
            # model (the dynamics model reads the tokenizer and the LAM).
            raise SystemExit(
                f"{result['stopped']} received: {stage} saved in {result['folder']}; run the "
                "same command again to resume"
            )
        shown = {k: round(v, 4) for k, v in result["metrics"].items() if k != "codes_reset"}
        print(f"   last metrics: {shown}")

    run_dir = str(config.run_path)
    print(f"== 3/3 using the world in {run_dir}")
    prompt = write_prompt(config, run_dir)

    from genie import evaluate, play, probe

    probe.main([run_dir, "--split", "validation", "--keymap-out", f"{run_dir}/keymap.json"])
    # The report: test split (unseen levels), never used to choose anything.
    probe.main([run_dir, "--split", "test", "--keymap-out", f"{run_dir}/probe_test/keymap.json"])
    # Greedy MaskGIT decoding (temperature 0; with the factorised head each FSQ digit at the
    # level nearest its mean, `DynamicsConfig.greedy_digits`): on validation the argmax was
    # 0.2 dB better in rollout PSNR than temperature 1, and the mean's level 0.3-0.7 dB better
    # than the argmax (docs/ablations/dynamics.md item 13).
    # 256 clips, not 64: ΔtPSNR draws one random action sequence per clip, so few clips make it
    # noisy (one world on validation: 0.48 dB on 64 clips, 0.55 on 256); 256 take 20 s more.
    evaluate.main(
        [run_dir, "--split", "test", "--clips", "256", "--context", "4", "--temperature", "0"]
    )
    table = targets_table(run_dir, config.metadata.get("targets", "demo"))
    Path(run_dir, "targets.md").write_text(table)
    print(table)
    actions = demo_actions(f"{run_dir}/keymap.json")
    rollout = f"{run_dir}/rollout.gif"
    play.main([run_dir, "--prompt", prompt, "--actions", actions, "--out", rollout, "--scale", "4"])
    print(
        f"== done. Look at {rollout}, {run_dir}/probe_validation/actions.gif and "
        f"{run_dir}/eval_test/eval.md. Play it yourself:\n"
        f"   .venv/bin/genie play {run_dir} --prompt {prompt} --keymap {run_dir}/keymap.json\n"
        f"   .venv/bin/genie play {run_dir} --prompt {prompt} --serve   # in a browser"
    )


# Issue 8's targets on the CoinRun test split (context 4, pooled PSNR): (demo, coinrun_cpu).
TARGETS = {
    "nmi": (0.2, 0.35),
    "perplexity": (3.0, 3.5),
    "probe_margin": (0.15, None),  # left/none/right probe accuracy above chance by this much
    "probe_accuracy": (None, 0.8),
    "delta_psnr": (0.5, 1.5),
    "tokenizer_psnr": (24.0, 28.0),
}


NAMES = {
    "nmi": "LAM: NMI with collapsed true actions",
    "perplexity": "LAM: codebook perplexity",
    "probe_margin": "left/none/right probe accuracy minus chance (held out)",
    "probe_accuracy": "left/none/right probe accuracy (held out)",
    "delta_psnr": "ΔtPSNR@4, random over used codes (dB)",
    "tokenizer_psnr": "tokenizer reconstruction PSNR (dB)",
}


def targets_table(run_dir: str, recipe: str = "demo") -> str:
    """A markdown table of the run's test-split numbers beside the targets of `recipe` ("demo"
    or "cpu"), from `probe_test/probe.json` and `eval_test/eval.json`."""
    column = {"demo": 0, "cpu": 1}[recipe]
    probe_report = json.loads(Path(run_dir, "probe_test", "probe.json").read_text())
    report = json.loads(Path(run_dir, "eval_test", "eval.json").read_text())
    true = probe_report["true_actions"] or {}
    horizontal = true.get("horizontal", {})
    rollout, repeat = report["rollout"]["psnr"], report["rollout"]["psnr"]["repeat_last_frame"]
    gaps = [a - b for a, b in zip(rollout["inferred_actions"], repeat, strict=True)]
    delta = report["delta_psnr"]["random_used_codes"]["t4"]

    def row(name, measured, target, met):
        mark = "-" if target is None else ("yes" if met else "**no**")
        return f"| {name} | {measured} | {'-' if target is None else target} | {mark} |"

    def at_least(key, value):
        target = TARGETS[key][column]
        met = value is not None and target is not None and value >= target
        return row(NAMES[key], "n/a" if value is None else f"{value:.3f}", target, met)

    margin = horizontal["probe_accuracy"] - horizontal["chance_accuracy"] if horizontal else None
    within = all(gap >= -1.0 for gap in gaps[:4])
    above = all(gap > 0 for gap in gaps[:8])
    rollout_target = "within 1 dB at t=1..4" if column == 0 else "above at every t=1..8"
    lines = [
        f"# Targets (issue 8, {recipe} column) on the test split: {run_dir}",
        "",
        "| metric | measured | target | met |",
        "|---|---|---|---|",
        at_least("nmi", true.get("nmi")),
        at_least("perplexity", report["delta_psnr"]["lam_usage"]["perplexity"]),
        at_least("probe_margin", margin)
        if column == 0
        else at_least("probe_accuracy", horizontal.get("probe_accuracy")),
        at_least("delta_psnr", delta),
        at_least("tokenizer_psnr", report["reconstruction"]["psnr"]),
        row(
            "rollout (inferred actions) minus repeat-last-frame, dB by t",
            ", ".join(f"{gap:+.2f}" for gap in gaps),
            rollout_target,
            within if column == 0 else (above and len(gaps) >= 8),
        ),
        "",
        f"Left/none/right probe: {horizontal.get('probe_accuracy', float('nan')):.3f} held out, "
        f"chance {horizontal.get('chance_accuracy', float('nan')):.3f}. LAM perplexity and "
        "ΔtPSNR (random over the codes the LAM uses) from eval on "
        f"{report['clips']} test clips; NMI and probe from {probe_report['transitions']} test "
        "transitions.",
        "",
    ]
    return "\n".join(lines)


def write_prompt(config, run_dir: str) -> str:
    """The first frame of the first test clip, as a PNG prompt for `genie play`."""
    from data_pipelines.loader import read_clips
    from genie.media import save_png

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
    from genie import cli

    cli.run(main, None, prog="genie demo")
