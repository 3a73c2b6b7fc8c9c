"""Data-parallel and FSDP training on four simulated CPU devices, every stage (the co-training
one trains two models beside a frozen one): losses equal to one device, and the shardings the
loop itself placed every array in, fresh and after a resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genie.sharding import parameter_spec

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import dataclasses, json, sys
import jax
from flax import nnx
import genie.sharding
from genie.sharding import mesh_for, parameter_spec, state_shardings
from genie.stages import build_model
from genie.train import train
from genie.writer import read_metrics
from tests.conftest import moving_square_clips, synthetic_iterator, tiny_config
config = tiny_config(sys.argv[1], steps=3, fsdp=sys.argv[2] in ("fsdp", "hsdp"),
                     fsdp_devices=2 if sys.argv[2] == "hsdp" else 0,
                     cotrain_stop_gradient=False)
fsdp_size = mesh_for(config).shape["fsdp"]  # the devices each parameter is split over
# Pictures at the last step, drawn from the sharded models.
config = dataclasses.replace(config, **{
    f"train_{s}": dataclasses.replace(config.train(s), image_every=3)
    for s in ("tokenizer", "lam", "dynamics", "lam_dynamics")})
genie.sharding.FSDP_MIN_SIZE = 64  # the tiny model's arrays are small
shardings = state_shardings(nnx.state(build_model(config, "tokenizer", nnx.Rngs(0))),
                            mesh_for(config), fsdp=config.fsdp)
sharded = sum(any(axis is not None for axis in s.spec) for s in jax.tree.leaves(shardings))
losses, layouts = {}, {}

def layout(result):
    # Per part of the state the loop held: arrays, how many are split, how many are split as
    # parameter_spec says for their shape, and how many live on all the mesh's devices.
    counts = {}
    for part, arrays in result["layout"].items():
        specs = [(shape, sharding.spec, len(sharding.device_set)) for shape, sharding in arrays]
        counts[part] = {
            "arrays": len(specs),
            "split": sum(any(a is not None for a in spec) for _, spec, _ in specs),
            "split_over_fsdp": sum("fsdp" in tuple(spec) for _, spec, _ in specs),
            "nonscalar": sum(len(shape) > 0 for shape, _, _ in specs),
            "as_rule": sum(
                tuple(spec) == tuple(parameter_spec(shape, fsdp_size, config.fsdp))
                for shape, spec, _ in specs if len(shape)),
            "on_all_devices": sum(n == jax.device_count() for _, _, n in specs),
        }
    return counts

# Every stage: the tokenizer, the LAM, the dynamics model reading both, then the LAM and a
# dynamics model co-trained on the tokenizer (straight-through path).
for stage in ("tokenizer", "lam", "dynamics", "lam_dynamics"):
    result = train(config, stage, data_iterator=synthetic_iterator(moving_square_clips(16), 4),
                   progress=False)
    losses[stage] = [m["loss"] for m in read_metrics(config.run_path / stage)]
    layouts[stage] = layout(result)
# Resumed: restored straight into the same shardings.
longer = dataclasses.replace(config, train_tokenizer=dataclasses.replace(
    config.train_tokenizer, steps=4))
layouts["tokenizer_resumed"] = layout(train(
    longer, "tokenizer", data_iterator=synthetic_iterator(moving_square_clips(16), 4),
    progress=False))
images = sorted(p.name for p in config.run_path.glob("*/images/*.png"))
print(json.dumps({"devices": jax.device_count(), "fsdp_size": fsdp_size,
                  "sharded": sharded, "losses": losses,
                  "images": images, "layouts": layouts}))
"""


def _run(tmp_path, devices: int, mode: str) -> dict:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / f"{mode}{devices}"), mode],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parameter_spec_rules():
    assert tuple(parameter_spec((256, 128), devices=4, fsdp=False)) == ()
    assert tuple(parameter_spec((256, 128), devices=4, fsdp=True)) == ("fsdp", None)
    assert tuple(parameter_spec((6, 4096), devices=4, fsdp=True)) == (None, "fsdp")
    assert tuple(parameter_spec((8,), devices=4, fsdp=True)) == ()  # too small to split
    assert tuple(parameter_spec((129, 127), devices=4, fsdp=True)) == ()  # nothing divides


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The single-device run both modes are compared with, trained once."""
    return _run(tmp_path_factory.mktemp("one_device"), 1, "dp")


@pytest.mark.parametrize("mode", ["dp", "fsdp", "hsdp"])
def test_four_devices_train_like_one(tmp_path, mode, one_device):
    """dp: data parallel; fsdp: parameters split over all four devices; hsdp: split over pairs
    (the mesh's fsdp axis of 2), the pairs data parallel."""
    one = one_device
    four = _run(tmp_path, 4, mode)
    assert (one["devices"], four["devices"]) == (1, 4)
    assert four["fsdp_size"] == {"dp": 1, "fsdp": 4, "hsdp": 2}[mode]
    sharded = mode != "dp"
    assert (four["sharded"] > 0) == sharded
    for stage in ("tokenizer", "lam", "dynamics", "lam_dynamics"):
        np.testing.assert_allclose(four["losses"][stage], one["losses"][stage], rtol=2e-4)
    assert four["images"] == one["images"]
    assert four["images"] == [  # the resumed tokenizer draws at its new last step, 4
        "dynamics_0000003.png",
        "lam_0000003.png",
        "lam_dynamics_0000003.png",
        "tokenizer_0000003.png",
        "tokenizer_0000004.png",
    ]
    # The shardings the loop itself placed every array in, fresh and after a resume: every
    # array on all four devices, every parameter and optimizer moment split exactly as the
    # rule says, and with --fsdp many of them split, over the mesh's fsdp axis (none without).
    for name, parts in four["layouts"].items():
        for part, counts in parts.items():
            if not counts["arrays"]:
                continue
            assert counts["on_all_devices"] == counts["arrays"], (name, part)
            assert counts["as_rule"] == counts["nonscalar"], (name, part, counts)
            assert (counts["split"] > 0) == sharded, (name, part, counts)
            assert counts["split_over_fsdp"] == counts["split"], (name, part, counts)
    assert four["layouts"]["lam_dynamics"]["frozen"]["arrays"] > 0  # the frozen tokenizer
    assert four["layouts"]["dynamics"]["frozen"]["arrays"] > 0  # the tokenizer and LAM


def test_distributed_settings_come_from_flags_then_environment(monkeypatch):
    import jax

    from genie import sharding

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    for variable in sharding.DISTRIBUTED_ENV.values():
        monkeypatch.delenv(variable, raising=False)
    sharding.initialize_distributed()  # inside a cluster: jax detects everything
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    sharding.initialize_distributed("host0:1234")  # the flag beside the environment
    assert calls == [
        {},
        {"coordinator_address": "host0:1234", "num_processes": 4, "process_id": 3},
    ]
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match="--process-id"):
        sharding.initialize_distributed("host0:1234")


def test_mesh_axes_and_refused_settings(tmp_path):
    from genie.sharding import BATCH_AXES, make_mesh, mesh_for
    from tests.conftest import tiny_config

    mesh = mesh_for(tiny_config(tmp_path))
    assert mesh.axis_names == BATCH_AXES == ("data", "fsdp")
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1}  # one CPU device here
    with pytest.raises(ValueError, match="fsdp_devices 2 needs --fsdp"):
        mesh_for(tiny_config(tmp_path, fsdp_devices=2))
    with pytest.raises(ValueError, match="fsdp_devices 2 does not divide the 1 devices"):
        make_mesh(fsdp_devices=2)
