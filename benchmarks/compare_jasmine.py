"""Training throughput of genie beside jasmine (p-doom/jasmine at 420859b), stage by stage.

    git clone https://github.com/p-doom/jasmine && git -C jasmine checkout 420859b
    python -m benchmarks.compare_jasmine --jasmine ./jasmine [--sizes 128x2 256x4]
        [--stages tokenizer lam dynamics] [--steps 10] [--runs 2] [--out compare.json]

jasmine is not part of this repository: the script imports its model classes from the checkout
given with --jasmine (`jasmine.models.tokenizer.TokenizerVQVAE`,
`jasmine.models.lam.LatentActionModel`, `jasmine.models.genie.GenieMaskGIT`). Without
--jasmine only genie's side runs.

Both sides train in float32 on the same random uint8 clips (batch 4 x 16 frames of 64x64 RGB)
at one transformer size per row (width x depth, 4x MLP, 32-dim heads): tokenizer patch 4 with
1024 codes of dimension 32, LAM patch 16 with 6 codes, MaskGIT dynamics at mask rates from 0.5,
its tokenizer and LAM of the same size. Each side's step is one jitted function over its split
state, timed after compilation and one warm-up step; runs alternate genie, jasmine, genie, ...

- genie: `benchmarks.train.benchmark_stage` at `experiments/coinrun.py` (the Genie CoinRun
  recipe: Genie's own LAM and dynamics) with the sizes above and dtype float32; the step is
  genie's own training step (`genie.train.make_train_step`: loss, gradients, clipped AdamW,
  finite check, dead-code reset).
- jasmine: its models with the same sizes, trained by a step written here (the peer's scripts
  define theirs inside `main()`, where it cannot be imported): the losses its scripts train
  with (tokenizer: MSE of every frame plus the VQ codebook and 0.25 x commitment terms; LAM:
  the same on frames 1..T-1; dynamics: masked-token cross-entropy of its MaskGIT model with its
  tokenizer and LAM read only), gradients, one AdamW update (b1 0.9, b2 0.9, weight decay
  1e-4). No metrics, pictures or code resets are computed in the peer's step (its scripts
  compute some every step), so the comparison errs in the peer's favour. Attention takes its
  XLA path (`use_flash_attention=False`: cuDNN flash attention needs 16-bit inputs); its
  blocks keep their `nnx.remat`. For dynamics the MaskGIT model's own `__call__` is not used:
  at some commits it asserts `type(latent_actions) == jax.Array`, which no array satisfies,
  so the step calls its tokenizer, LAM and dynamics submodules in the same order.

Run on one device (e.g. CUDA_VISIBLE_DEVICES=0): genie shards its batch over every visible
device, jasmine's step here runs on one.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.train import benchmark_stage, time_step
from genie.config import STAGES, Config, load_experiment

JASMINE_COMMIT = "420859b"
STAGES_COMPARED = ("tokenizer", "lam", "dynamics")
# Tokenizer patch 4: the Genie CoinRun case study (experiments/coinrun.py); LAM patch 16: both
# that experiment's and jasmine's default.
PATCH_SIZES = {"tokenizer": 4, "lam": 16}

# Settings of the peer's training scripts (their defaults): commitment weight, and the share
# of codes its tokenizer drops while training.
VQ_BETA = 0.25
TOKENIZER_CODEBOOK_DROPOUT = 0.01
# Any constant will do: the rate does not change a step's cost (their scripts warm up to 3e-4
# or 3e-5 and decay on a WSD schedule).
LEARNING_RATE = 3e-4


@dataclass(frozen=True)
class Size:
    """One row of the comparison: every transformer of a stage is width x depth."""

    width: int
    depth: int
    heads: int
    batch: int = 4
    frames: int = 16
    image_size: int = 64


SIZES = {
    "128x2": Size(128, 2, heads=4),
    "256x4": Size(256, 4, heads=8),
    # A seconds-long CPU smoke test of the script itself; its numbers mean nothing.
    "tiny": Size(32, 1, heads=2, batch=1, frames=4),
}


def genie_config(size: Size, experiment: str = "coinrun") -> Config:
    """`experiment` in float32 at `size`, patch sizes PATCH_SIZES, every stage at size.batch."""
    base = load_experiment(experiment)

    def sized(block):
        return dataclasses.replace(block, width=size.width, depth=size.depth, heads=size.heads)

    return dataclasses.replace(
        base,
        dtype="float32",
        fsdp=False,
        data=dataclasses.replace(
            base.data, clip_frames=size.frames, image_size=size.image_size, worker_count=0
        ),
        tokenizer=dataclasses.replace(
            base.tokenizer,
            patch_size=PATCH_SIZES["tokenizer"],
            encoder=sized(base.tokenizer.encoder),
            decoder=sized(base.tokenizer.decoder),
        ),
        lam=dataclasses.replace(
            base.lam,
            patch_size=PATCH_SIZES["lam"],
            encoder=sized(base.lam.encoder),
            decoder=sized(base.lam.decoder),
        ),
        dynamics=dataclasses.replace(base.dynamics, transformer=sized(base.dynamics.transformer)),
        **{
            f"train_{stage}": dataclasses.replace(base.train(stage), batch_size=size.batch)
            for stage in STAGES
        },
    )


# --- jasmine ---------------------------------------------------------------------------------


def import_jasmine(path: str | Path) -> SimpleNamespace:
    """jasmine's model classes, imported from the checkout at `path` (its repository root)."""
    root = Path(path).resolve()
    if not (root / "jasmine" / "models" / "genie.py").is_file():
        raise FileNotFoundError(
            f"{root} is not a jasmine checkout (no jasmine/models/genie.py); get one with "
            f"`git clone https://github.com/p-doom/jasmine && git -C jasmine checkout "
            f"{JASMINE_COMMIT}` and pass --jasmine jasmine"
        )
    # Only while importing: the checkout's other top-level folders (tests, data) must not
    # shadow this repository's.
    sys.path.insert(0, str(root))
    try:
        modules = {
            name: importlib.import_module(f"jasmine.models.{name}")
            for name in ("tokenizer", "lam", "genie")
        }
    finally:
        sys.path.remove(str(root))
    for module in modules.values():
        if not Path(module.__file__).resolve().is_relative_to(root):
            raise ImportError(
                f"`import jasmine` found {module.__file__}, not the checkout at {root}: "
                "another package named jasmine is installed"
            )
    return SimpleNamespace(
        TokenizerVQVAE=modules["tokenizer"].TokenizerVQVAE,
        LatentActionModel=modules["lam"].LatentActionModel,
        GenieMaskGIT=modules["genie"].GenieMaskGIT,
        path=str(root),
        commit=_git_commit(root),
    )


