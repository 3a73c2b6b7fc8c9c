"""Finite scalar quantisation (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE
Made Simple", arXiv 2309.15505), an alternative to the learned codebook of `genie.models.vq`.

Each of the E = len(levels) latent numbers is squashed by tanh into a bounded interval and
rounded to one of its L_e evenly spaced levels (straight-through gradient), so the codes are the
grid of prod(levels) points in [-1, 1]^E, symmetric about 0. There is no codebook to learn,
collapse or revive, and no codebook or commitment loss: every code is used as soon as the
encoder spreads its outputs (section 3 of the paper). A code's id is its mixed-radix number:
digit e is the level index in dimension e, the first dimension least significant.

Same interface as `VectorQuantizer` (call, lookup, codes, similarity, reset_dead_codes), so the
tokenizer and the LAM take either. Axes: K codes, E dimensions, L levels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie.models.vq import usage_and_perplexity

# The bound keeps tanh's range a hair wider than the outer levels, so they are reachable with
# finite inputs (the paper's implementation uses the same margin).
_MARGIN = 1e-3


def id_digits(ids: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """(...) int code ids -> (..., E) int32 digits: digit e of id k is
    (k // prod(levels[:e])) % levels[e], the level index in dimension e."""
    radix = np.cumprod((1,) + tuple(levels[:-1]))
    return ((ids[..., None] // radix) % np.asarray(levels)).astype(jnp.int32)


def digit_ids(digits: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """(..., E) digits -> (...) int32 code ids; the inverse of `id_digits`."""
    radix = np.cumprod((1,) + tuple(levels[:-1]))
    return jnp.sum(digits * radix, axis=-1).astype(jnp.int32)


class FiniteScalarQuantizer(nnx.Module):
    def __init__(self, levels: tuple[int, ...]):
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"fsq_levels must be two or more levels per dimension, got {levels}")
        self.levels = tuple(int(level) for level in levels)
        self.code_dim = len(self.levels)
        self.num_codes = math.prod(self.levels)

    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(E,) each: the outer level in level units, (L-1)/2; the offset of the levels from
        the integers, 0 for odd L and 0.5 for even L (integers -(L-1)/2 .. (L-1)/2 for odd L,
        half-integers for even L, -0.5 and 0.5 for L = 2, so the grid is symmetric about 0 and
        z = 0 sits on a boundary; the paper shifts even grids to the integers instead, which
        biases small ones to one side); the digit of the lowest level, (L-1) // 2."""
        levels = np.asarray(self.levels)
        half_range = ((levels - 1) / 2).astype(np.float32)
        offset = np.where(levels % 2 == 0, 0.5, 0.0).astype(np.float32)
        return half_range, offset, ((levels - 1) // 2).astype(np.int32)

    @classmethod
    def from_config(cls, config) -> FiniteScalarQuantizer:
        """From a TokenizerConfig or LAMConfig with quantizer "fsq": its num_codes and code_dim
        must be what fsq_levels give (so every consumer of the config sizes itself right)."""
        levels = tuple(config.fsq_levels)
        count, dim = math.prod(levels) if levels else 0, len(levels)
        if (config.num_codes, config.code_dim) != (count, dim):
            raise ValueError(
                f"fsq_levels {levels} make {count} codes of dimension {dim}: set num_codes "
                f"{count} and code_dim {dim} (got num_codes {config.num_codes}, code_dim "
                f"{config.code_dim})"
            )
        return cls(levels)

    def bound(self, z: jax.Array) -> jax.Array:
        """(..., E) -> (..., E) float32 in level units, within the outer levels plus a margin."""
        half_range, _, _ = self._grid()
        return jnp.tanh(z.astype(jnp.float32)) * (half_range * (1.0 + _MARGIN))

    def codes(self) -> jax.Array:
        """(K, E) every code's values in [-1, 1], in id order."""
        return self.lookup(jnp.arange(self.num_codes, dtype=jnp.int32))

    def lookup(self, indices: jax.Array) -> jax.Array:
        """(...) int32 code ids -> (..., E) float32 code values in [-1, 1]."""
        half_range, offset, lowest_digit = self._grid()
        digits = id_digits(indices, self.levels)
        level = (digits - lowest_digit).astype(jnp.float32) - offset
        return level / half_range

    def similarity(self, z: jax.Array) -> jax.Array:
        """(..., E) -> (..., K): minus the squared distance from the bounded latent to each code
        (in [-1, 1] units), whose argmax is the code the quantiser picks."""
        scaled = self.bound(z) / self._grid()[0]
        return -jnp.sum((scaled[..., None, :] - self.codes()) ** 2, axis=-1)

    def __call__(
        self, z: jax.Array, *, training: bool, key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """(..., E) -> (quantized (..., E) in [-1, 1], indices (...) int32, aux).

        The rounding passes the gradient straight through to the bounded latent. aux has the
        keys `VectorQuantizer` gives: 'codebook_loss' and 'commitment_loss' (both 0: FSQ has no
        codebook), 'usage' (K,) counts and 'perplexity'. `training` and `key` are unused.
        """
        del training, key
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"expected inputs of code_dim {self.code_dim}, got shape {z.shape}")
        half_range, offset, lowest_digit = self._grid()
        bounded = self.bound(z)
        level = jnp.round(bounded + offset) - offset  # the nearest level
        rounded = bounded + jax.lax.stop_gradient(level - bounded)
        digits = (level + offset).astype(jnp.int32) + lowest_digit
        indices = digit_ids(digits, self.levels)
        usage, perplexity = usage_and_perplexity(indices, self.num_codes)
        zero = jnp.zeros((), jnp.float32)
        aux = {
            "codebook_loss": zero,
            "commitment_loss": zero,
            "usage": usage,
            "perplexity": perplexity,
        }
        return (rounded / half_range).astype(z.dtype), indices, aux

    def reset_dead_codes(self, key: jax.Array) -> jax.Array:
        """Nothing to revive: the codes are a fixed grid. Returns 0 codes reset."""
        del key
        return jnp.zeros((), jnp.int32)
