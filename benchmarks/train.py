"""Training throughput per stage: frames/s, steps/s and, on a known accelerator, MFU.

    python -m benchmarks.train [--configs coinrun_tiny coinrun] [--steps 10]

Random uint8 clips stand in for data (the loader has its own benchmark), and stages that read
frozen models (dynamics, lam_dynamics) read freshly initialised ones, so nothing needs training
first.
FLOPs per step come from XLA's cost analysis of the lowered step (`step_flops`); MFU divides
achieved FLOP/s by the chip's peak dense bf16 rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np
from flax import nnx

from genie.config import STAGES, Config, load_experiment
from genie.sharding import batch_sharding, create_sharded, mesh_for
from genie.stages import STAGE_SPECS, build_model
from genie.train import compile_ready_step, make_optimizer

# Peak dense bf16 FLOP/s by device kind (vendor datasheets).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12, "TPU v5": 459e12}


def peak_flops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_FLOPS.items() if k in kind), None)


def step_flops(lowered) -> float:
    """FLOPs of one step from XLA's cost analysis of the *lowered* (unoptimised) program.

    The compiled program's analysis is backend-specific: on a GPU the matrix products become
    cuBLAS/cuDNN custom calls that it does not count (an H200 run reported 0.45 TFLOP for a
    tokenizer step whose lowered program does 85), so MFU from it was ~200x too low."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


# Steps traced with `profile_dir` after the timed ones: enough to see every kernel of a step
# more than once, few enough that a GPU trace stays small.
PROFILE_STEPS = 3


def time_step(step_fn, state, frozen_state, frames, steps: int, profile_dir=None):
    """Compiles `step_fn(state, frozen_state, frames, key) -> (state, out)` (which donates
    `state`), runs it once to warm up, then `steps` times on the same frames with a new key
    each. Returns (seconds per step, FLOPs per step from XLA's cost analysis, the last out).
    With `profile_dir`, PROFILE_STEPS more steps run afterwards under `jax.profiler.trace`
    (outside the timed ones, which tracing would slow): `benchmarks.trace_summary` reads it."""
    key = jax.random.key(0)
    lowered = step_fn.lower(state, frozen_state, frames, key)
    flops = step_flops(lowered)
    compiled = lowered.compile()
    state, out = compiled(state, frozen_state, frames, key)  # warm-up
    jax.block_until_ready(out)
    start = time.perf_counter()
    for i in range(steps):
        state, out = compiled(state, frozen_state, frames, jax.random.fold_in(key, i))
    jax.block_until_ready(out)
    seconds = (time.perf_counter() - start) / steps
    if profile_dir is not None:
        with jax.profiler.trace(str(profile_dir)):
            for i in range(steps, steps + PROFILE_STEPS):
                state, out = compiled(state, frozen_state, frames, jax.random.fold_in(key, i))
            jax.block_until_ready(out)
    return seconds, flops, out


def benchmark_stage(
    config: Config, stage: str, steps: int, batch_size: int | None, profile_dir=None
) -> dict:
    """Frames/s, steps/s, FLOPs per step and MFU of `stage`'s training step on random clips;
    with `profile_dir` also a trace of PROFILE_STEPS steps there (`time_step`)."""
    train = config.train(stage)
    if batch_size:
        config = dataclasses.replace(
            config, **{f"train_{stage}": dataclasses.replace(train, batch_size=batch_size)}
        )
    batch = config.train(stage).batch_size
    mesh = mesh_for(config)
    spec = STAGE_SPECS[stage]

    def make():
        rngs = nnx.Rngs(params=0)
        models = {name: build_model(config, name, rngs) for name in spec.trains}
        optimizers = {
            name: nnx.Optimizer(model, make_optimizer(config, stage), wrt=nnx.Param)
            for name, model in models.items()
        }
        frozen = {name: build_model(config, name, rngs) for name in spec.frozen}
        return models, optimizers, frozen

    # Created in their shardings, as the training loop does.
    models, optimizers, frozen = create_sharded(make, mesh, fsdp=config.fsdp)
    step_fn, _, state, frozen_state = compile_ready_step(
        config, stage, models, optimizers, frozen, mesh
    )
    data = config.data
    shape = (batch, data.clip_frames, data.image_size, data.image_size, 3)
    frames = jax.device_put(
        np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), batch_sharding(mesh)
    )
    seconds, flops, _ = time_step(step_fn, state, frozen_state, frames, steps, profile_dir)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(models, nnx.Param)))
    peak = peak_flops(jax.devices()[0])
    return {
        "stage": stage,
        "params": params,
        "batch": batch,
        "frames_per_s": batch * data.clip_frames / seconds,
        "steps_per_s": 1.0 / seconds,
        "tflops_per_step": flops / 1e12,
        "mfu": (flops / seconds) / (peak * mesh.size) if peak and flops else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["coinrun_tiny", "coinrun"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--cpu-batch",
        type=int,
        default=2,
        help="batch for GPU-sized configs when running on a CPU (their real batch takes hours)",
    )
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(f"device: {jax.device_count()} x {device.device_kind} ({device.platform})")
    print(
        f"{'config':<14}{'stage':<14}{'params':>10}{'batch':>7}{'frames/s':>11}"
        f"{'steps/s':>9}{'TFLOP/step':>12}{'MFU':>7}"
    )
    for name in args.configs:
        config = load_experiment(name)
        small_cpu = device.platform == "cpu" and config.train("tokenizer").batch_size > 8
        for stage in args.stages:
            r = benchmark_stage(config, stage, args.steps, args.cpu_batch if small_cpu else None)
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
            print(
                f"{name:<14}{stage:<14}{r['params'] / 1e6:>9.2f}M{r['batch']:>7}"
                f"{r['frames_per_s']:>11.1f}{r['steps_per_s']:>9.2f}"
                f"{r['tflops_per_step']:>12.4f}{mfu:>7}",
                flush=True,
            )


if __name__ == "__main__":
    main()
