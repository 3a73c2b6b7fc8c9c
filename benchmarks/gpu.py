"""One accelerator, a few minutes: the figures genie reports for a GPU, as one JSON file.

    python -m benchmarks.gpu --clips .gpu/clips.npz --out gpu.json        # on the GPU machine
    python -m benchmarks.gpu --export-clips .gpu/clips.npz                 # here, first
    python -m benchmarks.gpu --dry --clips .gpu/clips.npz --out dry.json   # the same, tiny, CPU

Three parts, each timed after compilation:
1. Training throughput of every stage at `experiments/coinrun.py` (bf16 compute): frames/s,
   steps/s, FLOPs per step from XLA's cost analysis and MFU against the chip's peak dense bf16
   rate (`benchmarks.train`).
2. Play: frames/s at batch 1 with the config's MaskGIT steps (25 at `coinrun`), from a
   one-frame prompt into the sliding-window steady state (`benchmarks.play`).
3. Tokenizer training on real CoinRun clips for `--train-seconds`: the reconstruction PSNR of
   held-out clips against training time, so a reader sees what a GPU-minute buys.

The accelerator machine has jax, flax, optax and orbax but neither the datasets nor TFDS and
grain, so part 3 reads clips exported here (`--export-clips`: the first clips of a built
dataset's train and test splits, as one compressed .npz) and trains with its own short loop
over `genie.train.compile_ready_step`, without checkpoints or the data loader. `--dry` runs
the same code on the demo's tiny config for a few steps, so CPU tests keep it working.
`benchmarks/gpu.sh` prepares and runs all of it. `--profile` also traces three steps of each
stage after its timed ones (`jax.profiler`, into a `profile/` folder beside the report) and
adds each stage's busiest kernels to the report (`benchmarks.trace_summary`): where a low MFU
comes from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.trace_summary import summarize
from genie.config import STAGES, Config, load_experiment


def export_clips(path: Path, dataset: str, data_dir: str | None, train: int, test: int) -> dict:
    """Writes the first `train` clips of `dataset`'s train split and `test` of its test split
    (frames only) as one compressed npz; returns their shapes."""
    from data_pipelines.loader import read_clips

    arrays = {
        split: read_clips(dataset, split, data_dir=data_dir, limit=count)["frames"]
        for split, count in (("train", train), ("test", test))
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return {split: list(frames.shape) for split, frames in arrays.items()}


def train_tokenizer_for(config: Config, clips: dict, seconds: float, evals: int = 6) -> dict:
    """Trains the tokenizer from scratch on clips["train"] for about `seconds` (after
    compilation), measuring the pooled reconstruction PSNR of clips["test"] `evals` times."""
    from flax import nnx

    from genie.models.tokenizer import frames_to_unit, unit_to_uint8
    from genie.sharding import batch_sharding, create_sharded, mesh_for
    from genie.stages import build_model
    from genie.train import compile_ready_step, make_optimizer

    train_config = config.train("tokenizer")
    mesh = mesh_for(config)

    def make():
        model = build_model(config, "tokenizer", nnx.Rngs(params=config.seed))
        optimizer = nnx.Optimizer(model, make_optimizer(config, "tokenizer"), wrt=nnx.Param)
        return {"tokenizer": model}, {"tokenizer": optimizer}

    models, optimizers = create_sharded(make, mesh, fsdp=config.fsdp)
    step_fn, graphdef, state, _ = compile_ready_step(
        config, "tokenizer", models, optimizers, {}, mesh
    )
    sharding = batch_sharding(mesh)
    rng = np.random.default_rng(config.seed)
    train_clips, test_clips = clips["train"], clips["test"]
    t, batch = config.data.clip_frames, train_config.batch_size

    def next_batch():
        rows = rng.integers(0, len(train_clips), batch)
        starts = rng.integers(0, train_clips.shape[1] - t + 1, batch)
        frames = np.stack([train_clips[r, s : s + t] for r, s in zip(rows, starts, strict=True)])
        return jax.device_put(frames, sharding)

    @nnx.jit
    def squared_error(tokenizer, frames):
        # Scored as `genie eval` scores it: the decoded frame rounded to uint8, then in [0, 1].
        reconstruction = unit_to_uint8(tokenizer.decode(tokenizer.tokenize(frames)))
        return ((frames_to_unit(reconstruction) - frames_to_unit(frames)) ** 2).sum()

    def test_psnr() -> float:
        tokenizer = nnx.merge(graphdef, state)[0]["tokenizer"]
        total, count = 0.0, 0
        for start in range(0, len(test_clips) - batch + 1, batch):
            frames = jax.device_put(test_clips[start : start + batch, :t], sharding)
            total += float(squared_error(tokenizer, frames))
            count += frames.size
        return float(-10 * np.log10(total / count))

    key = jax.random.key(config.seed)
    state, metrics = step_fn(state, None, next_batch(), key)  # compiles
    jax.block_until_ready(metrics)
    curve, step, trained = [], 1, 0.0
    for checkpoint in range(1, evals + 1):
        start = time.perf_counter()
        until = seconds * checkpoint / evals
        while trained + (time.perf_counter() - start) < until and step < train_config.steps:
            state, metrics = step_fn(state, None, next_batch(), jax.random.fold_in(key, step))
            step += 1
        jax.block_until_ready(metrics)
        trained += time.perf_counter() - start
        curve.append({"seconds": round(trained, 1), "step": step, "test_psnr": test_psnr()})
    return {
        "batch": batch,
        "clip_frames": t,
        "steps": step,
        "frames_per_s": step * batch * t / trained,
        "train_loss": float(metrics["loss"]),
        "curve": curve,
    }


def run(args: argparse.Namespace, save=lambda report: None) -> dict:
    """Runs the three parts, calling `save(report)` after each, so a run cut short by its time
    limit still leaves the figures it has."""
    from flax import nnx

    from benchmarks.play import benchmark_world
    from benchmarks.train import benchmark_stage
    from genie.config import MODELS
    from genie.models.st_transformer import attention_implementation
    from genie.stages import build_model
    from genie.world import World

    device = jax.devices()[0]
    config = load_experiment("coinrun_tiny" if args.dry else "coinrun")
    config = dataclasses.replace(config, dtype="bfloat16")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
        "host": platform.node(),
        "jax": jax.__version__,
        "config": config.name,
        "dtype": config.dtype,
        # The attention asked for (the head size of the dynamics model's transformer); should
        # cuDNN refuse it while tracing, XLA runs and the log says so.
        "attention_requested": attention_implementation(
            config.compute_dtype,
            config.dynamics.transformer.width // config.dynamics.transformer.heads,
        ),
        "dry": args.dry,
    }
    steps = 2 if args.dry else args.steps
    report["training"] = []
    for stage in args.stages:
        batch = 2 if args.dry else None
        profile_dir = Path(args.out).parent / "profile" / stage if args.profile else None
        result = benchmark_stage(config, stage, steps, batch, profile_dir)
        if profile_dir is not None:
            # The busiest kernels of three traced steps, per device and for the host; the
            # whole trace stays in profile_dir for TensorBoard / XProf.
            result["profile"] = summarize(profile_dir, top=15)
        report["training"].append(result)
        print(json.dumps(result), flush=True)
        save(report)

    models = {name: build_model(config, name, nnx.Rngs(0)) for name in MODELS}
    report["play"] = benchmark_world(World(config, models), 3 if args.dry else args.play_frames)
    print(json.dumps(report["play"]), flush=True)
    save(report)

    clips = dict(np.load(args.clips))
    tokenizer_config = config
    if args.dry:
        tokenizer_config = dataclasses.replace(
            config, train_tokenizer=dataclasses.replace(config.train_tokenizer, batch_size=2)
        )
    # A schedule for a run of minutes, not of days: short warm-up, no decay to speak of.
    train = tokenizer_config.train_tokenizer
    tokenizer_config = dataclasses.replace(
        tokenizer_config,
        train_tokenizer=dataclasses.replace(train, warmup_steps=100, steps=1_000_000),
    )
    seconds = 2.0 if args.dry else args.train_seconds
    report["tokenizer_training"] = train_tokenizer_for(
        tokenizer_config, clips, seconds, evals=2 if args.dry else 6
    )
    print(json.dumps(report["tokenizer_training"]), flush=True)
    save(report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu.json", help="the JSON report")
    parser.add_argument("--clips", default=".gpu/clips.npz", help="clips from --export-clips")
    parser.add_argument("--dry", action="store_true", help="tiny config, a few steps, any device")
    # lam_dynamics is left out by default: on an H200 (2026-11-28) the 8-minute slot ran out
    # while it compiled at `coinrun`, and its step is the LAM's and the dynamics' together.
    parser.add_argument(
        "--stages",
        nargs="+",
        default=["tokenizer", "lam", "dynamics"],
        choices=STAGES,
        help="stages whose training step is timed (default: tokenizer lam dynamics)",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per stage")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also trace 3 steps of each stage into OUT's folder/profile/STAGE and put their "
        "busiest kernels in the report (benchmarks/trace_summary.py)",
    )
    parser.add_argument("--play-frames", type=int, default=30, help="timed play frames")
    parser.add_argument(
        "--train-seconds",
        type=float,
        default=60.0,
        help="seconds of tokenizer training on real clips (default: 60)",
    )
    parser.add_argument(
        "--export-clips", metavar="PATH", help="write clips for part 3 to PATH and exit"
    )
    parser.add_argument("--dataset", default="coinrun_cpu", help="for --export-clips")
    parser.add_argument("--data-dir", default=None, help="for --export-clips")
    parser.add_argument("--train-clips", type=int, default=1024, help="for --export-clips")
    parser.add_argument("--test-clips", type=int, default=96, help="for --export-clips")
    args = parser.parse_args(argv)
    if args.export_clips:
        shapes = export_clips(
            Path(args.export_clips), args.dataset, args.data_dir, args.train_clips, args.test_clips
        )
        print(f"wrote {args.export_clips}: {shapes}")
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()

    def save(report: dict) -> None:
        report["elapsed_s"] = round(time.perf_counter() - start, 1)  # compilation included
        partial = out.with_suffix(".partial")
        partial.write_text(json.dumps(report, indent=2) + "\n")
        partial.replace(out)  # never a half-written report

    run(args, save)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
