import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie.config import TransformerConfig
from genie.models import st_transformer
from genie.models.st_transformer import STTransformer, patchify, unpatchify

TINY = TransformerConfig(width=16, depth=2, heads=2, mlp_ratio=2.0)
# One compiled program per input shape is much faster on CPU than op-by-op dispatch.
forward = nnx.jit(lambda model, x: model(x))


@pytest.fixture(scope="module")
def model():
    return STTransformer(6, 5, TINY, num_patches=4, max_frames=6, rngs=nnx.Rngs(0))


def test_future_frames_leave_past_outputs_bitwise_unchanged(model):
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    base = np.asarray(forward(model, x))
    for t in range(3):
        perturbed = x.at[:, t + 1 :].add(jax.random.normal(jax.random.key(t + 1), (2, 3 - t, 4, 6)))
        out = np.asarray(forward(model, perturbed))
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
        assert not np.allclose(out[:, t + 1], base[:, t + 1])  # the change is seen later


def test_extra_frames_do_not_change_the_first_frames(model):
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 6))
    extra = jax.random.normal(jax.random.key(1), (2, 2, 4, 6))
    short = forward(model, x)
    long = forward(model, jnp.concatenate([x, extra], axis=1))
    assert long.shape == (2, 5, 4, 5)
    np.testing.assert_allclose(long[:, :3], short, atol=1e-5, rtol=1e-5)


def test_patches_mix_within_a_frame(model):
    x = jax.random.normal(jax.random.key(0), (1, 2, 4, 6))
    out = forward(model, x.at[:, :, 0].add(1.0))
    # Spatial attention is not causal: a change in patch 0 reaches the other patches.
    assert not np.allclose(out[:, :, 1:], forward(model, x)[:, :, 1:])


def test_patchify_round_trip_is_exact_and_row_major():
    frames = jax.random.randint(jax.random.key(0), (2, 3, 8, 12, 3), 0, 256).astype(jnp.uint8)
    patches = patchify(frames, 4)
    assert patches.shape == (2, 3, 6, 48)
    np.testing.assert_array_equal(patches[:, :, 1].reshape(2, 3, 4, 4, 3), frames[:, :, :4, 4:8])
    np.testing.assert_array_equal(patches[:, :, 3].reshape(2, 3, 4, 4, 3), frames[:, :, 4:8, :4])
    np.testing.assert_array_equal(unpatchify(patches, 4, 8, 12), frames)


def test_frames_not_divisible_by_the_patch_size_are_a_clear_error():
    with pytest.raises(ValueError, match="do not divide into patches"):
        patchify(jnp.zeros((1, 1, 10, 8, 3)), 4)


def test_too_many_frames_or_wrong_patch_count_are_clear_errors(model):
    with pytest.raises(ValueError, match="at most 6"):
        model(jnp.zeros((1, 7, 4, 6)))
    with pytest.raises(ValueError, match="expected 4 patches"):
        model(jnp.zeros((1, 2, 5, 6)))


class _Device:
    def __init__(self, platform, kind):
        self.platform, self.device_kind = platform, kind


