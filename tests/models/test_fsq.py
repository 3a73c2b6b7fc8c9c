"""Finite scalar quantisation: the code grid, id round trips, the straight-through gradient,
and the tokenizer, LAM and training loop running with it."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie.config import LAMConfig, TokenizerConfig, load_config
from genie.models.fsq import FiniteScalarQuantizer
from genie.stages import build_model
from genie.train import train
from tests.conftest import moving_square_clips, synthetic_iterator, tiny_config

LEVELS = (3, 2, 4)


def test_codes_are_the_symmetric_grid_of_the_levels_in_mixed_radix_order():
    quantizer = FiniteScalarQuantizer(LEVELS)
    assert (quantizer.num_codes, quantizer.code_dim) == (24, 3)
    codes = np.asarray(quantizer.codes())
    # Hand-computed: dimension 0 has 3 levels (-1, 0, 1), dimension 1 has 2 (-1, 1), dimension 2
    # has 4 (-1, -1/3, 1/3, 1); the first dimension is the least significant digit.
    np.testing.assert_allclose(codes[0], [-1, -1, -1])
    np.testing.assert_allclose(codes[1], [0, -1, -1])
    np.testing.assert_allclose(codes[3], [-1, 1, -1])
    np.testing.assert_allclose(codes[6], [-1, -1, -1 / 3], atol=1e-6)
    np.testing.assert_allclose(codes[23], [1, 1, 1])
    assert len(np.unique(codes, axis=0)) == 24
    # Symmetric about 0: the negated grid is the grid.
    assert {tuple(np.round(c, 5)) for c in codes} == {tuple(np.round(-c, 5)) for c in codes}


def test_every_code_is_reached_and_its_id_looks_up_what_the_forward_pass_gave():
    quantizer = FiniteScalarQuantizer(LEVELS)
    codes = quantizer.codes()
    # Inputs that land just inside each code's cell: tanh^-1 of the code value, pulled in.
    z = jnp.arctanh(codes * 0.98)
    quantized, indices, aux = quantizer(z, training=True)
    np.testing.assert_array_equal(indices, np.arange(24))
    np.testing.assert_allclose(quantized, codes, atol=1e-6)
    np.testing.assert_allclose(quantizer.lookup(indices), quantized, atol=1e-6)
    np.testing.assert_array_equal(jnp.argmax(quantizer.similarity(z), axis=-1), indices)
    np.testing.assert_array_equal(aux["usage"], np.ones(24))
    np.testing.assert_allclose(aux["perplexity"], 24.0, rtol=1e-5)
    assert float(aux["codebook_loss"]) == float(aux["commitment_loss"]) == 0.0

    random = jax.random.normal(jax.random.key(0), (500, 3)) * 2.0
    quantized, indices, _ = quantizer(random, training=False)
    np.testing.assert_allclose(quantizer.lookup(indices), quantized, atol=1e-6)
    np.testing.assert_array_equal(jnp.argmax(quantizer.similarity(random), axis=-1), indices)


def test_rounding_passes_the_gradient_of_the_bound_straight_through():
    quantizer = FiniteScalarQuantizer(LEVELS)
    z = jax.random.normal(jax.random.key(1), (7, 3))
    gradient = jax.grad(lambda z: jnp.sum(quantizer(z, training=True)[0]))(z)
    # quantized = round(bound(z)) / half_range with d round = 1: d/dz = (1 - tanh^2 z) * 1.001.
    np.testing.assert_allclose(gradient, (1 - jnp.tanh(z) ** 2) * 1.001, rtol=1e-5)


def test_two_levels_split_at_zero():
    quantizer = FiniteScalarQuantizer((2,))
    _, indices, _ = quantizer(jnp.array([[-0.01], [0.01], [-3.0], [3.0]]), training=False)
    np.testing.assert_array_equal(indices, [0, 1, 0, 1])


def test_sizes_that_disagree_with_the_levels_are_a_clear_error():
    config = TokenizerConfig(quantizer="fsq", fsq_levels=(8, 8), num_codes=256, code_dim=2)
    with pytest.raises(ValueError, match=r"make 64 codes of dimension 2: set num_codes 64"):
        FiniteScalarQuantizer.from_config(config)
    with pytest.raises(ValueError, match="two or more levels"):
        FiniteScalarQuantizer((4, 1))


def fsq_config(run_dir, **overrides):
    config = tiny_config(run_dir, **overrides)
    tokenizer = dataclasses.replace(
        config.tokenizer, quantizer="fsq", fsq_levels=(4, 4, 2), num_codes=32, code_dim=3
    )
    lam = dataclasses.replace(
        config.lam, quantizer="fsq", fsq_levels=(2, 2), num_codes=4, code_dim=2
    )
    return dataclasses.replace(config, tokenizer=tokenizer, lam=lam)


def test_tokenizer_and_lam_quantise_with_fsq_and_keep_no_quantiser_state():
    config = fsq_config("unused")
    frames = jnp.asarray(moving_square_clips(2))
    tokenizer = build_model(config, "tokenizer", nnx.Rngs(0))
    assert isinstance(tokenizer.vq, FiniteScalarQuantizer)
    assert jax.tree.leaves(nnx.state(tokenizer.vq)) == []
    tokens = tokenizer.tokenize(frames)
    assert tokens.shape == (2, 4, 16) and 0 <= int(tokens.min()) and int(tokens.max()) < 32
    np.testing.assert_allclose(
        tokenizer.decode(tokens), tokenizer(frames)["reconstruction"], atol=1e-5
    )
    assert int(tokenizer.reset_dead_codes(jax.random.key(0))) == 0

    lam = build_model(config, "lam", nnx.Rngs(0))
    actions = lam.infer_actions(frames)
    assert actions.shape == (2, 3) and int(actions.max()) < 4


def test_fsq_trains_resumes_and_its_config_reads_back(tmp_path):
    clips = moving_square_clips(8)
    whole = fsq_config(tmp_path / "whole", steps=4)
    result = train(whole, "lam", data_iterator=synthetic_iterator(clips, 4), progress=False)
    assert np.isfinite(result["history"][-1]["loss"])
    saved = load_config(tmp_path / "whole" / "lam" / "config.json")
    assert saved == whole and saved.lam.fsq_levels == (2, 2)
    # Training again on the same folder with the same config is accepted (the saved levels,
    # a JSON list, compare equal to the tuple).
    longer = fsq_config(tmp_path / "whole", steps=5)
    train(longer, "lam", data_iterator=synthetic_iterator(clips, 4), progress=False)


def test_lam_config_defaults_to_the_learned_codebook():
    assert LAMConfig().quantizer == TokenizerConfig().quantizer == "vq"
