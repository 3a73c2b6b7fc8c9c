"""ST-ViViT VQ-VAE video tokenizer (Genie, Bruce et al. 2024, section 2.1).

Frames are cut into P x P patches, encoded by a causal spatiotemporal transformer into one
code_dim latent per patch, quantised into one of K codes, and decoded back to pixels by a second
causal ST transformer. Because both transformers are causal in time, the tokens of frame t
depend only on frames <= t, which is what the dynamics model needs when it extends a video.
Optional 3x3 convolutions over each frame before patchify (`stem_channels`) and after the
decoder (`head_channels`) let neighbouring patches share pixels; they never mix frames.

Axes: B batch, T time, H W C pixels, N patches per frame, P patch size, E code_dim, K codes,
F convolution channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genie.config import TokenizerConfig
from genie.models.st_transformer import (
    STTransformer,
    patches_per_frame,
    patchify,
    unpatchify,
)
from genie.models.vq import quantizer_from_config

CHANNELS = 3


def frames_to_unit(frames: jax.Array) -> jax.Array:
    """(..., H, W, C) uint8 -> float32 in [0, 1]."""
    return frames.astype(jnp.float32) / 255.0


def unit_to_uint8(pixels: jax.Array) -> jax.Array:
    """Float pixels in ~[0, 1] -> uint8 floor(clip(x, 0, 1) * 255 + 0.5), traceable; the same
    rounding (half up) as `genie.media.to_uint8` on the host."""
    unit = jnp.clip(pixels.astype(jnp.float32), 0.0, 1.0)
    return jnp.floor(unit * 255.0 + 0.5).astype(jnp.uint8)


def check_frames(frames: jax.Array, image_size: int, what: str) -> None:
    if frames.ndim != 5 or frames.shape[-3:] != (image_size, image_size, CHANNELS):
        raise ValueError(
            f"{what} expects frames of shape (B, T, {image_size}, {image_size}, {CHANNELS}), "
            f"got {tuple(frames.shape)}"
        )


def shrink_output(transformer: STTransformer, scale: float = 0.1) -> None:
    """Scales down a pixel decoder's initial output projection: its layer-normed features times
    a LeCun-initialised kernel give outputs of about unit scale, far outside [0, 1] pixels."""
    kernel = transformer.output_projection.kernel
    kernel[...] = kernel[...] * scale


class ConvStem(nnx.Module):
    """(B, T, H, W, C) pixels -> (B, T, H, W, C + F): the pixels and F features of one 3x3
    convolution per frame, so a patch embedding reads its own pixels exactly and its borders."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            CHANNELS, channels, (3, 3), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, pixels: jax.Array) -> jax.Array:
        # nnx.Conv reads the last three axes as H, W, C and every axis before them as batch.
        return jnp.concatenate([pixels, jax.nn.gelu(self.conv(pixels))], axis=-1)


