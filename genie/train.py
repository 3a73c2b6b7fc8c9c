"""One training loop for every stage.

    python -m genie.train tokenizer    --config coinrun_tiny [--train-tokenizer.steps 50]
    python -m genie.train lam          --config coinrun_tiny
    python -m genie.train dynamics     --config coinrun_tiny
    python -m genie.train lam_dynamics --config coinrun_tiny   # co-trains LAM and dynamics

The stage (genie.stages) declares the models it trains and the ones it reads frozen, and
supplies its loss and pictures; this loop supplies the data sharding, one optimizer per trained
model, checkpointing, logging, resume and the progress bar. A run resumes automatically from
the latest checkpoint in `<run_dir>/<stage>/checkpoints`: parameters, optimizer moments, the
step, the VQ reset counters and the data-iterator position, and every step's key is
`fold_in(seed_key, step)`, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from genie import checkpoint
from genie.config import (
    MODELS,
    STAGES,
    Config,
    Stage,
    load_config,
    load_experiment,
    save_config,
    to_dict,
)
from genie.sharding import (
    any_process,
    batch_sharding,
    create_sharded,
    initialize_distributed,
    mesh_for,
    replicated,
    state_shardings,
)
from genie.stages import STAGE_SPECS, build_model
from genie.writer import MetricWriter, setup_logging

log = logging.getLogger("genie")


class NonFiniteLossError(RuntimeError):
    pass


def make_optimizer(config: Config, stage: Stage) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, after global-norm gradient clipping."""
    train = config.train(stage)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train.learning_rate,
        warmup_steps=min(train.warmup_steps, max(train.steps - 1, 1)),
        decay_steps=max(train.steps, 2),
        end_value=train.learning_rate * 0.1,
    )
    return optax.chain(
        optax.clip_by_global_norm(train.grad_clip),
        optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=train.weight_decay),
    )


def make_train_step(config: Config, stage: Stage, graphdef, frozen_graphdef):
    """A pure `(state, frozen_state, frames, step_key) -> (state, metrics)` for jax.jit.

    A step whose loss, gradient norm or updated parameters are not finite returns the state
    unchanged, with metrics["update_finite"] False (the loop stops on it).

    `state` holds the stage's trained models and their optimizers (dicts by model name);
    the loss is differentiated with respect to those models only, never the frozen ones. A
    stage that trains several models also reports each one's gradient norm and codebook resets
    under its name ("lam/grad_norm").
    """
    spec = STAGE_SPECS[stage]
    # Diagnostics that cost passes of their own are measured in validation (Stage.loss).
    loss_fn = functools.partial(spec.loss, config=config, diagnostics=False)
    several = len(spec.trains) > 1

    def train_step(state, frozen_state, frames, key):
        # A copy: merging shares the Variables, and the update below would overwrite `state`,
        # which is kept if the step turns out non-finite.
        models, optimizers = nnx.merge(graphdef, state, copy=True)
        frozen = {} if frozen_graphdef is None else nnx.merge(frozen_graphdef, frozen_state)
        loss_key, reset_key = jax.random.split(key)
        (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
            models, frozen, frames, loss_key
        )
        grad_norm = optax.global_norm(grads)
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm)
        for name, model in models.items():
            optimizers[name].update(model, grads[name])
            prefix = f"{name}/" if several else ""
            if several:
                metrics[f"{prefix}grad_norm"] = optax.global_norm(grads[name])
            if hasattr(model, "reset_dead_codes"):
                # One key for every model that revives codes: at most one per stage today,
                # and different codebooks would draw different noise from it anyway.
                metrics[f"{prefix}codes_reset"] = model.reset_dead_codes(reset_key)
        after = nnx.state((models, optimizers))
        # Gradient clipping passes NaN and inf through, so a finite loss does not make a safe
        # update: a step whose loss, gradient norm or new parameters are not all finite is not
        # applied, and the loop stops on its flag before anything is saved.
        params = nnx.state(models, nnx.Param)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        for leaf in jax.tree.leaves(params):
            finite &= jnp.all(jnp.isfinite(leaf))
        kept = jax.lax.cond(finite, lambda: after, lambda: state)
        return kept, dict(metrics, update_finite=finite)

    return train_step