@pytest.mark.parametrize(
    "platform, kind, dtype, head_dim, expected",
    [
        ("cpu", "cpu", jnp.bfloat16, 16, "einsum"),
        ("cpu", "cpu", jnp.float32, 32, "einsum"),
        ("gpu", "NVIDIA H100 80GB HBM3", jnp.bfloat16, 64, "cudnn"),
        ("gpu", "NVIDIA H100 80GB HBM3", jnp.float16, 128, "cudnn"),
        ("gpu", "NVIDIA H100 80GB HBM3", jnp.float32, 64, "xla"),  # cuDNN: half precision only
        ("gpu", "NVIDIA H100 80GB HBM3", jnp.bfloat16, 12, "xla"),  # not a multiple of 8
        ("gpu", "NVIDIA H100 80GB HBM3", jnp.bfloat16, 256, "xla"),  # above 128
        ("gpu", "AMD Instinct MI300X", jnp.bfloat16, 64, "xla"),  # no cuDNN
        ("tpu", "TPU v5 lite", jnp.bfloat16, 64, "xla"),
    ],
)
def test_attention_implementation_is_chosen_in_one_place(
    monkeypatch, platform, kind, dtype, head_dim, expected
):
    monkeypatch.delenv("GENIE_ATTENTION", raising=False)
    monkeypatch.setattr(st_transformer.jax, "devices", lambda: [_Device(platform, kind)])
    st_transformer._nvidia_gpu.cache_clear()
    st_transformer._cpu.cache_clear()
    try:
        assert st_transformer.attention_implementation(dtype, head_dim) == expected
    finally:
        st_transformer._nvidia_gpu.cache_clear()
        st_transformer._cpu.cache_clear()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_heads_major_attention_equals_jax_attention_in_values_and_gradients(
    causal, dtype, tolerance
):
    """`attend_heads_major` is `jax.nn.dot_product_attention` (its XLA path) moved to another
    layout: same values and same gradients of q, k and v, causal or not, in float32 and in
    bfloat16 (softmax in float32 on both sides). A wrong scale, mask or softmax axis fails."""
    q, k, v = jax.random.normal(jax.random.key(3), (3, 2, 9, 3, 8)).astype(dtype)
    upstream = jax.random.normal(jax.random.key(4), (2, 9, 3, 8))

    def loss(attention, q, k, v):
        return jnp.sum(attention(q, k, v).astype(jnp.float32) * upstream)

    def reference(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")

    def heads_major(q, k, v):
        return st_transformer.attend_heads_major(q, k, v, causal=causal)

    expected, expected_grads = jax.value_and_grad(loss, argnums=(1, 2, 3))(reference, q, k, v)
    value, grads = jax.value_and_grad(loss, argnums=(1, 2, 3))(heads_major, q, k, v)
    np.testing.assert_allclose(value, expected, rtol=tolerance, atol=tolerance)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(
            np.asarray(grad, np.float32),
            np.asarray(expected_grad, np.float32),
            rtol=tolerance,
            atol=tolerance,
        )


def test_heads_major_causal_attention_never_reads_later_positions():
    """Changing the keys and values after position t leaves the outputs up to t bitwise
    unchanged: masked logits get exactly zero weight."""
    q, k, v = jax.random.normal(jax.random.key(5), (3, 2, 3, 7, 4))
    base = np.asarray(st_transformer.heads_major_attention(q, k, v, causal=True))
    for t in range(6):
        noise = jax.random.normal(jax.random.key(t), (2, 2, 3, 6 - t, 4))
        k2, v2 = k.at[..., t + 1 :, :].add(noise[0]), v.at[..., t + 1 :, :].add(noise[1])
        out = np.asarray(st_transformer.heads_major_attention(q, k2, v2, causal=True))
        np.testing.assert_array_equal(out[..., : t + 1, :], base[..., : t + 1, :])
        assert not np.allclose(out[..., t + 1 :, :], base[..., t + 1 :, :])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_attention_module_gives_the_same_result_in_either_layout(
    monkeypatch, causal, dtype, tolerance
):
    """`Attention` projects straight into the heads-major layout when its implementation is
    "einsum": the same parameters give the same outputs and the same gradients (of the input
    and of every parameter) as the packed (M, L, heads, head_dim) projection XLA's path uses,
    in float32 and with bfloat16 compute over float32 parameters (a missing cast to the compute
    type fails there). Reading the kernel's columns in another order than the packed path
    slices them fails."""
    attention = st_transformer.Attention(
        12, 3, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0)
    )
    # A bias that is not zero, so that a dropped bias fails too.
    attention.out.bias[...] = jax.random.normal(jax.random.key(6), (12,))
    x = jax.random.normal(jax.random.key(7), (2, 3, 10, 12))
    upstream = jax.random.normal(jax.random.key(8), (2, 3, 10, 12))

    def run(implementation):
        monkeypatch.setenv("GENIE_ATTENTION", implementation)

        def loss(module, x):
            out = module(x, causal=causal)
            assert out.dtype == dtype
            return jnp.sum(out.astype(jnp.float32) * upstream)

        value, (grads, x_grad) = nnx.value_and_grad(loss, argnums=(0, 1))(attention, x)
        return value, jax.tree.leaves(nnx.state(grads)), x_grad

    expected, expected_grads, expected_x_grad = run("xla")
    value, grads, x_grad = run("einsum")
    scale = float(np.abs(expected)) + 1.0
    np.testing.assert_allclose(value, expected, rtol=tolerance, atol=tolerance * scale)
    np.testing.assert_allclose(x_grad, expected_x_grad, rtol=10 * tolerance, atol=tolerance)
    assert len(grads) == len(expected_grads) == 3  # qkv kernel, out kernel, out bias
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(grad, expected_grad, rtol=10 * tolerance, atol=tolerance)


