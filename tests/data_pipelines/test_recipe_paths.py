"""The GPU recipe's own code paths at a tiny size on CPU: bfloat16 compute through the whole
training loop, the grain loader with worker processes, and an exact resume with both."""

from __future__ import annotations

import dataclasses

import numpy as np

from genie import checkpoint
from genie.config import DataConfig
from genie.writer import read_metrics
from tests.conftest import tiny_config
from tests.data_pipelines.conftest import COINRUN_CLIP_FRAMES
from tests.test_train import InterruptAfter


class InterruptGrainAfter(InterruptAfter):
    """`InterruptAfter` around a grain iterator: its own state passes through unchanged."""

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state):
        self.iterator.set_state(state)


def _config(run_dir, coinrun_data, dtype: str):
    name, data_dir = coinrun_data
    config = tiny_config(run_dir, steps=4, dtype=dtype)
    data = DataConfig(
        dataset=name,
        data_dir=str(data_dir),
        clip_frames=COINRUN_CLIP_FRAMES,
        image_size=64,
        worker_count=2,  # grain worker processes, as experiments/coinrun.py reads
    )
    # 64x64 CoinRun frames in 16x16 patches: 16 tokens, as cheap as the 16x16 tiny config.
    tokenizer = dataclasses.replace(config.tokenizer, patch_size=16)
    train = dataclasses.replace(config.train_tokenizer, validate_every=0)
    return dataclasses.replace(config, data=data, tokenizer=tokenizer, train_tokenizer=train)


def _losses(run_dir) -> list[float]:
    return [m["loss"] for m in read_metrics(run_dir / "tokenizer")]


def test_bfloat16_with_grain_workers_resumes_exactly(coinrun_data, tmp_path, monkeypatch):
    from data_pipelines import loader
    from genie.train import train

    whole = _config(tmp_path / "whole", coinrun_data, "bfloat16")
    train(whole, "tokenizer", progress=False)

    # Interrupted after two batches (SIGTERM, as a cluster would), then resumed from the
    # checkpoint with a fresh loader and fresh workers.
    real_make_loader = loader.make_loader

    class Interrupting:
        def __init__(self, *args, **kwargs):
            self.loader = real_make_loader(*args, **kwargs)

        def __iter__(self):
            return InterruptGrainAfter(iter(self.loader), count=2)

    halves = _config(tmp_path / "halves", coinrun_data, "bfloat16")
    monkeypatch.setattr(loader, "make_loader", Interrupting)
    train(halves, "tokenizer", progress=False)
    monkeypatch.setattr(loader, "make_loader", real_make_loader)
    assert checkpoint.checkpoint_manager(tmp_path / "halves" / "tokenizer").latest_step() == 2
    train(halves, "tokenizer", progress=False)

    assert len(_losses(tmp_path / "whole")) == 4
    assert _losses(tmp_path / "halves") == _losses(tmp_path / "whole")
    model, _ = checkpoint.load_model(tmp_path / "whole", "tokenizer")
    resumed, _ = checkpoint.load_model(tmp_path / "halves", "tokenizer")
    assert model.encoder.blocks[0].mlp.up.kernel.dtype == np.float32  # parameters stay fp32
    np.testing.assert_array_equal(
        model.encoder.blocks[0].mlp.up.kernel[...], resumed.encoder.blocks[0].mlp.up.kernel[...]
    )

    # The compute really ran in bfloat16: the same run in float32 has other losses.
    float32 = _config(tmp_path / "float32", coinrun_data, "float32")
    train(float32, "tokenizer", progress=False)
    assert _losses(tmp_path / "float32") != _losses(tmp_path / "whole")
    np.testing.assert_allclose(_losses(tmp_path / "float32"), _losses(tmp_path / "whole"), rtol=0.1)
