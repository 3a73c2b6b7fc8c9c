"""LAM ablations: train the latent action model alone under named variants, measure on validation.

    python -m experiments.ablations.lam --base coinrun_tiny --variants genie,last_kernels_motion_rel
    python -m experiments.ablations.lam --list

Each variant is a set of `genie train` overrides (named options joined by "_") on top of
`--base`; it trains in `runs/ablations/lam/<base>/<variant>` (resumable: a finished variant is
only re-measured) and is scored on the validation split against the true CoinRun actions,
which the LAM never sees: codebook perplexity, NMI with the six collapsed classes, held-out
probe accuracy (six classes and left/none/right) beside chance, and action gain (validation
MSE under uniformly random actions minus under the inferred ones: how much the decoder uses
the action). One JSON line per measurement goes to `docs/ablations/lam.jsonl`, and
`docs/ablations/lam.md` is redrawn from it.
The test split is never read here: it is for the final report only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.ablations import action_classes, append_row
from genie import metrics
from genie.config import Config, load_experiment
from genie.models.tokenizer import frames_to_unit

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "ablations" / "lam.jsonl"

# Each option is a named set of `genie train` overrides. A variant joins option names with "_"
# ("last_kernels_motion_rel"); "defaults" is the base's LAM unchanged; "genie" is Genie's own
# LAM: every option the base turns on (coinrun_tiny's chosen ones) turned off again.
GENIE_LAM = [
    *["--lam.decoder-context", "all", "--lam.decoder-output", "pixels"],
    *["--lam.motion-size", "0", "--lam.no-decoder-motion", "--lam.center-weight", "0"],
    *["--lam.reconstruction-loss", "mse"],
]
OPTIONS: dict[str, list[str]] = {
    "last": ["--lam.decoder-context", "last"],
    # The decoder reads all of x_1..x_t again (Genie's choice), now with the recipe's kernels,
    # motion and relative loss: history could tell it the velocity, leaving the code the change
    # of velocity an action makes (docs/ablations/action_bound.md: history is what lets a
    # supervised reader tell left from right).
    "all": ["--lam.decoder-context", "all"],
    "kernels": ["--lam.decoder-output", "kernels"],
    "motion": ["--lam.motion-size", "5"],
    "rel": ["--lam.reconstruction-loss", "relative"],
    # Each transition in its own repeat-last-frame units where it changes more than the batch's
    # mean: falls stop outweighing the small scrolls that tell left from right (item 5).
    "capped": ["--lam.reconstruction-loss", "relative_capped"],
    "dmotion": ["--lam.decoder-motion"],
    # The decoder reads only the vertical part of the motion so far: the horizontal scroll,
    # which the held left/right key sets, is left for the code to say.
    "vmotion": ["--lam.decoder-motion-axes", "vertical"],
    "every": ["--lam.action-injection", "every_block"],
    "look2": ["--lam.encoder-lookahead", "2"],
    "look4": ["--lam.encoder-lookahead", "4"],
    "center": ["--lam.center-weight", "20"],
    "center10": ["--lam.center-weight", "10"],
    "center40": ["--lam.center-weight", "40"],
    "csize8": ["--lam.center-size", "8"],
    "continuous": ["--lam.bottleneck", "continuous"],
    "diff": ["--lam.encoder-differences"],
    "patch": ["--lam.action-scale", "patch"],
    "changed": ["--lam.changed-pixel-weight", "9"],
    "p8": ["--lam.patch-size", "8"],
    "p4": ["--lam.patch-size", "4"],
    # More codes than the case study's 6 (Genie uses 8): room for left/right beside the vertical
    # speeds the six codes go to (lam.md, item 5).
    "codes8": ["--lam.num-codes", "8"],
    "codes12": ["--lam.num-codes", "12"],
    # Finite scalar quantisation (genie.models.fsq): 3 x 2 levels = the recipe's 6 codes, no
    # codebook to collapse.
    "fsq": ["--lam.quantizer", "fsq", "--lam.fsq-levels", "3", "2", "--lam.code-dim", "2"],
    # The decoder does not see the central square of x_t, where CoinRun draws the agent: how it
    # looks next (facing, pose) must come from the code.
    "hide": ["--lam.decoder-hide-center"],
    # The kernels may also take from x_t mirrored left-right: the agent turning to face where it
    # is told to go becomes a few kernel weights the action can decide (item 17).
    "mirror": ["--lam.decoder-mirror"],
    # Kernels and cost volumes reaching 3 px instead of 2: CoinRun's fast falls move about 3 px
    # per step, beyond what a 5x5 kernel can move or a 5x5 cost volume can see, so a decoder
    # that knows the motion so far could still not carry a fall on by itself (item 18).
    "k7": ["--lam.kernel-size", "7", "--lam.motion-size", "7"],
    # The decoder sees the first two frames and rolls the rest out open-loop from the codes:
    # to carry the motion forward it can integrate codes that change the velocity (item 24).
    "rollout": ["--lam.decoder-context", "rollout"],
    # The decoder is told how the whole screen moves next, so the code says what that leaves
    # unexplained (item 25).
    "screen": ["--lam.decoder-screen-motion"],
    # a_t also scored on the transition after its own, as if held one step more (item 19).
    "held": ["--lam.held-action-weight", "1.0"],
}


def variant_overrides(variant: str) -> list[str]:
    """ "last_kernels" -> the overrides of options "last" then "kernels"; "defaults" -> [];
    "genie" -> GENIE_LAM."""
    if variant == "defaults":
        return []
    if variant == "genie":
        return list(GENIE_LAM)
    names = variant.split("_")
    unknown = [name for name in names if name not in OPTIONS]
    if unknown:
        raise SystemExit(f"error: unknown option(s) {unknown} in variant {variant!r}; --list")
    return [argument for name in names for argument in OPTIONS[name]]


def global_shifts(frames: np.ndarray, size: int = 5) -> np.ndarray:
    """(M, T, H, W, C) uint8 -> (M, T-1) int: for each transition, the index of the offset of
    `shifted_copies` (S x S, row-major) that best explains x_{t+1} from x_t over the whole
    frame. A yardstick of the motion the LAM could encode, computed without any action."""
    from genie.models.lam import shifted_copies

    pixels = jnp.asarray(frames, jnp.float32) / 255.0
    moved = shifted_copies(pixels[:, :-1], size)
    error = ((moved - pixels[:, 1:, ..., None]) ** 2).mean(axis=(2, 3, 4))
    return np.asarray(error.argmin(-1))


@nnx.jit
def _infer(lam, frames, key):
    """Inferred actions and the MSE of the next-frame predictions under them and under
    uniformly random actions, per clip."""
    actions = lam.infer_actions(frames)
    random_actions = jax.random.randint(key, actions.shape, 0, lam.num_actions)
    target = frames_to_unit(frames[:, 1:])

    def error(predicted):
        return jnp.mean((predicted - target) ** 2, axis=(1, 2, 3, 4))

    inferred_mse = error(lam.reconstruct(frames, actions))
    return actions, inferred_mse, error(lam.reconstruct(frames, random_actions))


def measure(lam, config: Config, split: str = "validation", batch: int = 32) -> dict:
    from data_pipelines.loader import read_clips

    classes_of = action_classes(config)
    data = read_clips(
        config.data.dataset,
        split,
        data_dir=config.data.data_dir,
        clip_frames=config.data.clip_frames,
    )
    frames, true_actions = data["frames"], data["actions"]
    codes, inferred_mse, random_mse, shifts = [], [], [], []
    for start in range(0, len(frames), batch):
        chunk = jnp.asarray(frames[start : start + batch])
        shifts.append(global_shifts(frames[start : start + batch]))
        a, i, r = _infer(lam, chunk, jax.random.key(start))
        codes.append(np.asarray(a))
        inferred_mse.append(np.asarray(i))
        random_mse.append(np.asarray(r))
    codes = np.concatenate(codes).reshape(-1)
    classes = classes_of.classify(true_actions.reshape(-1))
    horizontal = classes_of.group("horizontal", classes)
    usage = metrics.code_usage(codes, lam.num_actions)
    six = metrics.probe_accuracy(codes, classes)
    three = metrics.probe_accuracy(codes, horizontal)
    return {
        "split": split,
        "transitions": int(codes.size),
        "perplexity": usage.perplexity,
        "usage": [round(float(f), 3) for f in usage.fractions],
        "nmi": metrics.normalized_mutual_information(codes, classes),
        "nmi_horizontal": metrics.normalized_mutual_information(codes, horizontal),
        # The same NMI against the best global shift of each transition, and how much of the
        # true action that shift itself carries (the ceiling of a LAM that encodes it).
        "nmi_motion": metrics.normalized_mutual_information(codes, np.concatenate(shifts)),
        "nmi_motion_vs_actions": metrics.normalized_mutual_information(
            np.concatenate(shifts).reshape(-1), classes
        ),
        "probe6": six.accuracy,
        "chance6": six.chance,
        "probe3": three.accuracy,
        "chance3": three.chance,
        "action_gain": float(np.mean(np.concatenate(random_mse) - np.concatenate(inferred_mse))),
    }


def run_variant(base: str, name: str, overrides: list[str], extra: list[str], tag: str) -> dict:
    import tyro

    from genie import checkpoint
    from genie.train import train

    name = f"{name}+{tag}" if tag else name
    run_dir = ROOT / "runs" / "ablations" / "lam" / base / name
    args = [*overrides, *extra, "--run-dir", str(run_dir)]
    config = tyro.cli(Config, default=load_experiment(base), args=args)
    start = time.perf_counter()
    result = train(config, "lam", progress=False)
    seconds = time.perf_counter() - start
    lam, _ = checkpoint.load_model(run_dir, "lam")
    row = {
        "base": base,
        "variant": name,
        "overrides": " ".join([*overrides, *extra]),
        # A run stopped early (SIGTERM) saves and returns: record the step it reached.
        "steps": result["history"][-1]["step"] if result["history"] else config.train_lam.steps,
        "batch": config.train_lam.batch_size,
        "train_seconds": round(seconds, 1),
        "machine": f"{platform.node()} {jax.devices()[0].platform}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "train_psnr": result["metrics"].get("psnr"),
        **measure(lam, config),
    }
    append_row(RESULTS, row)
    write_table()
    return row


def table_row(r: dict) -> str:
    motion = f"{r['nmi_motion']:.3f}" if "nmi_motion" in r else "-"
    return (
        f"| {r['base']} | {r['variant']} | `{r['overrides'] or '-'}` | "
        f"{r['steps']} x {r['batch']} | {r['train_seconds']:.0f} | {r['perplexity']:.2f} | "
        f"{r['nmi']:.3f} | {r['nmi_horizontal']:.3f} | {motion} | "
        f"{r['probe6']:.3f} ({r['chance6']:.3f}) | {r['probe3']:.3f} ({r['chance3']:.3f}) | "
        f"{r['action_gain']:.5f} |"
    )


def write_table() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    header = (
        "| base | variant | overrides | steps x batch | train s | perplexity | NMI (6) | "
        "NMI (L/N/R) | NMI (motion) | probe 6 (chance) | probe L/N/R (chance) | action gain |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    text = RESULTS.with_suffix(".md").read_text() if RESULTS.with_suffix(".md").exists() else ""
    notes = text[text.index(NOTES_HEADING) :] if NOTES_HEADING in text else ""
    RESULTS.with_suffix(".md").write_text(
        "# LAM ablations (validation split; generated by experiments/ablations/lam.py)\n\n"
        + header
        + "\n".join(table_row(r) for r in rows)
        + "\n\n"
        + notes
    )


# Everything below this heading in lam.md is written by hand and kept when the table is redrawn.
NOTES_HEADING = "## Notes"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations.lam")
    parser.add_argument("--base", default="coinrun_tiny", help="experiment the variants modify")
    parser.add_argument(
        "--variants",
        default="defaults",
        help='comma-separated variants: OPTIONS names joined by "_", "defaults" or "genie"',
    )
    parser.add_argument(
        "--tag", default="", help="names extra overrides (e.g. lr3e-3) in the run folder"
    )
    parser.add_argument(
        "--list", action="store_true", help="print the options variants are made of, and exit"
    )
    args, extra = parser.parse_known_args(argv)
    if args.list:
        print("defaults             the base's LAM as it is")
        print(f"genie                Genie's LAM: {' '.join(GENIE_LAM)}")
        for name, overrides in OPTIONS.items():
            print(f"{name:20s} {' '.join(overrides)}")
        print('variants join options with "_", e.g. last_kernels_motion_rel')
        return
    from genie.writer import setup_logging

    setup_logging()
    for name in args.variants.split(","):
        row = run_variant(args.base, name, variant_overrides(name), extra, args.tag)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
