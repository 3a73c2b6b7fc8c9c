"""Run folders and checkpoints.

A run folder holds one sub-folder per stage:

    runs/<name>/<stage>/config.json        the full Config the stage was trained with
    runs/<name>/<stage>/checkpoints/<step>/ orbax: config, model, optimizer, data-iterator state
    runs/<name>/<stage>/metrics.jsonl, tensorboard/, images/

The model, the optimizer and the grain iterator are separate items of one orbax checkpoint, so
a consumer (the dynamics stage, play, eval) restores the model alone.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from genie.config import STAGES, Config, Stage, from_dict, load_config, to_dict


def stage_path(run_dir: str | Path, stage: Stage) -> Path:
    return Path(run_dir).absolute() / stage


def checkpoint_manager(
    folder: Path, *, keep: int = 3, read_only: bool = False
) -> ocp.CheckpointManager:
    # A reader neither creates folders nor deletes old steps. (orbax's own read_only option
    # would do the same but logs a warning on every load.)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        create=not read_only,
        # Saving is synchronous: a run killed right after "saved" must really have saved.
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(Path(folder).absolute() / "checkpoints", options=options)


def _abstract(tree):
    """Shapes, dtypes and shardings of a pytree of arrays, as restore targets."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def save(
    manager: ocp.CheckpointManager, step: int, model, optimizer, iterator, config: Config
) -> None:
    """Writes one step: model, optimizer, data-iterator position and the full config."""
    items = dict(
        config=ocp.args.JsonSave(to_dict(config)),
        model=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model))),
        optimizer=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(optimizer))),
    )
    if iterator is not None:
        import grain

        items["data"] = grain.checkpoint.CheckpointSave(iterator)
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, model, optimizer=None, iterator=None, step=None):
    """Restores the latest (or given) step in place; returns the step, or None if none exist."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    items = dict(model=ocp.args.StandardRestore(_abstract(nnx.to_pure_dict(nnx.state(model)))))
    if optimizer is not None:
        optimizer_state = nnx.to_pure_dict(nnx.state(optimizer))
        items["optimizer"] = ocp.args.StandardRestore(_abstract(optimizer_state))
    if iterator is not None:
        import grain

        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    _update(model, restored["model"])
    if optimizer is not None:
        _update(optimizer, restored["optimizer"])
    return step


def saved_config(manager: ocp.CheckpointManager, step: int | None = None) -> Config:
    """The config stored inside a checkpoint (the latest one unless `step` is given)."""
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return from_dict(Config, restored["config"])


def _update(module, pure_dict) -> None:
    state = nnx.state(module)
    nnx.replace_by_pure_dict(state, pure_dict)
    nnx.update(module, state)


def load_model(run_dir: str | Path, stage: Stage, *, step: int | None = None):
    """Builds the model of `stage` from the config saved with it and restores its weights.

    Returns (model, config). Raises FileNotFoundError naming what is missing.
    """
    from genie.stages import build_model  # late: stages imports the models

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    folder = stage_path(run_dir, stage)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no trained {stage}: train it with "
            f"`python -m genie.train {stage} --run-dir {run_dir}`"
        )
    config: Config = load_config(folder / "config.json")
    manager = checkpoint_manager(folder, read_only=True)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"{folder / 'checkpoints'} holds no checkpoint of the {stage}")
    model = build_model(config, stage, nnx.Rngs(config.seed))
    restore(manager, model, step=step)
    manager.close()
    return model, config
