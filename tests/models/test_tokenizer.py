import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genie import media
from genie.config import TokenizerConfig, TransformerConfig
from genie.models.tokenizer import VideoTokenizer, tokenizer_loss, unit_to_uint8

TINY = TransformerConfig(width=16, depth=1, heads=2, mlp_ratio=2.0)
CONFIG = TokenizerConfig(
    patch_size=4, num_codes=16, code_dim=8, encoder=TINY, decoder=TINY, dead_code_steps=5
)
# The optional convolutional stem and head, alone and together.
CONV_CONFIGS = {
    "stem": dataclasses.replace(CONFIG, stem_channels=4),
    "head": dataclasses.replace(CONFIG, head_channels=4),
    "stem_head": dataclasses.replace(CONFIG, stem_channels=4, head_channels=4),
}
ALL_CONFIGS = {"plain": CONFIG, **CONV_CONFIGS}


def make_tokenizer(seed=0, config=CONFIG):
    return VideoTokenizer(config, image_size=8, max_frames=4, rngs=nnx.Rngs(seed))


def make_frames(seed=0, shape=(2, 4, 8, 8, 3)):
    return jax.random.randint(jax.random.key(seed), shape, 0, 256).astype(jnp.uint8)


tokenize = nnx.jit(lambda model, frames: model.tokenize(frames))


@nnx.jit
def train_step(model, optimizer, frames, key):
    (loss, metrics), grads = nnx.value_and_grad(tokenizer_loss, has_aux=True)(model, frames, key)
    optimizer.update(model, grads)
    metrics["reset"] = model.reset_dead_codes(jax.random.fold_in(key, 1))
    return loss, metrics


def test_shapes_and_dtypes():
    model = make_tokenizer()
    assert (model.num_patches, model.num_codes, model.patch_size, model.image_size) == (4, 16, 4, 8)
    frames = make_frames()
    tokens = tokenize(model, frames)
    assert tokens.shape == (2, 4, 4) and tokens.dtype == jnp.int32
    assert tokens.min() >= 0 and tokens.max() < 16
    decoded = nnx.jit(lambda model, tokens: model.decode(tokens))(model, tokens)
    assert decoded.shape == (2, 4, 8, 8, 3) and decoded.dtype == jnp.float32
    out = nnx.jit(lambda model, frames: model(frames))(model, frames)
    np.testing.assert_array_equal(out["tokens"], tokens)
    np.testing.assert_allclose(out["reconstruction"], decoded, atol=1e-5)
    assert {"codebook_loss", "commitment_loss", "usage", "perplexity"} <= set(out)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_tokens_and_reconstructions_are_causal_in_time(name):
    model = make_tokenizer(config=ALL_CONFIGS[name])
    frames = make_frames()
    latents = nnx.jit(lambda model, frames: model.encode(frames))
    reconstruct = nnx.jit(lambda model, frames: model(frames)["reconstruction"])
    base_tokens, base_latents = tokenize(model, frames), latents(model, frames)
    base_reconstruction = reconstruct(model, frames)
    for t in range(3):
        changed = frames.at[:, t + 1 :].set(make_frames(t + 1, (2, 3 - t, 8, 8, 3)))
        np.testing.assert_array_equal(tokenize(model, changed)[:, : t + 1], base_tokens[:, : t + 1])
        np.testing.assert_array_equal(latents(model, changed)[:, : t + 1], base_latents[:, : t + 1])
        np.testing.assert_array_equal(
            reconstruct(model, changed)[:, : t + 1], base_reconstruction[:, : t + 1]
        )
        assert not np.array_equal(latents(model, changed)[:, t + 1], base_latents[:, t + 1])


def test_convolutions_are_off_by_default():
    assert make_tokenizer().stem is None and make_tokenizer().head is None


@pytest.mark.parametrize("name", CONV_CONFIGS)
def test_convolution_gradients_are_finite_and_nonzero(name):
    model = make_tokenizer(config=CONV_CONFIGS[name])
    grads = nnx.grad(lambda model: tokenizer_loss(model, make_frames(), jax.random.key(0))[0])(
        model
    )
    kernels = {"input": grads["encoder"]["input_projection"]["kernel"]}
    if model.stem is not None:
        kernels["stem"] = grads["stem"]["conv"]["kernel"]
    if model.head is not None:
        kernels["head hidden"] = grads["head"]["hidden"]["kernel"]
        kernels["head output"] = grads["head"]["output"]["kernel"]
    for part, kernel in kernels.items():
        kernel = np.asarray(kernel[...])
        assert np.all(np.isfinite(kernel)), part
        assert np.any(kernel != 0), part  # the straight-through estimator reaches the encoder


