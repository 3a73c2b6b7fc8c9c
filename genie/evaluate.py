"""`genie eval RUN_DIR`: how well a trained world reconstructs, predicts and obeys its actions.

Measured on the first `--clips` clips of a split of the dataset the run was trained on (read
back from the run's config):

- Tokenizer reconstruction: pooled PSNR and mean SSIM of decode(tokenize(x)) over every frame.
- Rollouts: from the first `context` real frames (tokenized), the dynamics model generates
  `horizon` frames (decoded and clipped to [0, 1]), driven (a) by the latent actions the LAM
  infers from the real clip, (b) by latent actions drawn uniformly from the codes the LAM uses
  on these clips and (c) by latent actions drawn uniformly from all |A| codes. PSNR and SSIM
  against the real frames at each horizon step t = 1..horizon.
- Controllability, Genie (Bruce et al. 2024) section 3: ΔtPSNR = PSNR(x_t, x̂_t) −
  PSNR(x_t, x̂'_t) per step; the paper reports t = 4. Reported twice, with x̂' from (b) and
  from (c). (b) is the headline: if the LAM emits only a few of its codes, random actions over
  all codes mostly pick codes the dynamics model never saw in training, x̂' turns to garbage
  and ΔtPSNR comes out positive for a world that obeys nothing. The used codes are those the LAM
  infers for at least USED_CODE_SHARE of all transitions of the evaluated clips; they and the
  LAM's codebook usage are reported beside both numbers. Published CoinRun numbers to compare
  with: GenieRedux (Savov et al. 2024, arXiv 2409.06445).
- The "repeat the last frame" floor on the same clips and steps: a world model that ignores its
  actions and predicts no motion scores this, so a useful one must beat it.
- Codebook usage of the tokenizer (tokens of every frame) and the LAM (every transition).

Conventions:
- PSNR is pooled, -10 log10(mean MSE) over the clips (`genie.metrics`): the headline, because
  about a quarter of consecutive CoinRun frames are byte-identical, where per-frame PSNR is
  infinite. SSIM is a per-frame mean. Non-finite numbers are written to JSON as the strings
  "inf", "-inf", "nan".
- Prompt actions: the context frames' own transitions carry the LAM's inferred actions in both
  rollouts (they describe the real prompt); only the `horizon` actions that follow differ.
- Random actions are drawn by `random_actions`: ``default_rng(seed)`` picks, for the M clips
  in order, indices into the code set (0..|A|-1, or the used codes). Every model evaluated with
  the same seed and clips gets the same draws over all codes, and the same draws over used
  codes where its used-code set is the same; when every code is used, both draws coincide.
- All rollouts of a clip share one MaskGIT sampling key (common random numbers), so ΔtPSNR
  measures the actions rather than sampling luck. The key of clip m is fold_in(key(seed), m),
  whatever batch it lands in, so the report does not depend on --batch-size.

Defaults: context = T // 2 and horizon = T - context for clips of T frames (8 + 8 for CoinRun's
16). context + horizon must fit in T: the targets are real frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from genie import media, metrics, plots
from genie.inference import WorldFunctions, map_batches
from genie.writer import json_safe

PAPER_DELTA_STEP = 4  # Genie reports ΔtPSNR at t = 4
# A latent action counts as used when the LAM infers it for at least this share of the
# evaluated transitions ("Dead codes fool ΔtPSNR" in the module docstring).
USED_CODE_SHARE = 0.01
SAMPLE_CLIPS = 4  # clips shown in rollouts.gif


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclasses.dataclass(frozen=True)
class Evaluation:
    report: dict  # everything written to eval.json (floats may be +-inf)
    # For pictures: the first SAMPLE_CLIPS clips, uint8 (S, context + horizon, H, W, 3) real and
    # float predictions (S, horizon, H, W, 3) under inferred actions, random actions over the
    # used codes and random actions over all codes.
    sample_clips: np.ndarray
    sample_inferred: np.ndarray
    sample_random_used: np.ndarray
    sample_random_all: np.ndarray


def default_context_horizon(clip_frames: int, context: int | None, horizon: int | None):
    """context = T // 2 and horizon = T - context unless given; checks that they fit in T."""
    context = max(1, clip_frames // 2) if context is None else context
    horizon = clip_frames - context if horizon is None else horizon
    if context < 1 or horizon < 1 or context + horizon > clip_frames:
        raise ValueError(
            f"context {context} + horizon {horizon} frames must fit in clips of {clip_frames} "
            f"frames (context >= 1, horizon >= 1): the targets are real frames"
        )
    return context, horizon


def random_actions(
    seed: int, num_clips: int, horizon: int, codes: int | Sequence[int]
) -> np.ndarray:
    """The random latent actions x̂' is generated from: (M, horizon) int32, each drawn uniformly
    from `codes` (an int K stands for all codes 0..K-1).

    ``default_rng(seed)`` draws indices into the code set, so the actions depend only on the
    seed, M, horizon and the set: the same for every model compared with the same set, and over
    0..K-1 the same whether the set is given as K or spelled out.
    """
    codes = np.arange(codes) if np.ndim(codes) == 0 else np.asarray(codes).reshape(-1)
    if codes.size == 0:
        raise ValueError("random actions need at least one latent action to draw from")
    index = np.random.default_rng(seed).integers(0, codes.size, (num_clips, horizon), np.int32)
    return codes[index].astype(np.int32)


def evaluate(
    world: WorldFunctions,
    clips: np.ndarray,
    *,
    context: int | None = None,
    horizon: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> Evaluation:
    """All eval metrics of `world` on uint8 clips (M, T, H, W, 3); see the module docstring."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.dtype != np.uint8 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 (M, T, H, W, 3), got {clips.dtype} {clips.shape}")
    num_clips, clip_frames = clips.shape[:2]
    if num_clips == 0:
        raise ValueError("evaluation needs at least one clip")
    if clip_frames < 2:
        raise ValueError(f"clips of {clip_frames} frame(s) have no transition to predict")
    context, horizon = default_context_horizon(clip_frames, context, horizon)
    batch_size = min(batch_size, num_clips)

    # Tokenizer reconstruction and the LAM's actions on the full clips.
    def encode(frames):
        tokens, reconstruction = world.reconstruct(frames)
        return tokens, reconstruction, world.infer_actions(frames)

    encoded = map_batches(encode, (clips,), batch_size, "tokenize + infer actions", progress)
    tokens = np.concatenate([e[0] for e in encoded])
    reconstruction = np.concatenate([e[1] for e in encoded])
    inferred = np.concatenate([e[2] for e in encoded]).astype(np.int32)

    # Rollouts from the first `context` frames under each set of actions, one sampling key per
    # clip shared by all of them.
    used = metrics.used_codes(inferred, world.num_actions, USED_CODE_SHARE)
    prompt = clips[:, :context]
    prompt_actions = inferred[:, : context - 1]
    actions = {
        "inferred_actions": inferred[:, context - 1 : context - 1 + horizon],
        "random_used_codes": random_actions(seed, num_clips, horizon, used),
        "random_all_codes": random_actions(seed, num_clips, horizon, world.num_actions),
    }
    base_key = jax.random.key(seed)
    clip_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))

    def generate(clip_index, prompt, prompt_actions, *action_sets):
        keys = clip_keys(base_key, jnp.asarray(clip_index))  # (B,): one per clip, not per batch
        return tuple(world.generate(prompt, prompt_actions, a, keys) for a in action_sets)

    generated = map_batches(
        generate,
        (np.arange(num_clips), prompt, prompt_actions, *actions.values()),
        batch_size,
        "rollouts",
        progress,
    )
    predictions = {
        name: _unit(np.concatenate([g[i] for g in generated]), f"{name} rollouts")
        for i, name in enumerate(actions)
    }

    report = _report(
        clips,
        _unit(reconstruction, "reconstructions"),
        tokens,
        inferred,
        predictions,
        used,
        context=context,
        horizon=horizon,
        seed=seed,
        num_codes=world.num_codes,
        num_actions=world.num_actions,
    )
    shown = min(SAMPLE_CLIPS, num_clips)
    return Evaluation(
        report,
        clips[:shown, : context + horizon],
        predictions["inferred_actions"][:shown],
        predictions["random_used_codes"][:shown],
        predictions["random_all_codes"][:shown],
    )


def _unit(frames: np.ndarray, name: str) -> np.ndarray:
    """Predicted frames -> float in [0, 1] (`metrics.to_unit_float`), floats clipped first:
    decoder outputs overshoot [0, 1] a little."""
    frames = np.asarray(frames)
    if "float" in frames.dtype.name:  # numpy floats and ml_dtypes' bfloat16
        frames = np.clip(frames, 0.0, 1.0)
    return metrics.to_unit_float(frames, name)


def _usage(codes, num_codes: int) -> dict:
    usage = metrics.code_usage(codes, num_codes)
    return {
        "num_codes": num_codes,
        "codes_used": int(np.count_nonzero(usage.counts)),
        "perplexity": usage.perplexity,
        "counts": usage.counts.tolist(),
        "shares": usage.fractions.tolist(),
    }


def _report(
    clips,
    reconstruction,
    tokens,
    inferred,
    predictions: dict[str, np.ndarray],
    used: np.ndarray,
    *,
    context,
    horizon,
    seed,
    num_codes,
    num_actions,
) -> dict:
    """`predictions`: float (M, horizon, H, W, 3) rollouts under "inferred_actions",
    "random_used_codes" and "random_all_codes"; `used`: the used codes."""
    targets, repeat = metrics.repeat_last_frame_rollout(clips, context, horizon)
    predictions = {**predictions, "repeat_last_frame": repeat}
    measured = horizon >= PAPER_DELTA_STEP
    delta_note = (
        f"t = {PAPER_DELTA_STEP} as in Genie section 3"
        if measured
        else f"horizon {horizon} < {PAPER_DELTA_STEP}: the paper's t = 4 is not measured"
    )

    def delta(random_name: str) -> dict:
        by_step = metrics.delta_psnr(
            targets, predictions["inferred_actions"], predictions[random_name]
        )
        return {
            "by_step": by_step.tolist(),
            "t4": float(by_step[PAPER_DELTA_STEP - 1]) if measured else None,
        }

    tokenizer_usage = _usage(tokens, num_codes)
    del tokenizer_usage["counts"], tokenizer_usage["shares"]  # K can be 1024: summary enough
    lam_usage = _usage(inferred, num_actions)
    return {
        "clips": int(clips.shape[0]),
        "clip_frames": int(clips.shape[1]),
        "image_size": list(clips.shape[2:4]),
        "context": context,
        "horizon": horizon,
        "seed": seed,
        "reconstruction": {
            "psnr": float(metrics.pooled_psnr(clips, reconstruction)),
            "ssim": float(np.mean(metrics.ssim_per_frame(clips, reconstruction))),
        },
        "rollout": {
            "horizon_step": list(range(1, horizon + 1)),
            "psnr": {
                name: metrics.psnr_by_horizon(targets, p).tolist()
                for name, p in predictions.items()
            },
            "ssim": {
                name: metrics.ssim_by_horizon(targets, p).tolist()
                for name, p in predictions.items()
            },
            "psnr_all_steps": {
                name: float(metrics.pooled_psnr(targets, p)) for name, p in predictions.items()
            },
        },
        "delta_psnr": {
            # The honest number: random actions only from codes the LAM actually uses.
            "random_used_codes": delta("random_used_codes"),
            "random_all_codes": delta("random_all_codes"),
            "note": delta_note,
            "used_codes": used.tolist(),
            "used_code_share": USED_CODE_SHARE,
            "lam_usage": lam_usage,
        },
        "codebook": {"tokenizer": tokenizer_usage, "lam": lam_usage},
    }


# --------------------------------------------------------------------------------------------
# Output files


def _db(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _delta_t4(delta: dict, note: str) -> str:
    return f"{delta['t4']:.3f} dB" if delta["t4"] is not None else f"n/a ({note})"


def _code_list(codes) -> str:
    return "{" + ", ".join(str(k) for k in codes) + "}"


def markdown(report: dict) -> str:
    """The eval.md tables of a report: headline numbers, the LAM's codebook usage beside the two
    ΔtPSNRs, then every horizon step."""
    rollout, delta = report["rollout"], report["delta_psnr"]
    psnr, ssim, pooled = rollout["psnr"], rollout["ssim"], rollout["psnr_all_steps"]
    tok, lam = report["codebook"]["tokenizer"], delta["lam_usage"]
    used, share = delta["used_codes"], delta["used_code_share"]
    used_label = f"used codes {_code_list(used)}"
    all_label = f"all {lam['num_codes']} codes"
    lines = [
        f"# genie eval: {report.get('run_dir', '')}",
        "",
        f"{report['clips']} clips of {report['clip_frames']} frames"
        + (f" from split `{report['split']}` of `{report['dataset']}`" if "split" in report else "")
        + f"; prompt of {report['context']} real frames, {report['horizon']} generated"
        + (
            f"; MaskGIT {report['maskgit_steps']} steps at temperature {report['temperature']}"
            if "maskgit_steps" in report
            else ""
        )
        + (
            f" (greedy digits: {report['greedy_digits']})"
            if report.get("temperature") == 0 and report.get("greedy_digits")
            else ""
        )
        + f"; seed {report['seed']}. PSNR is pooled over clips (dB), SSIM a per-frame mean.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| tokenizer reconstruction PSNR | {_db(report['reconstruction']['psnr'])} dB |",
        f"| tokenizer reconstruction SSIM | {report['reconstruction']['ssim']:.3f} |",
        f"| rollout PSNR, inferred actions (all steps) | {_db(pooled['inferred_actions'])} dB |",
        f"| rollout PSNR, random over {used_label} (all steps) "
        f"| {_db(pooled['random_used_codes'])} dB |",
        f"| rollout PSNR, random over {all_label} (all steps) "
        f"| {_db(pooled['random_all_codes'])} dB |",
        f"| repeat last frame PSNR (all steps) | {_db(pooled['repeat_last_frame'])} dB |",
        f"| **ΔtPSNR at t={PAPER_DELTA_STEP}, random over {used_label}** "
        f"| **{_delta_t4(delta['random_used_codes'], delta['note'])}** |",
        f"| ΔtPSNR at t={PAPER_DELTA_STEP}, random over {all_label} "
        f"| {_delta_t4(delta['random_all_codes'], delta['note'])} |",
        f"| LAM codes used | {lam['codes_used']}/{lam['num_codes']} (perplexity "
        f"{lam['perplexity']:.2f}); {len(used)} with share >= {share:.0%} drive the used-code "
        "ΔtPSNR |",
        "| LAM code shares | "
        + ", ".join(
            f"{k}: {s:.3f} ({c})"
            for k, (s, c) in enumerate(zip(lam["shares"], lam["counts"], strict=True))
        )
        + " |",
        f"| tokenizer codes used | {tok['codes_used']}/{tok['num_codes']} "
        f"(perplexity {tok['perplexity']:.1f}) |",
        "",
        f"ΔtPSNR = PSNR(inferred actions) − PSNR(random actions) (Genie section 3). The headline "
        f"draws random actions only from the codes the LAM infers for at least {share:.0%} of "
        "these clips' transitions: random actions over all codes also draw codes the LAM "
        "(almost) never emits, which the dynamics model barely saw in training, and their "
        "garbage frames can make a world that obeys nothing look controllable. LAM code "
        "shares are of all transitions of these clips (counts in brackets).",
        "",
        "| t | PSNR inferred | PSNR random used | ΔtPSNR used | PSNR random all | ΔtPSNR all "
        "| PSNR repeat last | SSIM inferred | SSIM random used | SSIM random all "
        "| SSIM repeat last |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, t in enumerate(rollout["horizon_step"]):
        lines.append(
            f"| {t} | {_db(psnr['inferred_actions'][i])} | {_db(psnr['random_used_codes'][i])} "
            f"| {delta['random_used_codes']['by_step'][i]:.3f} "
            f"| {_db(psnr['random_all_codes'][i])} "
            f"| {delta['random_all_codes']['by_step'][i]:.3f} "
            f"| {_db(psnr['repeat_last_frame'][i])} "
            f"| {ssim['inferred_actions'][i]:.3f} | {ssim['random_used_codes'][i]:.3f} "
            f"| {ssim['random_all_codes'][i]:.3f} | {ssim['repeat_last_frame'][i]:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(evaluation: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """eval.json, eval.md, psnr_by_horizon.png and rollouts.gif in `out_dir` -> their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluation.report
    paths = {
        "json": out / "eval.json",
        "markdown": out / "eval.md",
        "plot": out / "psnr_by_horizon.png",
        "gif": out / "rollouts.gif",
    }
    paths["json"].write_text(json.dumps(json_safe(report), indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))

    steps = report["rollout"]["horizon_step"]
    delta = report["delta_psnr"]
    names = {
        "inferred_actions": "inferred actions",
        "random_used_codes": f"random, used codes {_code_list(delta['used_codes'])}",
        "random_all_codes": f"random, all {delta['lam_usage']['num_codes']} codes",
        "repeat_last_frame": "repeat last frame",
    }
    t4 = delta["random_used_codes"]["t4"]
    plots.line_plot(
        paths["plot"],
        {label: (steps, report["rollout"]["psnr"][key]) for key, label in names.items()},
        title=f"Rollout PSNR over {report['clips']} clips (pooled)"
        + (f"; ΔtPSNR@{PAPER_DELTA_STEP} vs used codes {t4:.2f} dB" if t4 is not None else ""),
        xlabel="horizon step t",
        ylabel="PSNR (dB)",
        size=(900, 450),
    )

    # Rows: clips; columns: real, inferred actions, random over used codes, random over all
    # codes. Prompt frames are real.
    real = evaluation.sample_clips
    context = report["context"]
    prompt = real[:, :context]
    generated = (
        evaluation.sample_inferred,
        evaluation.sample_random_used,
        evaluation.sample_random_all,
    )
    videos = np.stack(
        [real, *(np.concatenate([prompt, media.to_uint8(g)], axis=1) for g in generated)],
        axis=1,
    )
    scale = max(1, 128 // real.shape[-2])
    grid = plots.video_grid(videos, scale=scale)
    caption = "real | inferred actions | random, used codes | random, all codes"
    frames = [
        plots.label_image(g, f"{caption}\n{'prompt' if t < context else f't={t - context + 1}'}")
        for t, g in enumerate(grid)
    ]
    media.save_gif(paths["gif"], np.stack(frames), fps=4)
    return paths


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="genie eval",
        description="Reconstruction, rollout and controllability (ΔtPSNR) metrics of a run.",
    )
    parser.add_argument("run_dir", help="run folder holding tokenizer/, lam/ and dynamics/")
    parser.add_argument("--split", default="test")
    parser.add_argument("--clips", type=int, default=64, help="the first N clips of the split")
    parser.add_argument("--context", type=int, default=None, help="prompt frames (default T//2)")
    parser.add_argument(
        "--horizon", type=int, default=None, help="generated frames (default T - context)"
    )
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/eval_SPLIT)")
    parser.add_argument("--seed", type=int, default=0, help="random actions and sampling keys")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--maskgit-steps", type=int, default=None, help="default: the run's")
    parser.add_argument("--temperature", type=float, default=None, help="default: the run's")
    parser.add_argument(
        "--greedy-digits",
        choices=("mode", "mean"),
        default=None,
        help="at temperature 0 with the factorised head, each FSQ digit's most likely level or "
        "the level nearest its mean (default: the run's dynamics.greedy_digits)",
    )
    parser.add_argument("--data-dir", default=None, help="default: the run's data.data_dir")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, *, clips: np.ndarray | None = None) -> tuple[dict, dict]:
    """Loads the run, reads the clips (unless given), evaluates, writes -> (report, paths)."""
    world, config = WorldFunctions.from_run(
        args.run_dir,
        maskgit_steps=args.maskgit_steps,
        temperature=args.temperature,
        greedy_digits=args.greedy_digits,
    )
    data = config.data
    data_dir = args.data_dir or data.data_dir
    if clips is None:
        from data_pipelines.loader import read_clips

        clips = read_clips(
            data.dataset,
            args.split,
            data_dir=data_dir,
            limit=args.clips,
            clip_frames=data.clip_frames,
        )["frames"]
    evaluation = evaluate(
        world,
        clips,
        context=args.context,
        horizon=args.horizon,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    report = {
        "run_dir": str(args.run_dir),
        "dataset": data.dataset,
        "split": args.split,
        "maskgit_steps": (
            config.dynamics.maskgit_steps if args.maskgit_steps is None else args.maskgit_steps
        ),
        "temperature": (
            config.dynamics.temperature if args.temperature is None else args.temperature
        ),
        # Only a factorised head has digits to decode greedily; a softmax over ids takes its mode.
        "greedy_digits": (
            (args.greedy_digits or config.dynamics.greedy_digits)
            if config.dynamics.factorized_head
            else None
        ),
        **evaluation.report,
    }
    evaluation = dataclasses.replace(evaluation, report=report)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"eval_{args.split}"
    return report, write_outputs(evaluation, out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report, paths = run(args)
    print(markdown(report))
    for name, path in paths.items():
        print(f"{name:>8}: {path}")


if __name__ == "__main__":
    from genie import cli

    cli.run(main, None, prog="genie eval")
