"""How much CoinRun's frames say about its actions: a supervised ceiling for the LAM's codes.

    python -m experiments.ablations.action_bound --base coinrun_tiny --window 8
    python -m experiments.ablations.action_bound --base coinrun_tiny --window 2

The LAM must find the actions without labels (docs/ablations/lam.md); this script asks what its
own encoder could read from the same frames if it *were* told them. It builds the base's LAM,
keeps only its encoder (the causal ST transformer over patches and motion cost volumes, pooled
and projected to one latent per transition: `LatentActionModel.encode`), adds a linear head over
CoinRun's six collapsed classes and trains both with cross-entropy on the training split's true
actions, at the LAM's own schedule (steps, batch, learning rate). Scored on the validation
transitions the LAM ablations score (each clip's first `clip_frames` frames): accuracy over the
six classes and over left/none/right, beside the majority-class chance, and NMI of the
predicted class with the true one, in the units of lam.md's columns.

So the numbers bound what any six-code LAM with this encoder and budget could reach on those
columns; they do not bound other encoders. `--window 2` trains and scores on frame pairs
(x_t, x_{t+1}) alone, `--window clip_frames` with the history before them (the encoder is
causal, so transition t still never sees x_{t+2} or later).

True actions train this classifier only: no LAM or world is trained or selected with it, and
the test split is never read. One JSON line per run goes to docs/ablations/action_bound.jsonl;
docs/ablations/action_bound.md is redrawn from it (its hand-written notes kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from experiments.ablations import action_classes, append_row, latest_rows
from genie import metrics
from genie.config import Config, load_experiment
from genie.models.lam import LatentActionModel
from genie.train import make_optimizer

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "ablations" / "action_bound.jsonl"
NOTES_HEADING = "## Notes"


class ActionClassifier(nnx.Module):
    """The LAM's encoder with a linear head: (B, T, H, W, C) uint8 -> (B, T-1, classes)
    logits, transition t read where the LAM reads its latent action."""

    def __init__(self, config: Config, num_classes: int, *, rngs: nnx.Rngs):
        self.lam = LatentActionModel(
            config.lam,
            image_size=config.data.image_size,
            max_frames=config.data.clip_frames,
            rngs=rngs,
        )
        self.head = nnx.Linear(config.lam.code_dim, num_classes, rngs=rngs)

    def __call__(self, frames: jax.Array) -> jax.Array:
        return self.head(self.lam.encode(frames))


def random_windows(
    frames: np.ndarray, classes: np.ndarray, window: int, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random `window`-frame windows of random clips: frames (B, window, H, W, C)
    and the classes of their transitions (B, window-1); classes[:, t] turned frames[:, t]
    into frames[:, t+1], as in the clips."""
    clip = rng.integers(0, len(frames), batch)
    start = rng.integers(0, frames.shape[1] - window + 1, batch)
    steps = start[:, None] + np.arange(window)
    return frames[clip[:, None], steps], classes[clip[:, None], steps[:, :-1]]