class ConvHead(nnx.Module):
    """(B, T, H, W, C + F) decoder output -> (B, T, H, W, C) pixels: the decoder's colours plus
    a correction from two 3x3 convolutions per frame over the colours and F extra features, so
    each output pixel also reads the neighbouring patches. The correction starts small, so
    training starts from the plain tokenizer's output and refines it."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.hidden = nnx.Conv(CHANNELS + channels, channels, (3, 3), **kw)
        self.output = nnx.Conv(channels, CHANNELS, (3, 3), **kw)
        self.output.kernel[...] = self.output.kernel[...] * 0.1  # as `shrink_output`

    def __call__(self, decoded: jax.Array) -> jax.Array:
        # nnx.Conv reads the last three axes as H, W, C and every axis before them as batch.
        correction = self.output(jax.nn.gelu(self.hidden(decoded)))
        return decoded[..., :CHANNELS] + correction


class VideoTokenizer(nnx.Module):
    def __init__(
        self,
        config: TokenizerConfig,
        *,
        image_size: int,
        max_frames: int,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.image_size, self.patch_size = image_size, config.patch_size
        self.num_patches = patches_per_frame(image_size, config.patch_size)
        self.num_codes = config.num_codes
        pixel_dim = config.patch_size**2
        conv = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = ConvStem(config.stem_channels, **conv) if config.stem_channels else None
        self.head = ConvHead(config.head_channels, **conv) if config.head_channels else None
        kw = dict(
            num_patches=self.num_patches,
            max_frames=max_frames,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        encoder_in = pixel_dim * (CHANNELS + config.stem_channels)
        decoder_out = pixel_dim * (CHANNELS + config.head_channels)
        self.encoder = STTransformer(encoder_in, config.code_dim, config.encoder, **kw)
        self.vq = quantizer_from_config(config, rngs=rngs)
        self.reconstruction_weight = config.reconstruction_weight
        self.decoder = STTransformer(config.code_dim, decoder_out, config.decoder, **kw)
        # Start near mid-grey instead of unit-scale noise around it.
        shrink_output(self.decoder)

    def encode(self, frames: jax.Array) -> jax.Array:
        """(B, T, H, W, C) uint8 -> (B, T, N, E) continuous latents, causal in T."""
        check_frames(frames, self.image_size, "the tokenizer")
        pixels = frames_to_unit(frames) * 2.0 - 1.0
        if self.stem is not None:
            pixels = self.stem(pixels)
        return self.encoder(patchify(pixels, self.patch_size))

    def decode_latents(self, quantized: jax.Array) -> jax.Array:
        """(B, T, N, E) -> (B, T, H, W, C) float32 pixels in ~[0, 1]."""
        patches = self.decoder(quantized)
        size = self.image_size
        pixels = unpatchify(patches, self.patch_size, size, size)
        if self.head is not None:
            pixels = self.head(pixels)
        # Centre the initial output on mid-grey; no clipping, so the loss sees the raw output.
        return pixels.astype(jnp.float32) + 0.5

    def tokenize(self, frames: jax.Array) -> jax.Array:
        """(B, T, H, W, C) uint8 frames -> (B, T, N) int32 token ids. No state changes."""
        _, indices, _ = self.vq(self.encode(frames), training=False)
        return indices

    def decode(self, tokens: jax.Array) -> jax.Array:
        """(B, T, N) int32 token ids -> (B, T, H, W, C) float32 frames in ~[0, 1]."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.num_patches:
            raise ValueError(
                f"expected tokens of shape (B, T, {self.num_patches}), got {tuple(tokens.shape)}"
            )
        return self.decode_latents(self.vq.lookup(tokens))

    def __call__(
        self, frames: jax.Array, *, training: bool = False, key: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """(B, T, H, W, C) uint8 -> reconstruction (B, T, H, W, C), tokens (B, T, N), VQ aux."""
        quantized, tokens, aux = self.vq(self.encode(frames), training=training, key=key)
        return {"reconstruction": self.decode_latents(quantized), "tokens": tokens, **aux}

    def reset_dead_codes(self, key: jax.Array) -> jax.Array:
        return self.vq.reset_dead_codes(key)


def psnr(mse: jax.Array) -> jax.Array:
    """Pooled PSNR in dB of [0, 1] pixels from a mean squared error."""
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def tokenizer_loss(
    model: VideoTokenizer, frames: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pixel MSE + codebook + commitment loss on a (B, T, H, W, C) uint8 batch (training)."""
    out = model(frames, training=True, key=key)
    mse = jnp.mean((out["reconstruction"] - frames_to_unit(frames)) ** 2)
    loss = model.reconstruction_weight * mse + out["codebook_loss"] + out["commitment_loss"]
    metrics = {
        "loss": loss,
        "mse": mse,
        "psnr": psnr(mse),
        "codebook_loss": out["codebook_loss"],
        "commitment_loss": out["commitment_loss"],
        "codebook_usage": jnp.mean(out["usage"] > 0),
        "perplexity": out["perplexity"],
    }
    return loss, metrics