def _git_commit(root: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def _construct(cls, **kwargs):
    """`cls(**kwargs)`, adding `decode=False` where jasmine's signature has that argument (the
    KV-cache switch some of its commits take and others do not)."""
    if "decode" in inspect.signature(cls.__init__).parameters:
        kwargs["decode"] = False
    return cls(**kwargs)


def jasmine_model(jasmine: SimpleNamespace, config: Config, stage: str, rngs: nnx.Rngs):
    """The model jasmine's training script for `stage` builds, at genie's `config` sizes."""
    tokenizer, lam, dynamics = config.tokenizer, config.lam, config.dynamics
    precision = dict(
        param_dtype=jnp.float32, dtype=jnp.float32, use_flash_attention=False, rngs=rngs
    )

    def block(transformer, prefix=""):
        return {
            f"{prefix}dim" if prefix else "model_dim": transformer.width,
            f"{prefix}ffn_dim": int(transformer.width * transformer.mlp_ratio),
            f"{prefix}num_blocks": transformer.depth,
            f"{prefix}num_heads": transformer.heads,
        }

    if stage in ("tokenizer", "lam"):
        cls, section, dropout = {
            "tokenizer": (jasmine.TokenizerVQVAE, tokenizer, TOKENIZER_CODEBOOK_DROPOUT),
            "lam": (jasmine.LatentActionModel, lam, 0.0),
        }[stage]
        return _construct(
            cls,
            in_dim=3,
            latent_dim=section.code_dim,
            num_latents=section.num_codes,
            patch_size=section.patch_size,
            dropout=0.0,
            codebook_dropout=dropout,
            **block(section.encoder),
            **precision,
        )
    if stage == "dynamics":
        model = _construct(
            jasmine.GenieMaskGIT,
            in_dim=3,
            latent_patch_dim=tokenizer.code_dim,
            num_patch_latents=tokenizer.num_codes,
            patch_size=tokenizer.patch_size,
            latent_action_dim=lam.code_dim,
            num_actions=lam.num_codes,
            lam_patch_size=lam.patch_size,
            lam_co_train=False,
            use_gt_actions=False,
            dyna_type="maskgit",
            dropout=0.0,
            mask_limit=dynamics.min_mask_rate,
            **block(tokenizer.encoder, "tokenizer_"),
            **block(lam.encoder, "lam_"),
            **block(dynamics.transformer, "dyna_"),
            **precision,
        )
        del model.lam.decoder  # as train_dynamics_maskgit.py's build_model does
        return model
    raise ValueError(f"no jasmine counterpart for stage {stage!r}; expected {STAGES_COMPARED}")


def _vq_terms(outputs: dict) -> jax.Array:
    """Codebook plus weighted commitment term from the peer's VQ outputs ("z": the chosen
    codes, "emb": the encoder outputs they were chosen for), as a VQ-VAE trains them."""
    chosen, encoded = outputs["z"], outputs["emb"]
    codebook = jnp.mean((chosen - jax.lax.stop_gradient(encoded)) ** 2)
    commitment = jnp.mean((encoded - jax.lax.stop_gradient(chosen)) ** 2)
    return codebook + VQ_BETA * commitment


def _unit(frames: jax.Array, dtype) -> jax.Array:
    return (frames.astype(jnp.float32) / 255.0).astype(dtype)


def jasmine_tokenizer_loss(model, frames, key):
    """Reconstruction MSE of every frame plus the VQ terms."""
    videos = _unit(frames, model.dtype)
    recon = model({"videos": videos}, training=True)
    error = recon["recon"].astype(jnp.float32) - videos.astype(jnp.float32)
    return jnp.mean(error**2) + _vq_terms(recon)


def jasmine_lam_loss(model, frames, key):
    """MSE of the predicted frames 1..T-1 plus the VQ terms."""
    videos = _unit(frames, model.dtype)
    out = model({"videos": videos}, True)
    error = out["recon"].astype(jnp.float32) - videos[:, 1:].astype(jnp.float32)
    return jnp.mean(error**2) + _vq_terms(out)


def frozen_inputs(frozen, frames):
    """The peer's tokenizer tokens and LAM latent actions of a batch, read without gradient
    (as in genie's dynamics stage, where both models are frozen)."""
    videos = _unit(frames, frozen.dtype)
    tokens = frozen.tokenizer.vq_encode(videos, training=False)["indices"]
    actions = frozen.lam.vq_encode(videos, training=False)["z_q"]
    return jax.lax.stop_gradient(tokens), jax.lax.stop_gradient(actions)


def jasmine_dynamics_loss(dynamics, tokens, actions, key):
    """Masked-token cross-entropy of the peer's MaskGIT model given tokens and actions."""
    logits, mask = dynamics({"video_tokens": tokens, "latent_actions": actions, "mask_rng": key})
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), tokens
    )
    return jnp.sum(mask * cross_entropy) / jnp.sum(mask)


