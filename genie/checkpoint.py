"""Run folders and checkpoints.

A run folder holds one sub-folder per stage (genie.stages.STAGE_SPECS):

    runs/<name>/<stage>/config.json        the full Config the stage was trained with
    runs/<name>/<stage>/checkpoints/<step>/ orbax: config, models, optimizers, data-iterator state
    runs/<name>/<stage>/metrics.jsonl, tensorboard/, images/

Each trained model and its optimizer state are separate items of one orbax checkpoint, so a
consumer (the dynamics stage, play, eval) restores one model alone. A stage that trains one model
stores the items `model` and `optimizer`; one that trains several (the co-training stage
`lam_dynamics`) stores `model_<name>` and `optimizer_<name>` per model. `load_model(run, "lam")`
finds the LAM in the latest stage folder that trains one (`lam_dynamics`, else `lam`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from genie.config import MODELS, Config, Model, Stage, from_dict, load_config, to_dict


def stage_path(run_dir: str | Path, stage: Stage) -> Path:
    return Path(run_dir).absolute() / stage


def item_names(name: Model, trains: Sequence[Model]) -> tuple[str, str]:
    """The orbax items holding model `name` and its optimizer state in a checkpoint of a stage
    that trains `trains`. One model: "model" and "optimizer", the layout of every checkpoint
    written before stages could train several, which keeps those runs loadable and resumable."""
    if len(trains) == 1:
        return "model", "optimizer"
    return f"model_{name}", f"optimizer_{name}"


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
    manager: ocp.CheckpointManager,
    step: int,
    models: dict[str, nnx.Module],
    optimizers: dict[str, nnx.Optimizer],
    iterator,
    config: Config,
) -> None:
    """Writes one step: every trained model and its optimizer, the data-iterator position and
    the full config. `models` and `optimizers` are keyed by model name (a stage's `trains`)."""
    items = dict(config=ocp.args.JsonSave(to_dict(config)))
    for name, model in models.items():
        model_item, optimizer_item = item_names(name, tuple(models))
        items[model_item] = ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model)))
        optimizer_state = nnx.to_pure_dict(nnx.state(optimizers[name]))
        items[optimizer_item] = ocp.args.StandardSave(optimizer_state)
    if iterator is not None:
        import grain

        items["data"] = grain.checkpoint.CheckpointSave(iterator)
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()


def restore(
    manager: ocp.CheckpointManager,
    models: dict[str, nnx.Module],
    optimizers: dict[str, nnx.Optimizer] | None = None,
    iterator=None,
    step: int | None = None,
    *,
    trains: Sequence[Model] | None = None,
):
    """Restores the latest (or given) step in place; returns the step, or None if none exist.

    `models` (and `optimizers`) by name may be some of the models the checkpoint's stage trains,
    `trains` (default: exactly `models`); only their items are read.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    trains = tuple(models) if trains is None else tuple(trains)
    targets = {}  # item name -> the module restored from it
    for name, model in models.items():
        model_item, optimizer_item = item_names(name, trains)
        targets[model_item] = model
        if optimizers is not None:
            targets[optimizer_item] = optimizers[name]
    items = {
        item: ocp.args.StandardRestore(_abstract(nnx.to_pure_dict(nnx.state(module))))
        for item, module in targets.items()
    }
    if iterator is not None:
        import grain

        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    for item, module in targets.items():
        _update(module, restored[item])
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


def trained_stage(run_dir: str | Path, name: Model) -> Stage:
    """The stage folder of `run_dir` that holds model `name`: of the stages that train it, the
    latest in training order (STAGES) whose folder holds a config.json, so a co-trained LAM and
    dynamics model (`lam_dynamics`) win over ones trained alone. Raises FileNotFoundError."""
    from genie.stages import stages_training  # late: stages imports the models

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    candidates = stages_training(name)
    for stage in reversed(candidates):
        if (stage_path(run_dir, stage) / "config.json").is_file():
            return stage
    commands = " or ".join(f"`python -m genie.train {s} --run-dir {run_dir}`" for s in candidates)
    raise FileNotFoundError(
        f"{Path(run_dir).absolute()} holds no trained {name} (looked in "
        f"{', '.join(f'{s}/' for s in candidates)}): train it with {commands}"
    )


def load_model(
    run_dir: str | Path,
    name: Model,
    *,
    stage: Stage | None = None,
    step: int | None = None,
    mesh=None,
    fsdp: bool = False,
):
    """Builds model `name` from the config saved with it and restores its weights.

    The model comes from `stage`'s folder, by default `trained_stage(run_dir, name)`. With a
    `mesh` it is created sharded over it (`genie.sharding.create_sharded`) and restored into
    those shardings, as multi-host training needs; without, on the default device.
    Returns (model, that stage's config). Raises FileNotFoundError naming what is missing.
    """
    from genie.stages import STAGE_SPECS, build_model  # late: stages imports the models

    stage = trained_stage(run_dir, name) if stage is None else stage
    if stage not in STAGE_SPECS or name not in STAGE_SPECS[stage].trains:
        raise ValueError(f"stage {stage!r} does not train a {name}")
    folder = stage_path(run_dir, stage)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no trained {name}: train it with "
            f"`python -m genie.train {stage} --run-dir {run_dir}`"
        )
    config: Config = load_config(folder / "config.json")
    manager = checkpoint_manager(folder, read_only=True)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"{folder / 'checkpoints'} holds no checkpoint of the {name}")
    if mesh is None:
        model = build_model(config, name, nnx.Rngs(config.seed))
    else:
        from genie.sharding import create_sharded

        model = create_sharded(
            lambda: build_model(config, name, nnx.Rngs(config.seed)), mesh, fsdp=fsdp
        )
    restore(manager, {name: model}, step=step, trains=STAGE_SPECS[stage].trains)
    manager.close()
    return model, config
