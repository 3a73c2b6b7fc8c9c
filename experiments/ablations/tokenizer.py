"""Tokenizer ablations: train the video tokenizer alone under named variants, score it on
validation.

    python -m experiments.ablations.tokenizer --base coinrun_tiny --variants tiny,head8
    python -m experiments.ablations.tokenizer --list

Each variant is a list of `genie train` overrides on top of `--base`; it trains in
`runs/ablations/tokenizer/<base>/<variant>` (resumable: a finished variant is only re-measured)
and is scored by the pooled PSNR (-10 log10 of the mean MSE, `genie.metrics.pooled_psnr`) of
decode(tokenize(x)), clipped to [0, 1], over the first clip_frames frames of every validation
clip, with the training time beside it: wall seconds and the process's CPU seconds, both summed
over resumed sessions. One JSON line per measurement goes to `docs/ablations/tokenizer.jsonl`,
and `docs/ablations/tokenizer.md` is redrawn from it. The test split is never read here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie import metrics
from genie.config import Config, load_experiment

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "ablations" / "tokenizer.jsonl"


@dataclass(frozen=True)
class Variant:
    overrides: tuple[str, ...] = ()
    # False: every training clip is the first clip_frames stored frames (the loader before
    # random windows), the only change that is not a config field.
    random_window: bool = True


VARIANTS: dict[str, Variant] = {
    "first_frames": Variant(random_window=False),  # coinrun_tiny as it was
    "tiny": Variant(),  # coinrun_tiny with random windows
    "head8": Variant(("--tokenizer.head-channels", "8")),
    "head16": Variant(("--tokenizer.head-channels", "16")),
    "stem8": Variant(("--tokenizer.stem-channels", "8")),
    "stem8_head8": Variant(("--tokenizer.stem-channels", "8", "--tokenizer.head-channels", "8")),
    "k1024": Variant(("--tokenizer.num-codes", "1024", "--tokenizer.code-dim", "32")),
    "head8_k1024": Variant(
        (
            "--tokenizer.head-channels",
            "8",
            "--tokenizer.num-codes",
            "1024",
            "--tokenizer.code-dim",
            "32",
        )
    ),
    "lr2e-3": Variant(("--train-tokenizer.learning-rate", "2e-3")),
}


@nnx.jit
def _reconstruct(tokenizer, frames):
    """(B, T, H, W, C) uint8 -> decode(tokenize(frames)) clipped to [0, 1], tokens (B, T, N)."""
    tokens = tokenizer.tokenize(frames)
    return jnp.clip(tokenizer.decode(tokens), 0.0, 1.0), tokens


def measure(tokenizer, config: Config, split: str = "validation", batch: int = 32) -> dict:
    """Pooled reconstruction PSNR over every frame of `split` and the share of codes used."""
    from data_pipelines.loader import read_clips

    frames = read_clips(
        config.data.dataset,
        split,
        data_dir=config.data.data_dir,
        clip_frames=config.data.clip_frames,
    )["frames"]
    squared_error, tokens = 0.0, []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        reconstruction, chunk_tokens = _reconstruct(tokenizer, jnp.asarray(chunk))
        squared_error += metrics.mse(chunk, np.asarray(reconstruction)) * chunk.shape[0]
        tokens.append(np.asarray(chunk_tokens).reshape(-1))
    usage = metrics.code_usage(np.concatenate(tokens), tokenizer.num_codes)
    mse = squared_error / len(frames)
    return {
        "split": split,
        "clips": len(frames),
        "psnr": float(-10 * np.log10(mse)),
        "codes_used": float(np.mean(usage.fractions > 0)),
        "perplexity": usage.perplexity,
    }


def _seconds_file(run_dir: Path) -> Path:
    return run_dir / "ablation_seconds.json"


def train_timed(config: Config, variant: Variant, run_dir: Path) -> dict:
    """Trains (or resumes) the tokenizer; returns wall and CPU seconds over every session."""
    from genie.train import train

    data_iterator = None
    if not variant.random_window:
        from data_pipelines.loader import make_loader

        data_iterator = iter(
            make_loader(
                config.data.dataset,
                "train",
                batch_size=config.train_tokenizer.batch_size,
                clip_frames=config.data.clip_frames,
                data_dir=config.data.data_dir,
                seed=config.data.shuffle_seed,
                worker_count=config.data.worker_count,
                random_window=False,
            )
        )
    path = _seconds_file(run_dir)
    spent = json.loads(path.read_text()) if path.is_file() else {"wall": 0.0, "cpu": 0.0}
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(config, "tokenizer", data_iterator=data_iterator, progress=False)
    spent["wall"] += time.perf_counter() - wall
    spent["cpu"] += time.process_time() - cpu
    path.write_text(json.dumps(spent))
    return {"seconds": spent, "metrics": result.get("metrics", {})}


def run_variant(base: str, name: str, variant: Variant, extra: list[str], tag: str) -> dict:
    import tyro

    from genie import checkpoint

    name = f"{name}+{tag}" if tag else name
    run_dir = ROOT / "runs" / "ablations" / "tokenizer" / base / name
    args = [*variant.overrides, *extra, "--run-dir", str(run_dir)]
    config = tyro.cli(Config, default=load_experiment(base), args=args)
    trained = train_timed(config, variant, run_dir)
    tokenizer, _ = checkpoint.load_model(run_dir, "tokenizer")
    train_config = config.train_tokenizer
    row = {
        "base": base,
        "variant": name,
        "overrides": " ".join(
            [*variant.overrides, *extra, *([] if variant.random_window else ["(first frames)"])]
        ),
        "steps": train_config.steps,
        "batch": train_config.batch_size,
        "learning_rate": train_config.learning_rate,
        "parameters": int(sum(x.size for x in jax.tree.leaves(nnx.state(tokenizer, nnx.Param)))),
        "train_seconds": round(trained["seconds"]["wall"], 1),
        "train_cpu_seconds": round(trained["seconds"]["cpu"], 1),
        "machine": f"{platform.node()} {jax.devices()[0].platform} {os.cpu_count()} cores (shared)",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "train_psnr": trained["metrics"].get("psnr"),
        **measure(tokenizer, config),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as file:
        file.write(json.dumps(row) + "\n")
    write_table()
    return row


def write_table() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    header = (
        "| base | variant | overrides | steps x batch | params | train s (CPU s) | "
        "train PSNR | val PSNR | codes used | perplexity |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['base']} | {r['variant']} | `{r['overrides'] or '-'}` | "
        f"{r['steps']} x {r['batch']} | {r['parameters'] / 1e3:.0f}k | "
        f"{r['train_seconds']:.0f} ({r['train_cpu_seconds']:.0f}) | "
        f"{r['train_psnr'] or float('nan'):.2f} | **{r['psnr']:.2f}** | "
        f"{r['codes_used']:.2f} | {r['perplexity']:.0f} |"
        for r in rows
    ]
    (RESULTS.with_suffix(".md")).write_text(
        "# Tokenizer ablations (validation split; generated by experiments/ablations/tokenizer.py)"
        "\n\nval PSNR: pooled PSNR (-10 log10 of the mean MSE) of decode(tokenize(x)) over the "
        "first clip_frames frames of every validation clip. train PSNR: the mean over the last "
        "logged window of training steps. Times are wall (process CPU) seconds of the whole "
        "`genie.train.train` call, compilation and checkpoints included, on a 2-core machine "
        "shared with other jobs, so they are inflated and noisy.\n\n"
        + header
        + "\n".join(lines)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations.tokenizer")
    parser.add_argument("--base", default="coinrun_tiny", help="experiment the variants modify")
    parser.add_argument("--variants", default="tiny", help="comma-separated VARIANTS names")
    parser.add_argument(
        "--tag", default="", help="names extra overrides (e.g. steps900) in the run folder"
    )
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    args, extra = parser.parse_known_args(argv)
    if args.list:
        for name, variant in VARIANTS.items():
            first = "" if variant.random_window else " (first frames only)"
            print(f"{name:20s} {' '.join(variant.overrides)}{first}")
        return
    from genie.writer import setup_logging

    setup_logging()
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"error: unknown variant {name!r}; --list shows them")
        row = run_variant(args.base, name, VARIANTS[name], extra, args.tag)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
