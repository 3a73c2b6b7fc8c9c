"""Spatiotemporal (ST) transformer shared by the tokenizer, the LAM and the dynamics model.

Genie (Bruce et al. 2024, section 2.1) interleaves spatial attention over the N patches of one
frame with causal temporal attention over the T frames at one patch position, which costs
O(T N^2 + N T^2) instead of O((T N)^2). Positional information is added once at the input.

Axes: B batch, T time, N patches per frame, D width, P patch size, C channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from genie.config import TransformerConfig


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
        qkv = self.qkv(x).reshape(-1, length, 3, self.heads, width // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # Fused (cuDNN flash) attention on GPU where the dtype allows; XLA elsewhere.
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
        return self.out(attended.reshape(*lead, length, width))


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


class STTransformer(nnx.Module):
    """Input projection, learned spatial + temporal position embeddings (once), ST blocks.

    `max_frames` bounds T; a shorter clip uses the first T temporal embeddings, so a model
    trained on T frames can be run on a growing context of 1..T frames.
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
        rngs: nnx.Rngs,
    ):
        width, kw = config.width, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.num_patches, self.max_frames = num_patches, max_frames
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
        self.final_norm = _layer_norm(width, param_dtype, rngs)
        self.output_projection = nnx.Linear(width, out_features, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, T, N, in_features) -> (B, T, N, out_features), causal in T."""
        frames, patches = x.shape[1], x.shape[2]
        if patches != self.num_patches:
            raise ValueError(f"expected {self.num_patches} patches per frame, got {patches}")
        if frames > self.max_frames:
            raise ValueError(f"got {frames} frames; this model was built for at most {self.max_frames}")
        x = self.input_projection(x.astype(self.dtype))
        position = self.temporal_position[:frames, None, :] + self.spatial_position[None, :, :]
        x = x + position.astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.output_projection(self.final_norm(x).astype(self.dtype))