def jasmine_optimizer() -> optax.GradientTransformation:
    """AdamW with the peer scripts' moments (b1 0.9, b2 0.9) and weight decay (1e-4); a
    constant rate, since the rate does not change a step's cost."""
    return optax.adamw(learning_rate=LEARNING_RATE, b1=0.9, b2=0.9, weight_decay=1e-4)


def make_jasmine_step(stage: str, graphdef, frozen_graphdef):
    """A pure `(state, frozen_state, frames, key) -> (state, loss)`: loss, gradients and one
    AdamW update of the trained model. Nothing else: no metrics, pictures or code resets (the
    peer's scripts add some of those per step; genie's step keeps its clipping, finite check
    and dead-code reset), so the comparison errs in the peer's favour."""

    def train_step(state, frozen_state, frames, key):
        model, optimizer = nnx.merge(graphdef, state)
        if stage == "dynamics":
            tokens, actions = frozen_inputs(nnx.merge(frozen_graphdef, frozen_state), frames)
            loss, grads = nnx.value_and_grad(
                lambda m: jasmine_dynamics_loss(m, tokens, actions, key)
            )(model)
        else:
            loss_fn = jasmine_tokenizer_loss if stage == "tokenizer" else jasmine_lam_loss
            loss, grads = nnx.value_and_grad(lambda m: loss_fn(m, frames, key))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return train_step


def benchmark_jasmine(jasmine: SimpleNamespace, config: Config, stage: str, steps: int) -> dict:
    """The peer's training step for `stage` at `config`'s sizes: frames/s and FLOPs, as
    `benchmarks.train.benchmark_stage` measures genie's."""
    model = jasmine_model(jasmine, config, stage, nnx.Rngs(0))
    model.train()
    # For dynamics only the MaskGIT transformer trains; its tokenizer and LAM are read.
    trained = model.dynamics if stage == "dynamics" else model
    optimizer = nnx.Optimizer(trained, jasmine_optimizer(), wrt=nnx.Param)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(trained, nnx.Param)))
    graphdef, state = nnx.split((trained, optimizer))
    frozen_graphdef, frozen_state = nnx.split(model) if stage == "dynamics" else (None, None)
    step_fn = jax.jit(make_jasmine_step(stage, graphdef, frozen_graphdef), donate_argnums=0)
    batch, data = config.train(stage).batch_size, config.data
    shape = (batch, data.clip_frames, data.image_size, data.image_size, 3)
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    seconds, flops, loss = time_step(step_fn, state, frozen_state, frames, steps)
    if not np.isfinite(float(loss)):
        raise FloatingPointError(f"the peer's {stage} loss is not finite: {loss}")
    return {
        "stage": stage,
        "params": params,
        "batch": batch,
        "frames_per_s": batch * data.clip_frames / seconds,
        "tflops_per_step": flops / 1e12,
    }


