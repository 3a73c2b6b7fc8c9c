"""One process of a two-process CPU training job on localhost, for tests/test_multihost.py.

    python -m tests.multihost_worker PROCESS_ID PORT RUN_DIR STEPS [SIGTERM_AFTER]

Each process starts jax.distributed through genie's own settings (one CPU device each, gloo
collectives), reads its own half of the clips (local batch 2 of the global 4) and trains the
tokenizer of `tiny_config`. With SIGTERM_AFTER > 0 it sends itself SIGTERM after that many
batches. The last line printed is JSON: the process id, its logged losses and the steps saved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"


def main(argv: list[str]) -> None:
    process_id, port, run_dir, steps = int(argv[0]), int(argv[1]), argv[2], int(argv[3])
    sigterm_after = int(argv[4]) if len(argv) > 4 else 0

    from genie.sharding import initialize_distributed

    initialize_distributed(f"localhost:{port}", 2, process_id)

    from genie import checkpoint
    from genie.train import train
    from tests.conftest import moving_square_clips, synthetic_iterator, tiny_config
    from tests.test_train import InterruptAfter

    iterator = synthetic_iterator(moving_square_clips(32)[process_id::2], 2)
    if sigterm_after:
        iterator = InterruptAfter(iterator, sigterm_after)
    config = tiny_config(run_dir, steps=steps)
    # Pictures every 3 steps: drawn by both processes from the same inputs, written by one.
    config = dataclasses.replace(
        config, train_tokenizer=dataclasses.replace(config.train_tokenizer, image_every=3)
    )
    result = train(config, "tokenizer", data_iterator=iterator, progress=False)
    manager = checkpoint.checkpoint_manager(result["folder"], read_only=True)
    report = {
        "process": process_id,
        "losses": {m["step"]: m["loss"] for m in result["history"]},
        "saved": manager.all_steps(),
        "images": sorted(path.name for path in (result["folder"] / "images").glob("*.png")),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