def make_validation_step(config: Config, stage: Stage, graphdef, frozen_graphdef):
    """A pure `(state, frozen_state, frames, key) -> metrics` for jax.jit: the stage's loss and
    metrics without a gradient; what the loss call changes in the models (VQ usage counters) is
    dropped with the copy."""
    loss_fn = functools.partial(STAGE_SPECS[stage].loss, config=config, diagnostics=True)

    def validation_step(state, frozen_state, frames, key):
        models, _ = nnx.merge(graphdef, state, copy=True)
        frozen = {} if frozen_graphdef is None else nnx.merge(frozen_graphdef, frozen_state)
        loss, metrics = loss_fn(models, frozen, frames, key)
        return dict(metrics, loss=loss)

    return validation_step


def _validation_clips(config: Config, stage: Stage) -> np.ndarray | None:
    """The first `validate_clips` clips of the run's validation split (whole batches of them),
    or None, with a warning, when validation is off or the dataset has no such clips."""
    from data_pipelines.loader import read_clips

    train_config = config.train(stage)
    if not train_config.validate_every:
        return None
    batches = max(train_config.validate_clips // train_config.batch_size, 1)
    try:
        clips = read_clips(
            config.data.dataset,
            "validation",
            data_dir=config.data.data_dir,
            limit=batches * train_config.batch_size,
            clip_frames=config.data.clip_frames,
        )["frames"]
    except ValueError as error:  # no validation split
        log.warning("no validation loss for %s: %s", stage, error)
        return None
    usable = len(clips) // train_config.batch_size * train_config.batch_size
    if not usable:
        log.warning(
            "no validation loss for %s: the validation split has %d clips, fewer than one "
            "batch of %d",
            stage,
            len(clips),
            train_config.batch_size,
        )
        return None
    return clips[:usable]


def _load_frozen(config: Config, stage: Stage, mesh=None):
    """The trained models this stage reads, from the same run folder (restored straight into
    their shardings on `mesh`), and `config` with their config sections (the ones they were
    built from)."""
    spec = STAGE_SPECS[stage]
    frozen = {}
    for name in spec.frozen:
        model, saved = checkpoint.load_model(config.run_path, name, mesh=mesh, fsdp=config.fsdp)
        if (saved.data.image_size, saved.data.clip_frames) != (
            config.data.image_size,
            config.data.clip_frames,
        ):
            raise ValueError(
                f"the {name} in {config.run_path} was trained on "
                f"{saved.data.image_size}px clips of {saved.data.clip_frames} frames, this "
                f"{stage} run uses {config.data.image_size}px x {config.data.clip_frames}"
            )
        # Config sections are named like the models they size.
        if getattr(saved, name) != getattr(config, name):
            config = dataclasses.replace(config, **{name: getattr(saved, name)})
        for part in spec.unread.get(name, ()):
            delattr(model, part)
        frozen[name] = model
    return frozen, config


def _check_resumable(config: Config, stage: Stage, folder: Path) -> None:
    """A run folder may only be resumed with the config it was started with, except for its
    number of steps and what this stage never reads: other stages' schedules and the sections
    of models it neither trains nor reads (a tokenizer run does not care how the LAM is set)."""
    saved_path = folder / "config.json"
    if not saved_path.exists():
        return
    saved = load_config(saved_path)
    train_field = f"train_{stage}"
    spec = STAGE_SPECS[stage]
    unread = {
        **{f"train_{other}": saved.train(other) for other in STAGES if other != stage},
        **{
            name: getattr(saved, name)
            for name in MODELS
            if name not in spec.trains and name not in spec.frozen
        },
    }
    relaxed = dataclasses.replace(
        config,
        **{train_field: dataclasses.replace(config.train(stage), steps=saved.train(stage).steps)},
        **unread,
    )
    if relaxed != saved:
        a, b = to_dict(saved), to_dict(relaxed)
        changed = sorted(k for k in a if a[k] != b[k])
        raise ValueError(
            f"{folder} was trained with a different config (sections differing: {changed}); "
            "use another --run-dir or delete that folder to start over"
        )


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag so the loop can save before leaving."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def compile_ready_step(config: Config, stage: Stage, models, optimizers, frozen, mesh):
    """Splits the models into graph and (sharded) state and jits the train step over them.

    `models` and `optimizers` are the trained models and their optimizers by name, `frozen`
    the read-only models by name. Returns (step_fn, graphdef, state, frozen_state);
    `step_fn(state, frozen_state, frames, key)` donates `state` and returns the new state and
    the step's metrics.
    """
    graphdef, state = nnx.split((models, optimizers))
    frozen_graphdef, frozen_state = nnx.split(frozen) if frozen else (None, None)
    # The models were created (and restored) in these shardings: no transfer happens here.
    shardings = state_shardings(state, mesh, fsdp=config.fsdp)
    step_fn = jax.jit(
        make_train_step(config, stage, graphdef, frozen_graphdef),
        donate_argnums=0,
        out_shardings=(shardings, None),
    )
    return step_fn, graphdef, state, frozen_state


def train(
    config: Config,
    stage: Stage,
    *,
    data_iterator=None,
    validation_frames: np.ndarray | None = None,
    progress: bool = True,
) -> dict:
    """Trains `stage` to `config.train(stage).steps`, resuming if a checkpoint exists.

    `data_iterator` overrides the dataset (tests); it must yield uint8 (B, T, H, W, 3) and
    support grain checkpointing if resume of the data order matters. `validation_frames`
    (M, T, H, W, 3) uint8, M a multiple of the batch size, overrides the validation clips
    (read from the dataset's validation split when the dataset is read). Returns the last
    metrics, the logged history, the folder, `stopped` (the stop signal that ended the run
    early after saving, e.g. "SIGTERM", else None) and the layout (shape and sharding of every
    array of the trained and the frozen state, as the loop placed them).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    train_config = config.train(stage)
    folder = checkpoint.stage_path(config.run_path, stage)
    mesh = mesh_for(config)
    if train_config.batch_size % mesh.size:
        raise ValueError(
            f"batch size {train_config.batch_size} does not split over {mesh.size} devices"
        )
    frozen, config = _load_frozen(config, stage, mesh)
    _check_resumable(config, stage, folder)
    is_writer = jax.process_index() == 0
    if is_writer:
        save_config(config, folder / "config.json")

    # Every trained model starts as it would in a stage of its own; each gets its own optimizer
    # (and gradient clipping), so with stop-gradient a co-trained LAM takes exactly the updates
    # the lam stage would give it. Created sharded: no host ever holds an unsharded copy.
    trains = STAGE_SPECS[stage].trains

    def make_models_and_optimizers():
        models = {name: build_model(config, name, nnx.Rngs(params=config.seed)) for name in trains}
        optimizers = {
            name: nnx.Optimizer(model, make_optimizer(config, stage), wrt=nnx.Param)
            for name, model in models.items()
        }
        return models, optimizers

    models, optimizers = create_sharded(make_models_and_optimizers, mesh, fsdp=config.fsdp)

    if data_iterator is None:
        from data_pipelines.loader import make_loader

        loader = make_loader(
            config.data.dataset,
            "train",
            batch_size=train_config.batch_size,
            clip_frames=config.data.clip_frames,
            data_dir=config.data.data_dir,
            seed=config.data.shuffle_seed,
            worker_count=config.data.worker_count,
        )
        data_iterator = iter(loader)
        if validation_frames is None:
            validation_frames = _validation_clips(config, stage)
    if validation_frames is not None and len(validation_frames) % train_config.batch_size:
        raise ValueError(
            f"{len(validation_frames)} validation clips do not make whole batches of "
            f"{train_config.batch_size}"
        )

    manager = checkpoint.checkpoint_manager(folder, keep=train_config.keep_checkpoints)
    start = checkpoint.restore(manager, models, optimizers, data_iterator) or 0
    if start:
        log.info("resumed %s from step %d", stage, start)
    step_fn, graphdef, state, frozen_state = compile_ready_step(
        config, stage, models, optimizers, frozen, mesh
    )
    frames_sharding = batch_sharding(mesh)
    base_key = jax.random.key(config.seed + 1)
    image_key = jax.random.key(config.seed + 2)  # pictures never perturb the training keys
    validation_key = jax.random.key(config.seed + 3)  # the same key at every validation
    validate_every = train_config.validate_every if validation_frames is not None else 0
    if validate_every:
        validation_fn = jax.jit(
            make_validation_step(config, stage, graphdef, nnx.split(frozen)[0] if frozen else None)
        )

    def validate() -> dict[str, float]:
        """Means over the validation batches; each process feeds its share of every batch."""
        batch, share = train_config.batch_size, train_config.batch_size // jax.process_count()
        totals = None
        for start in range(0, len(validation_frames), batch):
            local = validation_frames[start + jax.process_index() * share :][:share]
            frames = jax.make_array_from_process_local_data(frames_sharding, local)
            values = validation_fn(state, frozen_state, frames, validation_key)
            totals = values if totals is None else jax.tree.map(jnp.add, totals, values)
        count = len(validation_frames) // batch
        return {f"val/{k}": float(v) / count for k, v in jax.device_get(totals).items()}

    writer = MetricWriter(folder, enabled=is_writer)
    metrics, history = {}, []
    bar = tqdm(
        total=train_config.steps, initial=start, desc=stage, disable=not (progress and is_writer)
    )
    tick, tick_step = time.perf_counter(), start
    last_saved = start
    window, window_steps = None, 0  # metrics summed on the device since the last log line
    pending = None  # (step, loss, update_finite) unchecked: one step late keeps the device busy

    def check_finite(step: int, loss: jax.Array, finite: jax.Array) -> None:
        value = float(loss)
        if not math.isfinite(value):
            problem = f"loss became {value}"
        elif not bool(finite):
            problem = "gradients or updated parameters became non-finite (loss finite)"
        else:
            return
        raise NonFiniteLossError(
            f"{stage} {problem} at step {step}; that update was not applied and nothing was "
            f"saved. The last good checkpoint (step {last_saved}) is in "
            f"{folder / 'checkpoints'}"
        )

    stopped = None
    try:
        with _StopRequest() as stop:
            for step in range(start, train_config.steps):
                local = next(data_iterator)
                frames = jax.make_array_from_process_local_data(frames_sharding, local)
                state, step_metrics = step_fn(
                    state, frozen_state, frames, jax.random.fold_in(base_key, step)
                )
                if pending is not None:
                    check_finite(*pending)
                done = step + 1
                pending = (done, step_metrics["loss"], step_metrics.pop("update_finite"))
                window = (
                    step_metrics if window is None else jax.tree.map(jnp.add, window, step_metrics)
                )
                window_steps += 1
                bar.update(1)
                # Collective: a signal to any one process stops them all at the same step (a
                # process saving alone would wait for the others forever).
                stopping = any_process(stop.signal is not None)
                last = done == train_config.steps
                saving = done % train_config.checkpoint_every == 0 or last or stopping
                drawing = train_config.image_every and (
                    done % train_config.image_every == 0 or last
                )
                validating = validate_every and (done % validate_every == 0 or last)
                logging_now = done % train_config.log_every == 0 or last or validating
                if logging_now or saving or drawing:
                    check_finite(*pending)
                    pending = None
                if logging_now:
                    now = time.perf_counter()
                    rate = (done - tick_step) * local.shape[0] * local.shape[1] / (now - tick)
                    tick, tick_step = now, done
                    # Means over the steps since the last line, not one step's noisy value.
                    totals = jax.device_get(window)
                    metrics = {k: float(v) / window_steps for k, v in totals.items()}
                    metrics["frames_per_second"] = rate * jax.process_count()
                    window, window_steps = None, 0
                    if validating:
                        metrics.update(validate())
                        log.info(
                            "%s step %d: validation loss %.4f (training %.4f)",
                            stage,
                            done,
                            metrics["val/loss"],
                            metrics["loss"],
                        )
                        tick = time.perf_counter()  # the next rate counts training alone
                    writer.scalars(done, metrics)
                    history.append(dict(metrics, step=done))
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", fps=f"{rate:.0f}")
                    usage = metrics.get("code_usage_max", metrics.get("lam/code_usage_max"))
                    if usage is not None and usage > 0.9:
                        log.warning(
                            "step %d: one latent action explains %.0f%% of transitions "
                            "(the LAM may be collapsing)",
                            done,
                            100 * usage,
                        )
                if drawing:
                    _save_images(
                        writer, stage, graphdef, state, frozen, local, image_key, done, mesh
                    )
                if saving:
                    models, optimizers = nnx.merge(graphdef, state)
                    checkpoint.save(manager, done, models, optimizers, data_iterator, config)
                    last_saved = done
                if stopping:
                    stopped = stop.signal or "a stop signal to another process"
                    log.warning("%s received: saved step %d in %s", stopped, done, folder)
                    break
            if pending is not None:
                check_finite(*pending)
    finally:
        bar.close()
        writer.close()
        manager.close()
    layout = {  # (shape, sharding) of every array the loop held, for tests and tools
        "trained": [(x.shape, x.sharding) for x in jax.tree.leaves(state)],
        "frozen": [(x.shape, x.sharding) for x in jax.tree.leaves(frozen_state or {})],
    }
    return {
        "metrics": metrics,
        "history": history,
        "folder": folder,
        "stopped": stopped,
        "layout": layout,
    }


def _save_images(writer, stage, graphdef, state, frozen, frames, image_key, step, mesh):
    spec = STAGE_SPECS[stage]
    if spec.images is None:
        return
    # Every process draws the same picture from the same inputs; only process 0 writes. The
    # clips are process 0's (each host has its own batch) and the models a replicated copy, so
    # every array the picture functions read or return is whole on every process.
    frames = np.asarray(frames)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        frames = np.asarray(multihost_utils.broadcast_one_to_all(frames))
    trained, _ = nnx.merge(graphdef, state)  # the optimizer state is not drawn: not copied
    models = {}
    for name, model in {**frozen, **trained}.items():
        module_graphdef, module_state = nnx.split(model)
        models[name] = nnx.merge(module_graphdef, replicated(module_state, mesh))
    image = spec.images(models, frames, jax.random.fold_in(image_key, step))
    writer.image(step, stage, image)


def parse_args(argv: list[str]) -> tuple[Stage, Config]:
    """`STAGE --config FILE [--run-dir D] [tyro overrides such as --train-lam.steps 10]`."""
    import tyro

    parser = argparse.ArgumentParser(
        prog="genie train",
        description="Train one stage of genie (lam_dynamics co-trains the LAM and the "
        "dynamics model). Any Config field can be overridden, e.g. "
        "--tokenizer.num-codes 512 --train-tokenizer.batch-size 16 "
        "(`--config FILE --help` lists them all).",
        add_help=False,
    )
    parser.add_argument("stage", choices=STAGES, nargs="?")
    parser.add_argument(
        "--config",
        default="coinrun_tiny",
        help="experiment name or .py file (default coinrun_tiny)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: start jax.distributed first, with the three settings below, else "
        "detected from the cluster (SLURM, Open MPI, TPU pods)",
    )
    parser.add_argument(
        "--coordinator-address",
        help="host:port of process 0's coordinator (env JAX_COORDINATOR_ADDRESS)",
    )
    parser.add_argument(
        "--num-processes", type=int, help="processes in the job (env JAX_NUM_PROCESSES)"
    )
    parser.add_argument("--process-id", type=int, help="this process, 0..N-1 (env JAX_PROCESS_ID)")
    parser.add_argument("-h", "--help", action="store_true")
    known, rest = parser.parse_known_args(argv)
    if known.stage is None:
        parser.print_help()
        raise SystemExit(0 if known.help else 2)
    frozen_overrides = [
        argument
        for argument in rest
        for name in STAGE_SPECS[known.stage].frozen
        if argument.startswith(f"--{name}.")
    ]
    if frozen_overrides:
        frozen = STAGE_SPECS[known.stage].frozen
        saved = ", ".join(_saved_config_paths(name) for name in frozen)
        raise ValueError(
            f"{' '.join(frozen_overrides)}: the {known.stage} stage reads the trained "
            f"{' and '.join(frozen)} with the config saved beside them ({saved}), so this "
            "override would be ignored; give it when training that model instead"
        )
    if known.distributed:
        initialize_distributed(known.coordinator_address, known.num_processes, known.process_id)
    default = load_experiment(known.config)
    if known.help:
        rest = [*rest, "--help"]
    config = tyro.cli(Config, default=default, args=rest, prog=f"genie train {known.stage}")
    return known.stage, config


def _saved_config_paths(name: str) -> str:
    """Where a trained model's config lives in a run folder, for messages."""
    from genie.stages import stages_training

    return " or ".join(f"RUN_DIR/{stage}/config.json" for stage in stages_training(name))


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    stage, config = parse_args(sys.argv[1:] if argv is None else argv)
    result = train(config, stage)
    if result["stopped"]:
        # Not "trained": a job script must be able to tell a preempted run from a finished one.
        raise SystemExit(
            f"{result['stopped']} received: {stage} saved in {result['folder']}; run the same "
            "command again to resume"
        )
    print(f"{stage} trained: {result['folder']}")


if __name__ == "__main__":
    from genie import cli

    cli.run(main, None, prog="genie train")