def pairs(frames: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, T, ...) clips -> (M*(T-1), 2, ...) consecutive frame pairs, (M*(T-1), 1) classes."""
    m, t = classes.shape
    both = np.stack([frames[:, :-1], frames[:, 1:]], axis=2)  # (M, T-1, 2, H, W, C)
    return both.reshape(m * t, 2, *frames.shape[2:]), classes.reshape(m * t, 1)


@nnx.jit
def _train_step(model, optimizer, frames, classes):
    def loss_fn(model):
        logits = model(frames)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, classes).mean()
        return loss, (logits.argmax(-1) == classes).mean()

    (loss, accuracy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, accuracy


@nnx.jit
def _predict(model, frames):
    return model(frames).argmax(-1)


def predict(model: ActionClassifier, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    out = [
        np.asarray(_predict(model, jnp.asarray(frames[i : i + batch])))
        for i in range(0, len(frames), batch)
    ]
    return np.concatenate(out)


def scores(predicted: np.ndarray, true: np.ndarray, classes: metrics.ActionClasses) -> dict:
    """Accuracy and NMI of predicted classes against the true ones, over the six classes and
    over left/none/right, with the majority-class chance of each."""
    predicted, true = predicted.reshape(-1), true.reshape(-1)
    horizontal_pred = classes.group("horizontal", predicted)
    horizontal_true = classes.group("horizontal", true)

    def chance(labels):
        return float(np.bincount(labels).max() / labels.size)

    return {
        "transitions": int(true.size),
        "accuracy6": float(np.mean(predicted == true)),
        "chance6": chance(true),
        "accuracy3": float(np.mean(horizontal_pred == horizontal_true)),
        "chance3": chance(horizontal_true),
        "nmi": metrics.normalized_mutual_information(predicted, true),
        "nmi_horizontal": metrics.normalized_mutual_information(horizontal_pred, horizontal_true),
    }


def run(config: Config, window: int, steps: int, seed: int = 0, progress: bool = True) -> dict:
    """Trains the classifier on the training split and scores it on validation."""
    from data_pipelines.loader import read_clips

    clip_frames = config.data.clip_frames
    if window not in (2, clip_frames):
        raise SystemExit(f"error: --window must be 2 or the base's clip_frames ({clip_frames})")
    classes = action_classes(config)
    train = read_clips(config.data.dataset, "train", data_dir=config.data.data_dir)
    train_classes = classes.classify(train["actions"])
    schedule = dataclasses.replace(config.train_lam, steps=steps)
    tx = make_optimizer(dataclasses.replace(config, train_lam=schedule), "lam")
    model = ActionClassifier(config, len(classes.names), rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"bound window {window}", disable=not progress)
    for step in bar:
        frames, labels = random_windows(
            train["frames"], train_classes, window, schedule.batch_size, rng
        )
        loss, accuracy = _train_step(model, optimizer, jnp.asarray(frames), jnp.asarray(labels))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", accuracy=f"{float(accuracy):.2f}")
    seconds = time.perf_counter() - start
    validation = read_clips(
        config.data.dataset, "validation", data_dir=config.data.data_dir, clip_frames=clip_frames
    )
    frames, true = validation["frames"], classes.classify(validation["actions"])
    if window == 2:
        frames, true = pairs(frames, true)
    return {
        "train_seconds": round(seconds, 1),
        "train_clips": int(len(train["frames"])),
        **scores(predict(model, frames), true, classes),
    }


def table_row(r: dict) -> str:
    return (
        f"| {r['base']} | {r['window']} | {r['steps']} x {r['batch']} | {r['seed']} | "
        f"{r['train_seconds']:.0f} | {r['nmi']:.3f} | {r['nmi_horizontal']:.3f} | "
        f"{r['accuracy6']:.3f} ({r['chance6']:.3f}) | {r['accuracy3']:.3f} ({r['chance3']:.3f}) |"
    )


def write_table() -> None:
    header = (
        "| base | window | steps x batch | seed | train s | NMI (6) | NMI (L/N/R) | "
        "accuracy 6 (chance) | accuracy L/N/R (chance) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    page = RESULTS.with_suffix(".md")
    text = page.read_text() if page.exists() else ""
    notes = text[text.index(NOTES_HEADING) :] if NOTES_HEADING in text else ""
    page.write_text(
        "# What the frames say about the actions: a supervised ceiling for the LAM "
        "(validation split; generated by experiments/ablations/action_bound.py)\n\n"
        + header
        + "\n".join(table_row(r) for r in latest_rows(RESULTS))
        + "\n\n"
        + notes
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations.action_bound")
    parser.add_argument("--base", default="coinrun_tiny", help="experiment whose LAM and data")
    parser.add_argument("--window", type=int, default=None, help="2, or clip_frames (default)")
    parser.add_argument("--steps", type=int, default=None, help="default: the LAM's steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = load_experiment(args.base)
    window = args.window or config.data.clip_frames
    steps = args.steps or config.train_lam.steps
    row = {
        "base": args.base,
        "variant": f"window{window}+s{steps}+seed{args.seed}",
        "window": window,
        "steps": steps,
        "batch": config.train_lam.batch_size,
        "seed": args.seed,
        "machine": f"{platform.node()} {jax.devices()[0].platform}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        **run(config, window, steps, args.seed),
    }
    append_row(RESULTS, row)
    write_table()
    print(json.dumps(row))


if __name__ == "__main__":
    main()
