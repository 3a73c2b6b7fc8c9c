"""Loader throughput: python -m benchmarks.loader [--name coinrun_tiny --batch-size 8]

Builds the dataset first (64 CoinRun episodes of 16-frame clips) when it is missing.
"""

from __future__ import annotations

import argparse
import time

from data_pipelines import loader, storage


def measure(name: str, batch_size: int, data_dir=None, seconds: float = 5.0, worker_count=0):
    """(clips/s, frames/s, frame shape) over about `seconds` of iterating the training loader."""
    batches = iter(
        loader.make_loader(
            name,
            batch_size=batch_size,
            data_dir=data_dir,
            worker_count=worker_count,
            process_index=0,
            process_count=1,
        )
    )
    for _ in range(3):  # warm-up: file opening, worker start
        batch = next(batches)
    clips = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        clips += len(next(batches))
    elapsed = time.perf_counter() - started
    return clips / elapsed, clips * batch.shape[1] / elapsed, batch.shape


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__)
    parser.add_argument("--name", default="coinrun_tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worker-count", type=int, default=0, help="grain worker processes")
    args = parser.parse_args(argv)
    if not storage.is_complete(storage.dataset_path(args.name, args.data_dir)):
        from data_pipelines.coinrun import build_coinrun

        build_coinrun(args.name, 64, clip_frames=16, seed=0, data_dir=args.data_dir)
    clips, frames, shape = measure(
        args.name, args.batch_size, args.data_dir, args.seconds, args.worker_count
    )
    print(
        f"loader {args.name!r} train, batch {tuple(shape)} uint8, {args.worker_count} workers: "
        f"{clips:,.0f} clips/s, {frames:,.0f} frames/s"
    )


if __name__ == "__main__":
    main()