def test_attention_implementation_can_be_forced(monkeypatch):
    monkeypatch.setenv("GENIE_ATTENTION", "cudnn")
    assert st_transformer.attention_implementation(jnp.float32, 16) == "cudnn"
    monkeypatch.setenv("GENIE_ATTENTION", "flash")
    with pytest.raises(ValueError, match="GENIE_ATTENTION='flash'"):
        st_transformer.attention_implementation(jnp.float32, 16)


def test_attention_falls_back_to_xla_when_cudnn_refuses(monkeypatch, caplog):
    """On a machine without cuDNN (this one) a forced "cudnn" is refused while tracing: the
    result is XLA's, with a warning, not a crash."""
    monkeypatch.setenv("GENIE_ATTENTION", "cudnn")
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 5, 2, 8), jnp.bfloat16)
    with caplog.at_level("WARNING", logger="genie"):
        out = st_transformer.attend(q, k, v, causal=True)
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))
    assert "cuDNN attention refused" in caplog.text


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length, multiple", [(15, 2), (257, 2), (5, 8), (6, 2)])
def test_padded_attention_equals_unpadded_in_values_and_gradients(causal, length, multiple):
    """The padding cuDNN gets for odd lengths changes nothing: padded keys are hidden (by the
    causal mask, or by key lengths without one) and padded queries dropped, in the forward pass
    and in the gradients of q, k and v. Dropping the key lengths (padded keys visible to the
    non-causal queries) fails this."""
    q, k, v = jax.random.normal(jax.random.key(length), (3, 2, length, 2, 8))
    upstream = jax.random.normal(jax.random.key(1), (2, length, 2, 8))

    def plain(q, k, v):
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
        return jnp.sum(out * upstream)

    def padded(q, k, v):
        out = st_transformer.attend_padded(
            q, k, v, causal=causal, implementation="xla", multiple=multiple
        )
        assert out.shape == q.shape
        return jnp.sum(out * upstream)

    expected, expected_grads = jax.value_and_grad(plain, argnums=(0, 1, 2))(q, k, v)
    value, grads = jax.value_and_grad(padded, argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_remat_recomputes_blocks_with_the_same_values_and_gradients():
    """remat=True: the backward pass recomputes each block (a remat/checkpoint in the gradient's
    program) and gives the same outputs and gradients as keeping the activations."""
    import dataclasses

    kept = STTransformer(6, 5, TINY, num_patches=4, max_frames=6, rngs=nnx.Rngs(0))
    remat = STTransformer(
        6, 5, dataclasses.replace(TINY, remat=True), num_patches=4, max_frames=6, rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 6))

    def loss(model, x):
        return jnp.sum(model(x) ** 2)

    values = [nnx.jit(nnx.value_and_grad(loss))(m, x) for m in (kept, remat)]
    np.testing.assert_allclose(values[0][0], values[1][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(values[0][1]), jax.tree.leaves(values[1][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def program(model):
        graphdef, state = nnx.split(model)
        return str(jax.make_jaxpr(jax.grad(lambda s: loss(nnx.merge(graphdef, s), x)))(state))

    assert "remat" in program(remat) or "checkpoint" in program(remat)
    assert "remat" not in program(kept) and "checkpoint" not in program(kept)