# --- the comparison --------------------------------------------------------------------------


def compare(
    stage: str,
    size_name: str,
    *,
    jasmine: SimpleNamespace | None,
    steps: int,
    runs: int,
    experiment: str,
) -> dict:
    """`runs` alternating measurements of each side for one stage at one size."""
    config = genie_config(SIZES[size_name], experiment)
    row = {"stage": stage, "size": size_name, "genie": [], "jasmine": []}
    measures = {"genie": lambda: benchmark_stage(config, stage, steps, None)}
    if jasmine is not None:
        measures["jasmine"] = lambda: benchmark_jasmine(jasmine, config, stage, steps)
    for run in range(runs):
        for side, measure in measures.items():
            result = measure()
            row[side].append(result["frames_per_s"])
            row[f"{side}_params"] = result["params"]
            row[f"{side}_tflops_per_step"] = result["tflops_per_step"]
            print(
                f"  {stage} {size_name} run {run + 1}: {side} "
                f"{result['frames_per_s']:.1f} frames/s",
                file=sys.stderr,
                flush=True,
            )
    row["ratio"] = (
        float(np.mean(row["genie"]) / np.mean(row["jasmine"])) if row["jasmine"] else None
    )
    return row


def format_row(row: dict) -> str:
    """One line of the table under HEADER: frames/s of every run, the ratio of the means
    (genie / jasmine, above 1 when genie trains faster) and each side's trained parameters."""

    def runs(values):
        return " / ".join(f"{v:.1f}" for v in values) if values else "-"

    def params(side):
        count = row.get(f"{side}_params")
        return f"{count / 1e6:.2f}M" if count else "-"

    ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
    return (
        f"{row['stage']:<10}{row['size']:<7}{runs(row['genie']):>24}{runs(row['jasmine']):>24}"
        f"{ratio:>9}{params('genie'):>10}{params('jasmine'):>10}"
    )


HEADER = (
    f"{'stage':<10}{'size':<7}{'genie frames/s by run':>24}{'jasmine frames/s by run':>24}"
    f"{'g / j':>9}{'params g':>10}{'params j':>10}"
)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jasmine",
        help=f"root of a p-doom/jasmine checkout (commit {JASMINE_COMMIT}); without it, only "
        "genie's side runs",
    )
    parser.add_argument(
        "--stages", nargs="+", default=list(STAGES_COMPARED), choices=STAGES_COMPARED
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["128x2", "256x4"],
        choices=list(SIZES),
        help="width x depth of every transformer; 'tiny' is a smoke test of this script",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs per side")
    parser.add_argument(
        "--experiment", default="coinrun", help="genie experiment the sizes are applied to"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    jasmine = import_jasmine(args.jasmine) if args.jasmine else None
    device = jax.devices()[0]
    print(f"device: {jax.device_count()} x {device.device_kind} ({device.platform})")
    if jasmine is not None:
        print(f"jasmine: {jasmine.path} at {jasmine.commit or 'unknown commit'}")
        if not (jasmine.commit or "").startswith(JASMINE_COMMIT):
            print(f"warning: the comparison is defined at jasmine {JASMINE_COMMIT}", flush=True)
    if jax.device_count() > 1:
        print(
            "warning: genie shards its batch over all devices, jasmine runs on one; expose a "
            "single device (CUDA_VISIBLE_DEVICES=0) for a like-for-like comparison"
        )
    print(HEADER, flush=True)
    rows = []
    for stage in args.stages:
        for size in args.sizes:
            row = compare(
                stage,
                size,
                jasmine=jasmine,
                steps=args.steps,
                runs=args.runs,
                experiment=args.experiment,
            )
            rows.append(row)
            print(format_row(row), flush=True)
    if args.out:
        report = {
            "device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
            "host": platform.node(),
            "jasmine": None
            if jasmine is None
            else {"path": jasmine.path, "commit": jasmine.commit},
            "experiment": args.experiment,
            "steps": args.steps,
            "sizes": {name: dataclasses.asdict(SIZES[name]) for name in args.sizes},
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return rows


if __name__ == "__main__":
    main()