def test_inference_does_not_change_state():
    model = make_tokenizer()
    before = jax.tree.map(np.array, nnx.state(model))
    tokenize(model, make_frames())
    model(make_frames())
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(model))


@pytest.mark.parametrize("name", ["plain", "stem_head"])
def test_overfits_a_tiny_batch_and_updates_codebook_statistics(name):
    model = make_tokenizer(config=ALL_CONFIGS[name])
    # Smooth, structured frames: a moving gradient, so a tiny model can fit them.
    ramp = jnp.linspace(0, 1, 8)
    frames = jnp.stack(
        [
            jnp.stack(
                [
                    jnp.roll(
                        ramp[:, None, None] * jnp.array([1.0, 0.5, 0.2])
                        + ramp[None, :, None] * 0.3,
                        t + b,
                        axis=1,
                    )
                    for t in range(4)
                ]
            )
            for b in range(2)
        ]
    )
    frames = (jnp.clip(frames, 0, 1) * 255).astype(jnp.uint8)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    losses = [float(train_step(model, optimizer, frames, jax.random.key(i))[0]) for i in range(40)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.2 * losses[0], losses
    assert int(model.vq.training_calls[...]) == 40  # counters updated under value_and_grad


def test_same_key_same_loss_and_update():
    frames = make_frames()
    results = []
    for _ in range(2):
        model = make_tokenizer(seed=3)
        optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
        loss, metrics = train_step(model, optimizer, frames, jax.random.key(5))
        results.append((float(loss), jax.tree.map(np.array, nnx.state(model))))
    assert results[0][0] == results[1][0]
    jax.tree.map(np.testing.assert_array_equal, results[0][1], results[1][1])
    assert set(metrics) >= {"mse", "psnr", "codebook_usage", "perplexity"}
    np.testing.assert_allclose(metrics["psnr"], -10 * np.log10(metrics["mse"]), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["codebook_usage"], np.mean(results[0][1]["vq"]["unused_steps"] == 0)
    )


def test_unit_to_uint8_rounds_half_up_like_plots_to_uint8():
    # Every 1/255 step and the half-way points between them, plus values outside [0, 1].
    values = np.concatenate(
        [np.arange(-2, 2 * 255 + 3) / np.float32(2 * 255), np.linspace(-1, 2, 10001)]
    ).astype(np.float32)
    on_device = np.asarray(jax.jit(unit_to_uint8)(jnp.asarray(values)))
    np.testing.assert_array_equal(on_device, media.to_uint8(values))
    np.testing.assert_array_equal(
        media.to_uint8(np.array([0.5 / 255, 1.5 / 255, 254.5 / 255, -0.1, 1.1], np.float32)),
        [1, 2, 255, 0, 255],
    )


def test_input_checks():
    model = make_tokenizer()
    with pytest.raises(ValueError, match=r"\(B, T, 8, 8, 3\)"):
        model.tokenize(make_frames(shape=(1, 2, 16, 16, 3)))
    with pytest.raises(ValueError, match="tokens of shape"):
        model.decode(jnp.zeros((1, 2, 5), jnp.int32))


def test_reconstruction_weight_scales_only_the_pixel_term():
    frames = make_frames()
    terms = {}
    for weight in (1.0, 10.0):
        model = make_tokenizer(config=dataclasses.replace(CONFIG, reconstruction_weight=weight))
        loss, metrics = tokenizer_loss(model, frames, jax.random.key(0))
        vq = metrics["codebook_loss"] + metrics["commitment_loss"]
        terms[weight] = (float(loss - vq), float(metrics["mse"]), float(vq))
    assert terms[1.0][1:] == terms[10.0][1:]  # same model (same seed): same MSE and VQ terms
    np.testing.assert_allclose(terms[10.0][0], 10.0 * terms[1.0][1], rtol=1e-5)
    np.testing.assert_allclose(terms[1.0][0], terms[1.0][1], rtol=1e-5)
