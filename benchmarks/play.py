"""Play speed: frames per second from action to displayed frame, batch 1, after warm-up.

    python -m benchmarks.play [RUN_DIR] [--configs coinrun_tiny coinrun] [--frames 20]

A frame is one `World.step`: MaskGIT sampling (config.dynamics.maskgit_steps refinements with the
key/value cache) plus decoding, through to a uint8 array on the host. Without a run folder the
models of each experiment config are freshly initialised (sampling costs the same whatever the
weights), so nothing needs training first. The context starts from a one-frame prompt and
runs past T frames, so the figure covers the sliding-window steady state.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

from genie.config import MODELS, load_experiment
from genie.stages import build_model
from genie.world import World


def benchmark_world(world: World, frames: int) -> dict:
    size = world.image_size
    prompt = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    world.reset(prompt)
    start = time.perf_counter()
    world.step(0)  # compiles
    compile_seconds = time.perf_counter() - start
    for i in range(world.context_frames):  # fill the context: time the sliding steady state
        world.step(i % world.num_actions)
    start = time.perf_counter()
    for i in range(frames):
        world.step(i % world.num_actions)
    seconds = (time.perf_counter() - start) / frames
    config = world.config
    return {
        "image": f"{size}x{size}",
        "context": world.context_frames,
        "maskgit_steps": world.steps,
        "tokens": world.num_patches,
        "first_frame_s": compile_seconds,
        "ms_per_frame": 1000 * seconds,
        "fps": 1.0 / seconds,
        "dtype": config.dtype,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a trained run (default: untrained configs)")
    parser.add_argument("--configs", nargs="+", default=["coinrun_tiny", "coinrun"])
    parser.add_argument("--frames", type=int, default=20, help="timed frames per world")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    print(f"device: {device.platform} {getattr(device, 'device_kind', '')}, batch 1")
    if args.run_dir:
        worlds = {args.run_dir: lambda: World.from_run(args.run_dir)}
    else:

        def untrained(name):
            config = load_experiment(name)
            models = {name: build_model(config, name, nnx.Rngs(0)) for name in MODELS}
            return World(config, models)

        worlds = {name: (lambda name=name: untrained(name)) for name in args.configs}
    for name, make in worlds.items():
        result = benchmark_world(make(), args.frames)
        fields = " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
        )
        print(f"{name}: {fields}", flush=True)


if __name__ == "__main__":
    main()
