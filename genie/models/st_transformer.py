"""Spatiotemporal (ST) transformer shared by the tokenizer, the LAM and the dynamics model.

Genie (Bruce et al. 2024, section 2.1) interleaves spatial attention over the N patches of one
frame with causal temporal attention over the T frames at one patch position, which costs
O(T N^2 + N T^2) instead of O((T N)^2). Positional information is added once at the input.

Axes: B batch, T time, N patches per frame, D width, P patch size, C channels.
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx
from flax.nnx.nn import dtypes

from genie.config import TransformerConfig


def patches_per_frame(image_size: int, patch_size: int) -> int:
    """N for square frames of `image_size`; a clear error if the patches do not tile them."""
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} does not divide into patches of {patch_size}")
    return (image_size // patch_size) ** 2


def patchify(frames: jax.Array, patch_size: int) -> jax.Array:
    """(B, T, H, W, C) -> (B, T, N, P*P*C) with N = (H/P) * (W/P), row-major patches."""
    height, width = frames.shape[-3], frames.shape[-2]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"frames of {height}x{width} do not divide into patches of {patch_size}x{patch_size}"
        )
    return rearrange(frames, "b t (h p) (w q) c -> b t (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(patches: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
    """(B, T, N, P*P*C) -> (B, T, H, W, C); the exact inverse of `patchify`."""
    return rearrange(
        patches,
        "b t (h w) (p q c) -> b t (h p) (w q) c",
        h=height // patch_size,
        w=width // patch_size,
        p=patch_size,
        q=patch_size,
    )


ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "einsum")
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@functools.cache
def _nvidia_gpu() -> bool:
    device = jax.devices()[0]
    return device.platform == "gpu" and "nvidia" in device.device_kind.lower()


@functools.cache
def _cpu() -> bool:
    return jax.devices()[0].platform == "cpu"


def attention_implementation(dtype, head_dim: int) -> str:
    """How attention runs, chosen here and nowhere else: "cudnn" (cuDNN's fused flash
    attention) on an NVIDIA GPU for bfloat16 or float16 with a head size cuDNN takes (a multiple
    of 8, at most 128); "einsum" (`heads_major_attention`, with `Attention` projecting
    straight into its layout) on a CPU; "xla" everywhere else (TPU, other GPUs, float32 on
    NVIDIA), which is also what `jax.nn.dot_product_attention` picks when not told.
    GENIE_ATTENTION=xla, =cudnn or =einsum forces one (to compare them)."""
    forced = os.environ.get("GENIE_ATTENTION", "")
    if forced:
        if forced not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"GENIE_ATTENTION={forced!r} is not one of {ATTENTION_IMPLEMENTATIONS}"
            )
        return forced
    cudnn_shape = head_dim % 8 == 0 and head_dim <= 128
    if cudnn_shape and jnp.dtype(dtype) in _CUDNN_DTYPES and _nvidia_gpu():
        return "cudnn"
    if _cpu():
        return "einsum"
    return "xla"


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool) -> jax.Array:
    """Attention of (M, L, heads, head_dim) queries, keys and values with the implementation
    of `attention_implementation`. Should cuDNN refuse the shapes while tracing (its length and
    layout rules vary by version), XLA runs instead, with a warning."""
    implementation = attention_implementation(q.dtype, q.shape[-1])
    if implementation == "cudnn":
        try:
            return attend_padded(q, k, v, causal=causal, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError) as error:
            logging.getLogger("genie").warning(
                "cuDNN attention refused %s queries (%s); using XLA", q.shape, error
            )
    if implementation == "einsum":
        return attend_heads_major(q, k, v, causal=causal)
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")


def attend_heads_major(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool) -> jax.Array:
    """`heads_major_attention` of (M, L, heads, head_dim) queries, keys and values, in and out
    in that layout (what `attend` gives "einsum"; `Attention` itself projects straight into
    the heads-major layout and skips both transposes)."""
    q, k, v = (jnp.swapaxes(x, -3, -2) for x in (q, k, v))
    return jnp.swapaxes(heads_major_attention(q, k, v, causal=causal), -3, -2)


def heads_major_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool) -> jax.Array:
    """The attention of `jax.nn.dot_product_attention`'s XLA path (logits and softmax in
    float32, probabilities cast back to the values' type) on (..., heads, L, head_dim)
    queries, keys and values, so that both matrix products are plain batched products over
    (..., heads). XLA's CPU backend runs the (M, L, heads, head_dim) layout's products and the
    (L, L) softmax between them slower: at the spatial attention of the peer comparison's
    tokenizer (64 frames of 256 patches, 4 heads of 32) forward and backward took 71-76 ms
    that way and 58-61 ms this way on this project's 2-core VM (2026-11-29). The softmax is
    written out (its maximum subtracted and held out of the gradient, which changes neither
    result) because XLA fuses it better here than `jax.nn.softmax` (61 ms). Moving short
    sequences' heads costs more than it saves (the temporal attention over 8-16 frames ran
    1.1-2x slower through `attend_heads_major`), so `Attention` projects straight into this
    layout; that way the whole training step was as fast or faster at every length measured."""
    scale = q.shape[-1] ** -0.5
    product = "...hld,...hkd->...hlk"
    if q.dtype == jnp.float32:
        # Scaling the (L, L) logits costs a pass over them (forward and backward 64-126 ms
        # against 54-61 at the peer comparison's spatial attention); scaling q does not and,
        # in float32, rounds no differently to speak of.
        logits = jnp.einsum(product, q * scale, k)
    else:
        # In float32, as jax's path does, not in q's coarser type.
        logits = jnp.einsum(product, q, k, preferred_element_type=jnp.float32) * scale
    if causal:
        length = logits.shape[-1]
        visible = jnp.tril(jnp.ones((length, length), bool))
        logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    logits = logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    weights = jnp.exp(logits)
    probs = (weights / weights.sum(axis=-1, keepdims=True)).astype(v.dtype)
    return jnp.einsum("...hlk,...hkd->...hld", probs, v)


# cuDNN's fused attention refused odd sequence lengths on an H200 (the 15-frame temporal windows
# and 257-token spatial sequences of `coinrun`; jax's own check, `check_is_flash_attention`,
# asks training shapes with a bias for even lengths), so those are padded to a multiple of this.
CUDNN_LENGTH_MULTIPLE = 2


def attend_padded(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool,
    implementation: str,
    multiple: int = CUDNN_LENGTH_MULTIPLE,
) -> jax.Array:
    """`jax.nn.dot_product_attention` with the length L of (M, L, heads, head_dim) padded up to a
    multiple of `multiple` and cut back: the same result as without padding. The padding comes
    after every real position, so a causal mask already hides it from the real queries; without
    one, `key_value_seq_lengths` does. Padded queries are computed and dropped."""
    length = q.shape[1]
    padded = -(-length // multiple) * multiple
    if padded == length:
        return jax.nn.dot_product_attention(
            q, k, v, is_causal=causal, implementation=implementation
        )
    widths = ((0, 0), (0, padded - length), (0, 0), (0, 0))
    q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
    lengths = None if causal else jnp.full((q.shape[0],), length, jnp.int32)
    attended = jax.nn.dot_product_attention(
        q, k, v, is_causal=causal, key_value_seq_lengths=lengths, implementation=implementation
    )
    return attended[:, :length]


class Attention(nnx.Module):
    """Multi-head self-attention over the second-to-last axis of (..., L, D)."""

    def __init__(self, width: int, heads: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, use_bias=False, **linear)
        self.out = nnx.Linear(width, width, **linear)

    def __call__(self, x: jax.Array, *, causal: bool) -> jax.Array:
        lead, (length, width) = x.shape[:-2], x.shape[-2:]
        head_dim = width // self.heads
        dtype = self.qkv.dtype or jnp.result_type(x, self.qkv.kernel[...])
        if attention_implementation(dtype, head_dim) == "einsum":
            return self._heads_major(x, causal=causal)
        qkv = self.qkv(x).reshape(-1, length, 3, self.heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        attended = attend(q, k, v, causal=causal)
        return self.out(attended.reshape(*lead, length, width))

    def _heads_major(self, x: jax.Array, *, causal: bool) -> jax.Array:
        """`__call__` with the same parameters, projected straight into and out of the
        (..., heads, L, head_dim) layout of `heads_major_attention`. Slicing q, k and v out
        of one (M, L, 3, heads, head_dim) projection and moving the heads cost the 128-wide
        tokenizer of the peer comparison about a tenth of its training step on a CPU (the
        slices' gradients are padded and summed, the heads transposed both ways)."""
        width = x.shape[-1]
        head_dim = width // self.heads
        x, qkv_kernel, out_kernel, out_bias = dtypes.promote_dtype(
            (x, self.qkv.kernel[...], self.out.kernel[...], self.out.bias[...]),
            dtype=self.qkv.dtype,
        )
        qkv_kernel = qkv_kernel.reshape(width, 3, self.heads, head_dim)
        q, k, v = (jnp.einsum("...lc,chd->...hld", x, qkv_kernel[:, part]) for part in range(3))
        attended = heads_major_attention(q, k, v, causal=causal)
        out_kernel = out_kernel.reshape(self.heads, head_dim, width)
        return jnp.einsum("...hld,hdc->...lc", attended, out_kernel) + out_bias

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(..., L, D) -> keys, values, each (M, L, heads, D/heads) with M the flattened lead axes.

        The keys and values `__call__` attends to, for a key/value cache (on a CPU, where
        `__call__` projects them in the heads-first layout, equal to them up to rounding).
        """
        length, width = x.shape[-2:]
        qkv = self.qkv(x).reshape(-1, length, 3, self.heads, width // self.heads)
        return qkv[:, :, 1], qkv[:, :, 2]

    def attend_to_cache(
        self, x: jax.Array, keys: jax.Array, values: jax.Array, index: jax.Array
    ) -> jax.Array:
        """One new position attending causally to a key/value cache.

        x: (..., 1, D), the input at position `index` (a traced scalar); keys, values:
        (M, L, heads, D/heads) from `keys_values`, valid at positions < index (later ones may
        hold anything). x's own key and value are written at `index`, and it attends to
        positions <= index: the same result as row `index` of a causal `__call__`.
        """
        lead, width = x.shape[:-2], x.shape[-1]
        qkv = self.qkv(x).reshape(-1, 1, 3, self.heads, width // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        keys = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), index, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype), index, axis=1)
        visible = (jnp.arange(keys.shape[1]) <= index)[None, None, None, :]  # (1, 1, 1, L)
        # One query against a masked cache: small, and outside cuDNN's causal kernels: XLA.
        attended = jax.nn.dot_product_attention(q, keys, values, mask=visible, implementation="xla")
        return self.out(attended.reshape(*lead, 1, width))


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.up = nnx.Linear(width, hidden, **linear)
        self.down = nnx.Linear(hidden, width, **linear)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


def _layer_norm(width: int, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Normalisation statistics in float32 whatever the compute dtype.
    return nnx.LayerNorm(width, dtype=jnp.float32, param_dtype=param_dtype, rngs=rngs)


class STBlock(nnx.Module):
    """Pre-norm block: spatial attention, causal temporal attention, feed-forward."""

    def __init__(self, config: TransformerConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        width, kw = config.width, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.spatial_norm = _layer_norm(width, param_dtype, rngs)
        self.spatial_attention = Attention(width, config.heads, **kw)
        self.temporal_norm = _layer_norm(width, param_dtype, rngs)
        self.temporal_attention = Attention(width, config.heads, **kw)
        self.mlp_norm = _layer_norm(width, param_dtype, rngs)
        self.mlp = MLP(width, int(width * config.mlp_ratio), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, N, D) -> (B, T, N, D); frame t sees only frames <= t."""
        x = x + self.spatial_attention(self.spatial_norm(x).astype(self.dtype), causal=False)
        x = rearrange(x, "b t n d -> b n t d")
        x = x + self.temporal_attention(self.temporal_norm(x).astype(self.dtype), causal=True)
        x = rearrange(x, "b n t d -> b t n d")
        return x + self.mlp(self.mlp_norm(x).astype(self.dtype))

    def prefill(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """`__call__`, also returning its temporal keys and values (B*N, T, heads, D/heads)."""
        x = x + self.spatial_attention(self.spatial_norm(x).astype(self.dtype), causal=False)
        x = rearrange(x, "b t n d -> b n t d")
        normed = self.temporal_norm(x).astype(self.dtype)
        cache = self.temporal_attention.keys_values(normed)
        x = x + self.temporal_attention(normed, causal=True)
        x = rearrange(x, "b n t d -> b t n d")
        return x + self.mlp(self.mlp_norm(x).astype(self.dtype)), cache

    def decode_frame(
        self, x: jax.Array, cache: tuple[jax.Array, jax.Array], frame_index: jax.Array
    ) -> jax.Array:
        """(B, 1, N, D) at time `frame_index` -> (B, 1, N, D), attending to the cached frames."""
        x = x + self.spatial_attention(self.spatial_norm(x).astype(self.dtype), causal=False)
        x = rearrange(x, "b t n d -> b n t d")
        normed = self.temporal_norm(x).astype(self.dtype)
        x = x + self.temporal_attention.attend_to_cache(normed, *cache, frame_index)
        x = rearrange(x, "b n t d -> b t n d")
        return x + self.mlp(self.mlp_norm(x).astype(self.dtype))


def _run_block(block: STBlock, x: jax.Array) -> jax.Array:
    return block(x)


class STTransformer(nnx.Module):
    """Input projection, learned spatial + temporal position embeddings (once), ST blocks.

    `max_frames` bounds T; a shorter clip uses the first T temporal embeddings, so a model
    trained on T frames can be run on a growing context of 1..T frames. The output projection
    computes in `output_dtype` (default: `dtype`); the dynamics model asks for float32 logits so
    that softmax and cross-entropy statistics are float32.

    With `condition_features` > 0, `__call__` also takes a condition (B, T, N or 1, F) that is
    projected and added to the residual stream before every block, not only at the input, so a
    small conditioning signal (the LAM's latent action) cannot fade with depth (LAOM, Nikulin et
    al. 2025, appendix D).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        config: TransformerConfig,
        *,
        num_patches: int,
        max_frames: int,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        output_dtype=None,
        condition_features: int = 0,
        rngs: nnx.Rngs,
    ):
        width, kw = config.width, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.output_dtype = dtype if output_dtype is None else output_dtype
        self.num_patches, self.max_frames = num_patches, max_frames
        self.remat = config.remat
        self.input_projection = nnx.Linear(in_features, width, **kw)
        init = nnx.initializers.normal(0.02)
        self.spatial_position = nnx.Param(init(rngs.params(), (num_patches, width), param_dtype))
        self.temporal_position = nnx.Param(init(rngs.params(), (max_frames, width), param_dtype))
        self.blocks = nnx.List(
            [
                STBlock(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                for _ in range(config.depth)
            ]
        )
        self.condition_projections = nnx.List(
            [nnx.Linear(condition_features, width, **kw) for _ in range(config.depth)]
            if condition_features
            else []
        )
        self.final_norm = _layer_norm(width, param_dtype, rngs)
        self.output_projection = nnx.Linear(
            width, out_features, dtype=self.output_dtype, param_dtype=param_dtype, rngs=rngs
        )

    def _embed(self, x: jax.Array) -> jax.Array:
        """(B, T, N, in_features) -> (B, T, N, D): input projection plus position embeddings,
        added once here and never again in the blocks."""
        frames, patches = x.shape[1], x.shape[2]
        if patches != self.num_patches:
            raise ValueError(f"expected {self.num_patches} patches per frame, got {patches}")
        if frames > self.max_frames:
            raise ValueError(
                f"got {frames} frames; this model was built for at most {self.max_frames}"
            )
        x = self.input_projection(x.astype(self.dtype))
        position = self.temporal_position[:frames, None, :] + self.spatial_position[None, :, :]
        return x + position.astype(x.dtype)

    def _output(self, x: jax.Array) -> jax.Array:
        return self.output_projection(self.final_norm(x).astype(self.output_dtype))

    def __call__(self, x: jax.Array, condition: jax.Array | None = None) -> jax.Array:
        """(B, T, N, in_features) -> (B, T, N, out_features), causal in T.

        `condition` (B, T, N or 1, condition_features), only for a model built with
        condition_features, is added (projected) before every block; frame t's condition
        reaches frame t and, through causal attention, later frames only.
        """
        if (condition is None) != (not self.condition_projections):
            raise ValueError(
                "a condition must be given exactly when the transformer was built with "
                f"condition_features (it has {len(self.condition_projections)} projections)"
            )
        x = self._embed(x)
        run_block = nnx.remat(_run_block) if self.remat else _run_block
        for index, block in enumerate(self.blocks):
            if condition is not None:
                x = x + self.condition_projections[index](condition.astype(self.dtype))
            x = run_block(block, x)
        return self._output(x)

    # Key/value cache for decoding one frame many times against a fixed context (the dynamics
    # model's MaskGIT steps): frames before t never change, and causality means their
    # activations do not depend on frame t, so their temporal keys/values are computed once.

    def prefill(self, x: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """(B, T, N, in_features) -> per block, temporal keys, values (B*N, T, heads, D/heads)."""
        x = self._embed(x)
        cache = []
        for block in self.blocks:
            x, block_cache = block.prefill(x)
            cache.append(block_cache)
        return cache

    def decode_frame(
        self, x: jax.Array, frame_index: jax.Array, cache: list[tuple[jax.Array, jax.Array]]
    ) -> jax.Array:
        """(B, 1, N, in_features) at time `frame_index` (traced) -> (B, 1, N, out_features).

        Equal (up to float rounding) to frame `frame_index` of `__call__` on the clip that
        `prefill` saw with this frame in slot `frame_index`; the cache's later slots are ignored.
        """
        x = self.input_projection(x.astype(self.dtype))
        temporal = jax.lax.dynamic_slice_in_dim(self.temporal_position[...], frame_index, 1)
        position = temporal[:, None, :] + self.spatial_position[None, :, :]
        x = x + position.astype(x.dtype)
        for block, block_cache in zip(self.blocks, cache, strict=True):
            x = block.decode_frame(x, block_cache, frame_index)
        return self._output(x)
