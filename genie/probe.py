"""`genie probe RUN_DIR`: what does each latent action do?

Four views, written to `--out` (default `RUN_DIR/probe_<split>/`):

1. Rollouts: from the first frame of each of `--prompts` clips, hold each latent action for
   `--steps` steps. `actions.gif` plays the grid (rows prompts, columns actions) and
   `actions_last_frame.png` shows where each ended up.
2. Codebook usage of the LAM on `--clips` clips of the split: `code_usage.png`, counts,
   fractions and perplexity (exp of the entropy: 1 if one code explains every transition, |A|
   if all are used equally).
3. `code_motion.png`, what each code does at a glance, one column per code: from the real
   transitions the LAM assigned it, the mean global shift of the picture (an arrow, with its
   length and the code's share of transitions) and the mean signed frame difference
   x_{t+1} - x_t; below them, the last frames of the code's rollouts from view 1.
4. Where the dataset stores true actions and declares what they mean (CoinRun: its builder
   writes the classes its 15 button combinations collapse to, {none, left, right} x {jump, no
   jump}, into the dataset's build info; `genie.metrics.ActionClasses`): the confusion matrix
   of codes against true classes (`confusion.png`), their normalised mutual information, and
   the held-out accuracy of a probe predicting the true class from the code, beside the
   majority-class chance level; the same probe for each coarser group the dataset declares
   (CoinRun: left/none/right), on the same split. A dataset without them (a video folder)
   gets views 1-3 and a line saying so.

Numbers go to `probe.json` and `probe.md`. The key mapping for `genie play` goes to
`keymap.json` (or `--keymap-out`): a JSON object from key name to 0-based latent action,

    {"left": 2, "right": 4, "up": 1, "none": 0, "down": 0}

as `genie play --keymap` reads it (arrow keys and their WASD twins; "none" binds no key there and
is kept for readers). "down" gets the "none" code (in CoinRun down does nothing except on a
crate). The codes are chosen from the confusion matrix where true actions exist and the
dataset says which class each key stands for (`keymap_from_confusion`), else from the motion
each code causes in the data (`keymap_from_motion`, a heuristic; see there).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from genie import media, metrics, plots
from genie.inference import Engine, map_batches
from genie.writer import json_safe

KEYS = ("left", "right", "up", "none")
KEYMAP_KEYS = (*KEYS, "down")  # what keymap.json holds; "down" copies "none" (module docstring)
KEYMAP_PRIOR = 1.0  # pseudo-transitions shrinking P(class | code) of rarely used codes


# --------------------------------------------------------------------------------------------
# 1. Rollouts of every latent action


def action_rollouts(
    rollout: Callable[[np.ndarray, np.ndarray], np.ndarray],
    prompts: np.ndarray,
    num_actions: int,
    steps: int,
) -> np.ndarray:
    """Holds each latent action for `steps` steps from each prompt frame.

    ``rollout(prompt uint8 (B, 1, H, W, 3), actions (B, steps)) -> uint8 (B, steps, H, W, 3)``
    is called once with B = P * |A|. Prompts uint8 (P, H, W, 3) -> uint8
    (P, |A|, 1 + steps, H, W, 3), the prompt frame first.
    """
    prompts = np.asarray(prompts)
    if prompts.ndim != 4 or prompts.dtype != np.uint8:
        raise ValueError(f"prompts must be uint8 (P, H, W, 3), got {prompts.dtype} {prompts.shape}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    count = len(prompts)
    prompt_batch = np.repeat(prompts, num_actions, axis=0)[:, None]  # (P*A, 1, H, W, 3)
    actions = np.tile(np.arange(num_actions, dtype=np.int32), count)
    actions = np.repeat(actions[:, None], steps, axis=1)  # row p*A + a holds action a
    frames = np.asarray(rollout(prompt_batch, actions))
    expected = (count * num_actions, steps, *prompts.shape[1:])
    if frames.shape != expected or frames.dtype != np.uint8:
        raise ValueError(
            f"rollout returned {frames.dtype} {frames.shape}, expected uint8 {expected}"
        )
    videos = np.concatenate([prompt_batch, frames], axis=1)
    return videos.reshape(count, num_actions, steps + 1, *prompts.shape[1:])


def _labelled_cells(frames: np.ndarray, scale: int) -> np.ndarray:
    """(P, A, H, W, 3) -> (P, A, h, w, 3): upscaled, each cell captioned with its action."""
    rows = []
    for prompt_frames in frames:
        cells = [
            plots.label_image(media.upscale(frame, scale), f"a = {a}")
            for a, frame in enumerate(prompt_frames)
        ]
        rows.append(np.stack(cells))
    return np.stack(rows)


def write_rollouts(videos: np.ndarray, out: Path) -> dict[str, Path]:
    """actions.gif and actions_last_frame.png of (P, A, T, H, W, 3) videos."""
    scale = max(1, 96 // videos.shape[-2])
    grid_frames = []
    for t in range(videos.shape[2]):
        cells = _labelled_cells(videos[:, :, t], scale)
        caption = "prompt" if t == 0 else f"step {t}"
        grid = plots.image_grid(cells)
        grid_frames.append(
            plots.label_image(grid, f"rows: prompts, columns: latent actions; {caption}")
        )
    paths = {"gif": out / "actions.gif", "png": out / "actions_last_frame.png"}
    media.save_gif(paths["gif"], np.stack(grid_frames), fps=4)
    media.save_png(paths["png"], grid_frames[-1])
    return paths


# --------------------------------------------------------------------------------------------
# 2. and 3. Code statistics


def frame_shifts(frames: np.ndarray) -> np.ndarray:
    """uint8 clips (M, T, H, W, 3) -> (M, T-1, 2) float: the (dy, dx) displacement in pixels of
    the content from frame t to t+1, by phase correlation of the grey images (the integer shift
    that best aligns them; image y grows downwards, so dy < 0 is upward motion)."""
    grey = np.asarray(frames, np.float64).mean(-1)
    grey = grey - grey.mean(axis=(-2, -1), keepdims=True)
    spectra = np.fft.fft2(grey)
    cross = spectra[:, 1:] * np.conj(spectra[:, :-1])
    correlation = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    height, width = grey.shape[-2:]
    flat = correlation.reshape(*correlation.shape[:2], -1).argmax(-1)
    dy, dx = np.unravel_index(flat, (height, width))
    dy = np.where(dy > height // 2, dy - height, dy)
    dx = np.where(dx > width // 2, dx - width, dx)
    return np.stack([dy, dx], axis=-1).astype(np.float64)


def code_motion(frames: np.ndarray, codes: np.ndarray, num_codes: int) -> dict[str, list]:
    """Per latent code, the mean content motion of the transitions it was inferred for:
    ``dy``, ``dx`` (pixels per step, `frame_shifts`) and ``change`` (mean absolute pixel
    difference on the [0, 1] scale); NaN for codes never inferred."""
    shifts = frame_shifts(frames).reshape(-1, 2)
    frames = np.asarray(frames, np.float32) / 255.0
    change = np.abs(frames[:, 1:] - frames[:, :-1]).mean(axis=(-3, -2, -1)).reshape(-1)
    codes = np.asarray(codes).reshape(-1)
    result = {"dy": [], "dx": [], "change": []}
    for k in range(num_codes):
        chosen = codes == k
        for name, values in (("dy", shifts[:, 0]), ("dx", shifts[:, 1]), ("change", change)):
            result[name].append(float(values[chosen].mean()) if chosen.any() else float("nan"))
    return result


def mean_frame_difference(frames: np.ndarray, codes: np.ndarray, num_codes: int) -> np.ndarray:
    """uint8 clips (M, T, H, W, 3) and their codes (M, T-1) -> (K, H, W) float: per latent
    code, the mean signed change x_{t+1} - x_t (averaged over colour channels, [0, 1] scale) of
    the transitions it was inferred for; NaN for codes never inferred."""
    frames = np.asarray(frames, np.float32) / np.float32(255.0)
    change = (frames[:, 1:] - frames[:, :-1]).mean(-1)
    change = change.reshape(-1, change.shape[-2] * change.shape[-1])
    codes = np.asarray(codes).reshape(-1)
    one_hot = (codes[:, None] == np.arange(num_codes)).astype(np.float32)  # (transitions, K)
    counts = one_hot.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (one_hot.T @ change).astype(np.float64) / counts[:, None]
    mean[counts == 0] = np.nan
    return mean.reshape(num_codes, *frames.shape[2:4])


def _probe(codes: np.ndarray, labels: np.ndarray, names, seed: int) -> dict:
    probe = metrics.probe_accuracy(codes, labels, seed=seed)
    return {
        "classes": list(names),
        "probe_accuracy": probe.accuracy,
        "chance_accuracy": probe.chance,
        "code_to_class": {str(k): names[a] for k, a in probe.code_to_action.items()},
        "probe_train_transitions": probe.num_train,
        "probe_test_transitions": probe.num_test,
    }


def probe_true_actions(
    codes, true_actions, num_codes: int, action_classes: metrics.ActionClasses, seed: int = 0
) -> dict:
    """Codes against true actions, collapsed to the classes the dataset declares
    (`action_classes`) -> the confusion matrix (codes x classes), NMI, held-out probe accuracy
    and its chance level, and under each declared group's name (CoinRun: "horizontal",
    left/none/right with jump dropped) the probe of that group on the same held-out
    transitions (same seed, same split)."""
    classes = action_classes.classify(true_actions).reshape(-1)
    codes = np.asarray(codes).reshape(-1)
    names = action_classes.names
    confusion = metrics.confusion_matrix(codes, classes, num_codes, len(names))
    report = {
        **_probe(codes, classes, names, seed),
        "confusion": confusion.tolist(),
        "nmi": metrics.normalized_mutual_information(codes, classes),
        "groups": list(action_classes.groups),
        "keys": action_classes.keys,
    }
    for group, (group_names, _) in action_classes.groups.items():
        report[group] = _probe(codes, action_classes.group(group, classes), group_names, seed)
    return report


def _assign(scores: np.ndarray, used: np.ndarray) -> list[int]:
    """(K, keys) scores -> one code per key, only among `used` codes (a key bound to a code the
    LAM never inferred would do something nobody has seen). Distinct codes with the best total
    score when there are enough used codes (Hungarian method, jax's scipy), else each key its
    best used code."""
    candidates = np.flatnonzero(used)
    if candidates.size == 0:
        raise ValueError("no latent action was ever inferred: nothing to map keys to")
    scores = scores[candidates]
    if candidates.size < scores.shape[1]:
        return [int(candidates[k]) for k in scores.argmax(0)]
    from scipy.optimize import linear_sum_assignment

    rows, columns = linear_sum_assignment(scores, maximize=True)
    return [int(candidates[r]) for r in rows[np.argsort(columns)]]


def _with_down(keymap: dict[str, int]) -> dict[str, int]:
    return {**keymap, "down": keymap["none"]}


def keymap_from_confusion(
    confusion, class_names: Sequence[str], key_classes: dict[str, str]
) -> dict[str, int]:
    """For each key in KEYS, the latent action most associated with the true class the
    dataset says it stands for (`key_classes`, e.g. "up" -> "jump").

    Score of code k for class c: P(c | k), shrunk towards the overall P(c) by KEYMAP_PRIOR
    pseudo-transitions so a code seen twice cannot win on luck. Keys get distinct codes where
    at least as many codes were inferred as there are keys (see `_assign`).
    """
    confusion = np.asarray(confusion, np.float64)
    prior = confusion.sum(0) / max(confusion.sum(), 1.0)
    scores = (confusion + KEYMAP_PRIOR * prior) / (confusion.sum(1, keepdims=True) + KEYMAP_PRIOR)
    columns = [list(class_names).index(key_classes[key]) for key in KEYS]
    used = confusion.sum(1) > 0
    return _with_down(dict(zip(KEYS, _assign(scores[:, columns], used), strict=True)))


def keymap_from_motion(motion: dict[str, list]) -> dict[str, int]:
    """The heuristic without true actions: "none" is the code whose transitions change the
    frame least; "left"/"right" the codes whose content moves most to the left/right; "up" the
    code whose content moves most upwards; distinct codes where possible.

    It reads motion of the picture's content, so it suits videos where the camera is still. In
    a game whose camera follows the player (CoinRun) the background moves opposite to the
    player and left and right come out swapped: use true actions there.
    """
    dy, dx, change = (np.nan_to_num(np.asarray(motion[n]), nan=0.0) for n in ("dy", "dx", "change"))
    used = ~np.isnan(np.asarray(motion["change"]))

    # Each score standardised over the used codes, so no key dominates the joint assignment.
    def standard(values):
        spread = values[used].std() if used.any() else 0.0
        return (values - values[used].mean()) / spread if spread > 0 else np.zeros_like(values)

    scores = np.stack([-standard(dx), standard(dx), -standard(dy), -standard(change)], axis=1)
    return _with_down(dict(zip(KEYS, _assign(scores, used), strict=True)))


# --------------------------------------------------------------------------------------------
# Reports


def markdown(report: dict) -> str:
    usage, motion = report["code_usage"], report["motion"]
    true = report.get("true_actions")
    lines = [
        f"# genie probe: {report.get('run_dir', '')}",
        "",
        f"{report['transitions']} transitions of {report['clips']} clips"
        + (f" from split `{report['split']}` of `{report['dataset']}`" if "split" in report else "")
        + f". LAM codes used: {usage['codes_used']}/{len(usage['counts'])}, perplexity "
        f"{usage['perplexity']:.2f}.",
        "",
        "| code | count | fraction | mean dx | mean dy | mean change |"
        + (" probe predicts |" if true else ""),
        "|---|---|---|---|---|---|" + ("---|" if true else ""),
    ]
    for k, count in enumerate(usage["counts"]):
        row = (
            f"| {k} | {count} | {usage['fractions'][k]:.3f} | {motion['dx'][k]:.2f} "
            f"| {motion['dy'][k]:.2f} | {motion['change'][k]:.4f} |"
        )
        if true:
            row += f" {true['code_to_class'].get(str(k), '-')} |"
        lines.append(row)
    lines += [
        "",
        "dx, dy: content motion in pixels per step (phase correlation; dy < 0 is up). "
        "`code_motion.png` draws them per code as arrows, with the mean frame difference "
        "x_{t+1} - x_t of the code's transitions and the last frames of its rollouts; in a game "
        "whose camera follows the player (CoinRun) the picture moves opposite to the player.",
    ]
    if true:
        lines += [
            "",
            f"## Codes against true actions (collapsed to the dataset's {len(true['classes'])} "
            "classes)",
            "",
            f"NMI {true['nmi']:.3f}; probe accuracy {true['probe_accuracy']:.3f} on "
            f"{true['probe_test_transitions']} held-out transitions (chance "
            f"{true['chance_accuracy']:.3f}: always the majority class).",
        ]
        for group in true.get("groups", []):
            lines += [
                "",
                f"{group} ({'/'.join(true[group]['classes'])}) only: probe accuracy "
                f"{true[group]['probe_accuracy']:.3f} on the same held-out transitions (chance "
                f"{true[group]['chance_accuracy']:.3f}).",
            ]
        lines += [
            "",
            "| code | " + " | ".join(true["classes"]) + " |",
            "|---|" + "---|" * len(true["classes"]),
        ]
        for k, row in enumerate(true["confusion"]):
            lines.append(f"| {k} | " + " | ".join(str(v) for v in row) + " |")
    else:
        lines += ["", report.get("true_actions_note") or "No true actions to compare with."]
    keymap = report["keymap"]
    shared = len({keymap[key] for key in KEYS}) < len(KEYS)  # "down" copies "none"
    lines += [
        "",
        f"Key mapping ({report['keymap_source']}): "
        + ", ".join(f"{key} -> {code}" for key, code in keymap.items())
        + (
            " (keys share codes: the LAM inferred fewer codes than there are keys)"
            if shared
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"


def analyse_codes(
    frames: np.ndarray,
    codes: np.ndarray,
    num_codes: int,
    true_actions: np.ndarray | None = None,
    action_classes: metrics.ActionClasses | None = None,
    seed: int = 0,
) -> dict:
    """Usage, motion and (with true actions and the classes the dataset declares for them)
    the probe of latent `codes` (M, T-1) inferred from uint8 clips (M, T, H, W, 3) -> the
    probe.json report, keymap included."""
    codes = np.asarray(codes)
    usage = metrics.code_usage(codes, num_codes)
    motion = code_motion(frames, codes, num_codes)
    report = {
        "clips": int(codes.shape[0]),
        "transitions": int(codes.size),
        "num_actions": num_codes,
        "code_usage": {
            "counts": usage.counts.tolist(),
            "fractions": usage.fractions.tolist(),
            "perplexity": usage.perplexity,
            "codes_used": int(np.count_nonzero(usage.counts)),
        },
        "motion": motion,
        "true_actions": None,
    }
    if true_actions is not None and action_classes is not None:
        if np.shape(true_actions) != codes.shape:
            raise ValueError(
                f"true actions {np.shape(true_actions)} and codes {codes.shape} differ in shape"
            )
        true = probe_true_actions(codes, true_actions, num_codes, action_classes, seed)
        report["true_actions"] = true
    if report["true_actions"] and set(KEYS) <= set(action_classes.keys):
        report["keymap"] = keymap_from_confusion(
            true["confusion"], action_classes.names, action_classes.keys
        )
        report["keymap_source"] = "true actions: the code most associated with each class"
    else:
        report["keymap"] = keymap_from_motion(motion)
        source = "no true actions" if not report["true_actions"] else "no key classes declared"
        report["keymap_source"] = f"{source}: motion heuristic (keymap_from_motion)"
    return report


def write_code_motion(
    report: dict, frames: np.ndarray, codes: np.ndarray, videos: np.ndarray, out: Path
) -> Path:
    """code_motion.png: `report`'s per-code motion and usage, the mean frame difference of the
    clips `frames` (M, T, H, W, 3) under their `codes` (M, T-1), and the last frames of the
    `action_rollouts` videos (P, A, T, H, W, 3)."""
    motion, usage = report["motion"], report["code_usage"]
    path = out / "code_motion.png"
    plots.code_motion_figure(
        path,
        motion["dx"],
        motion["dy"],
        usage["fractions"],
        mean_frame_difference(frames, codes, report["num_actions"]),
        videos[:, :, -1],
        title=f"What each latent action does ({report['transitions']} real transitions; "
        f"rollouts held {videos.shape[2] - 1} steps)",
    )
    return path


def write_report(report: dict, out: Path, keymap_path: Path | None = None) -> dict[str, Path]:
    """probe.json, probe.md, code_usage.png, confusion.png (with true actions), keymap.json."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "probe.json",
        "markdown": out / "probe.md",
        "usage": out / "code_usage.png",
        "keymap": keymap_path or out / "keymap.json",
    }
    paths["json"].write_text(json.dumps(json_safe(report), indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))
    usage = report["code_usage"]
    plots.bar_chart(
        paths["usage"],
        usage["counts"],
        None,
        title=f"Latent action usage (perplexity {usage['perplexity']:.2f})",
        xlabel="latent action",
        ylabel="transitions",
    )
    true = report["true_actions"]
    if true:
        paths["confusion"] = out / "confusion.png"
        plots.heatmap(
            paths["confusion"],
            np.asarray(true["confusion"]),
            [str(k) for k in range(len(true["confusion"]))],
            true["classes"],
            title=f"Latent action vs true action (NMI {true['nmi']:.2f})",
            xlabel="true action (collapsed)",
            ylabel="latent action",
        )
    paths["keymap"].parent.mkdir(parents=True, exist_ok=True)
    paths["keymap"].write_text(json.dumps(report["keymap"], indent=2) + "\n")
    return paths


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="genie probe", description="What each latent action of a run does."
    )
    parser.add_argument("run_dir", help="run folder holding tokenizer/, lam/ and dynamics/")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--prompts", type=int, default=4, help="prompt frames (grid rows)")
    parser.add_argument("--steps", type=int, default=8, help="steps each action is held")
    parser.add_argument("--clips", type=int, default=256, help="clips for the code statistics")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/probe_SPLIT)")
    parser.add_argument("--keymap-out", default=None, help="default: OUT/keymap.json")
    parser.add_argument("--seed", type=int, default=0, help="sampling and the probe's split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default=None, help="default: the run's data.data_dir")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, *, data: dict | None = None) -> tuple[dict, dict]:
    """Loads the run, reads the split (unless `data` = read_clips-like dict is given, with
    the dataset's "action_metadata" beside its "actions" where they should be compared),
    probes and writes -> (report, paths)."""
    from genie.world import World

    engine, config = Engine.from_run(args.run_dir, models=("lam",))
    lam = engine.models["lam"]
    given_data = data is not None
    if data is None:
        from data_pipelines.loader import read_clips

        data = read_clips(
            config.data.dataset,
            args.split,
            data_dir=args.data_dir or config.data.data_dir,
            limit=max(args.clips, args.prompts),
            clip_frames=config.data.clip_frames,
        )
    frames = np.asarray(data["frames"])
    if len(frames) < args.prompts:
        raise ValueError(f"split {args.split!r} has {len(frames)} clips, fewer than --prompts")
    frames_for_codes = frames[: args.clips]
    batch_size = min(args.batch_size, len(frames_for_codes))
    codes = np.concatenate(
        map_batches(
            engine.infer_actions,
            (frames_for_codes,),
            batch_size,
            "infer latent actions",
        )
    )
    true = data.get("actions")
    metadata = data.get("action_metadata")
    if metadata is None and true is not None and not given_data:
        from data_pipelines.loader import dataset_info

        info = dataset_info(config.data.dataset, args.data_dir or config.data.data_dir)
        metadata = info["build"].get("actions")
    source = f"dataset {config.data.dataset!r}"
    action_classes = (
        None if metadata is None else metrics.ActionClasses.from_metadata(metadata, source)
    )
    report = analyse_codes(
        frames_for_codes,
        codes,
        lam.num_actions,
        None if true is None else np.asarray(true)[: args.clips],
        action_classes,
        seed=args.seed,
    )
    if true is None:
        note = f"{source} stores no true actions: no confusion matrix or probe accuracy."
    elif action_classes is None:
        note = (
            f'{source} stores true actions but does not declare what they mean (no "actions" '
            "entry in its genie_build.json, written by its builder): rebuild it with "
            "--overwrite to compare the codes with them."
        )
    else:
        note = None
    report = {
        "run_dir": str(args.run_dir),
        "dataset": config.data.dataset,
        "split": args.split,
        **report,
        "true_actions_note": note,
    }

    world = World.from_run(args.run_dir, batch_size=args.prompts * lam.num_actions, seed=args.seed)

    def rollout(prompt, actions):
        world.reset(prompt)
        return world.rollout(actions)

    videos = action_rollouts(rollout, frames[: args.prompts, 0], lam.num_actions, args.steps)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"probe_{args.split}"
    paths = write_report(report, out, Path(args.keymap_out) if args.keymap_out else None)
    paths.update(write_rollouts(videos, out))
    paths["motion"] = write_code_motion(report, frames_for_codes, codes, videos, out)
    return report, paths


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report, paths = run(args)
    print(markdown(report))
    for name, path in paths.items():
        print(f"{name:>9}: {path}")


if __name__ == "__main__":
    from genie import cli

    cli.run(main, None, prog="genie probe")
