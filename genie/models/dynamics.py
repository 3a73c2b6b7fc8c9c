"""MaskGIT dynamics model (Genie, Bruce et al. 2024, section 2.1; Chang et al. 2022).

Given the video tokens of frames 0..t and the latent actions between them, the dynamics model
predicts the tokens of frame t+1. It is a spatiotemporal transformer over token embeddings,
trained like MaskGIT: a random fraction of each frame's tokens is replaced by a learned [MASK]
embedding and the model is trained to recover them. Sampling lives in `genie/models/maskgit.py`.

Action alignment (the off-by-one bug of the peers, made explicit here): `actions[:, t]` is the
latent action that turned frame t into frame t+1, so it is given to frame t+1 and to no other
frame; frame 0 has no incoming action and gets a learned `no_action_embedding`.

Action injection: rather than adding the action faintly to every token (which the peers' models
learned to ignore), every frame carries one extra *action token* next to its N patch tokens.
Spatial attention mixes it with the frame's patches in every block and its own position
embedding marks it, so the action has a dedicated D-wide slot at every layer. The transformer
therefore sees N + 1 tokens per frame; the action token's output is dropped. With
`action_to_patches` (an option) the action's embedding is also added to each patch token of its
frame, so every position reads it from the first layer on, not only through spatial attention.

Copy prior (`copy_logit` > 0, an option): most tokens of a frame are the previous frame's at
the same position (about 56-59% on CoinRun's validation clips with the demo's tokenizers), yet a
freshly initialised model has to learn copying through attention first. With the option, a
learned scalar c (starting at `copy_logit`) is added to the logit of token tokens[t-1, n] at
position n of frame t, wherever that token is visible (not masked), so training starts from
"repeat the last frame" and spends its steps on what changes. Frame t still reads nothing the
transformer could not read already: frame t-1's unmasked tokens. With `copy_per_action` the
copy logit is one learned value per latent action, that of the action leading to frame t: a
"stand still" action can learn to copy strongly and a "move" action weakly, so the copying
itself obeys the action.

Factorised head (`factorized_head`, an option for FSQ tokenizers): a token id is the
mixed-radix number of its F FSQ digits (`genie.models.fsq`). The model then embeds a token as
the sum of one embedding per digit and outputs V = sum of the levels logits, one small softmax
per digit, instead of K = prod of the levels: p(token) is the product of its digits'
probabilities, the cross-entropy the sum of theirs, and sampling draws every digit. `TokenHead`
holds this arithmetic for both heads; the copy prior then adds its logit to each digit of the
previous token.

Axes: B batch, T time, N tokens per frame, D width, K tokenizer codebook size, A latent actions,
V output logits per token (K, or the sum of the FSQ levels with the factorised head), F digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genie.config import DynamicsConfig
from genie.models.fsq import digit_ids, id_digits
from genie.models.st_transformer import STTransformer

KVCache = list[tuple[jax.Array, jax.Array]]


@dataclass(frozen=True)
class TokenHead:
    """How the dynamics model's V output logits per position score the K token ids.

    `levels` empty: one softmax over the K ids (V = K). Otherwise the FSQ levels of the
    tokenizer (K = prod(levels)): the logits are F consecutive groups, one per digit (digit f of
    id k is (k // prod(levels[:f])) % levels[f], `FiniteScalarQuantizer`'s numbering), each its
    own softmax, and log p(k) is the sum of the groups' log-probabilities of k's digits.
    `greedy`: what temperature 0 picks per digit, its most likely level ("mode") or the level
    nearest its mean level ("mean"; `DynamicsConfig.greedy_digits`). `target_sigma` > 0: the
    training loss (`loss`) scores each digit against a discretised Gaussian over its levels
    centred on the true one (`DynamicsConfig.digit_target_sigma`) instead of a one-hot.
    """

    num_codes: int
    levels: tuple[int, ...] = ()
    greedy: str = "mode"
    target_sigma: float = 0.0

    def __post_init__(self):
        if self.greedy not in ("mode", "mean"):
            raise ValueError(f"greedy digits are 'mode' or 'mean', not {self.greedy!r}")
        if self.target_sigma < 0:
            raise ValueError(f"digit_target_sigma must be >= 0, got {self.target_sigma}")
        if self.target_sigma > 0 and not self.levels:
            raise ValueError(
                "digit_target_sigma spreads each FSQ digit's target over its neighbouring "
                "levels: it needs the factorised head (dynamics.factorized_head)"
            )
        if self.levels and math.prod(self.levels) != self.num_codes:
            raise ValueError(
                f"FSQ levels {self.levels} make {math.prod(self.levels)} token ids, but the "
                f"tokenizer has {self.num_codes}"
            )

    @property
    def factorized(self) -> bool:
        return bool(self.levels)

    @property
    def width(self) -> int:
        """V: the logits per position."""
        return sum(self.levels) if self.factorized else self.num_codes

    def offsets(self) -> np.ndarray:
        """(F,) where each digit's group of logits starts."""
        return np.cumsum((0,) + self.levels[:-1])

    def digits(self, ids: jax.Array) -> jax.Array:
        """(...) int ids -> (..., F) int32 digits (`genie.models.fsq.id_digits`)."""
        return id_digits(ids, self.levels)

    def digit_rows(self, ids: jax.Array) -> jax.Array:
        """(...) ids -> (..., F) int32: which of the V logits (or embedding rows) each digit is."""
        return self.digits(ids) + self.offsets()

    def one_hot(self, ids: jax.Array) -> jax.Array:
        """(...) ids -> (..., V) float32: 1 on the id's logit, or on each of its digits' logits."""
        if not self.factorized:
            return jax.nn.one_hot(ids, self.num_codes, dtype=jnp.float32)
        return jax.nn.one_hot(self.digit_rows(ids), self.width, dtype=jnp.float32).sum(-2)

    def _groups(self, logits: jax.Array) -> list[jax.Array]:
        return jnp.split(logits, self.offsets()[1:], axis=-1)

    def log_probs(self, logits: jax.Array, ids: jax.Array) -> jax.Array:
        """(..., V) logits, (...) ids -> (...) float32 log p(id)."""
        logits = logits.astype(jnp.float32)
        if not self.factorized:
            log_softmax = jax.nn.log_softmax(logits)
            return jnp.take_along_axis(log_softmax, ids[..., None], axis=-1)[..., 0]
        digits = self.digits(ids)
        return sum(
            jnp.take_along_axis(jax.nn.log_softmax(group), digits[..., f : f + 1], axis=-1)[..., 0]
            for f, group in enumerate(self._groups(logits))
        )

    def cross_entropy(self, logits: jax.Array, ids: jax.Array) -> jax.Array:
        """(..., V), (...) -> (...) float32 -log p(id)."""
        if not self.factorized:
            return optax.softmax_cross_entropy_with_integer_labels(logits, ids)
        return -self.log_probs(logits, ids)

    def digit_targets(self, ids: jax.Array) -> jax.Array:
        """(...) ids -> (..., V) float32 soft targets: per digit, weights over its levels
        proportional to exp(-(level - true level)^2 / (2 target_sigma^2)), summing to 1."""
        groups = []
        for digit, levels in zip(jnp.moveaxis(self.digits(ids), -1, 0), self.levels, strict=True):
            distance = jnp.arange(levels, dtype=jnp.float32) - digit[..., None]
            groups.append(jax.nn.softmax(-0.5 * (distance / self.target_sigma) ** 2, axis=-1))
        return jnp.concatenate(groups, axis=-1)

    def loss(self, logits: jax.Array, ids: jax.Array) -> jax.Array:
        """(..., V), (...) -> (...) float32 training loss: `cross_entropy`, or with `target_sigma`
        > 0 the cross-entropy of every digit's softmax against `digit_targets` (summed)."""
        if self.target_sigma == 0:
            return self.cross_entropy(logits, ids)
        log_softmax = jnp.concatenate(
            [jax.nn.log_softmax(group) for group in self._groups(logits.astype(jnp.float32))],
            axis=-1,
        )
        return -(self.digit_targets(ids) * log_softmax).sum(-1)

    def mode(self, logits: jax.Array) -> jax.Array:
        """(..., V) logits -> (...) int32 most likely ids (every digit's most likely value)."""
        if not self.factorized:
            return logits.argmax(-1).astype(jnp.int32)
        picks = [group.argmax(-1) for group in self._groups(logits)]
        return digit_ids(jnp.stack(picks, axis=-1), self.levels)

    def nearest_mean(self, logits: jax.Array) -> jax.Array:
        """(..., V) factorised logits -> (...) int32 ids whose every digit is the level nearest
        that digit's mean level under its softmax."""
        picks = []
        for group, levels in zip(self._groups(logits), self.levels, strict=True):
            probabilities = jax.nn.softmax(group.astype(jnp.float32), axis=-1)
            mean = probabilities @ jnp.arange(levels, dtype=jnp.float32)
            picks.append(jnp.clip(jnp.round(mean), 0, levels - 1).astype(jnp.int32))
        return digit_ids(jnp.stack(picks, axis=-1), self.levels)

    def sample(self, logits: jax.Array, key: jax.Array | None, temperature: float) -> jax.Array:
        """(..., V) logits -> (...) int32 ids drawn at `temperature`. Temperature 0 is greedy:
        the most likely id, or with the factorised head and `greedy` "mean" every digit's level
        nearest its mean level."""
        if temperature == 0:
            if self.factorized and self.greedy == "mean":
                return self.nearest_mean(logits)
            return self.mode(logits)
        if not self.factorized:
            return jax.random.categorical(key, logits / temperature).astype(jnp.int32)
        groups = self._groups(logits)
        keys = jax.random.split(key, len(groups))
        picks = [
            jax.random.categorical(k, group / temperature)
            for k, group in zip(keys, groups, strict=True)
        ]
        return digit_ids(jnp.stack(picks, axis=-1), self.levels)


class DynamicsModel(nnx.Module):
    def __init__(
        self,
        config: DynamicsConfig,
        *,
        num_codes: int,
        num_actions: int,
        num_patches: int,
        max_frames: int,
        code_levels: tuple[int, ...] = (),
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        width = config.transformer.width
        self.config = config
        self.num_codes, self.num_actions = num_codes, num_actions
        self.num_patches, self.max_frames = num_patches, max_frames
        if config.factorized_head and not code_levels:
            raise ValueError(
                "dynamics.factorized_head predicts a token's FSQ numbers: it needs an FSQ "
                "tokenizer (tokenizer.quantizer 'fsq' with fsq_levels)"
            )
        self.head = TokenHead(
            num_codes,
            tuple(code_levels) if config.factorized_head else (),
            greedy=config.greedy_digits,
            target_sigma=config.digit_target_sigma,
        )
        embed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        # One row per id, or with the factorised head one per digit value (summed per token).
        self.token_embedding = nnx.Embed(self.head.width, width, **embed)
        self.mask_embedding = nnx.Param(init(rngs.params(), (width,), param_dtype))
        self.action_embedding = nnx.Embed(num_actions, width, **embed)
        self.no_action_embedding = nnx.Param(init(rngs.params(), (width,), param_dtype))
        self.transformer = STTransformer(
            width,
            self.head.width,
            config.transformer,
            num_patches=num_patches + 1,  # + the frame's action token
            max_frames=max_frames,
            dtype=dtype,
            param_dtype=param_dtype,
            output_dtype=jnp.float32,  # logits: softmax and cross-entropy statistics in fp32
            rngs=rngs,
        )
        if config.copy_per_action and config.copy_logit <= 0:
            raise ValueError("copy_per_action needs the copy prior: set copy_logit > 0")
        copy_shape = (num_actions,) if config.copy_per_action else ()
        self.copy_logit = (
            nnx.Param(jnp.full(copy_shape, config.copy_logit, param_dtype))
            if config.copy_logit > 0
            else None
        )

    def _check(self, tokens: jax.Array, actions: jax.Array) -> None:
        (_, frames, patches), action_frames = tokens.shape, actions.shape[1]
        if patches != self.num_patches:
            raise ValueError(f"expected {self.num_patches} tokens per frame, got {patches}")
        if action_frames != frames - 1:
            raise ValueError(
                f"{frames} frames need {frames - 1} actions (actions[:, t] turns frame t into "
                f"frame t+1), got {action_frames}"
            )

    def embed_tokens(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        """(..., N) int32 token ids, (..., N) bool mask -> (..., N, D); masked ids become [MASK]."""
        if self.head.factorized:
            embedded = self.token_embedding(self.head.digit_rows(tokens)).sum(-2)
        else:
            embedded = self.token_embedding(tokens)
        return jnp.where(mask[..., None], self.mask_embedding[...].astype(embedded.dtype), embedded)

    def embed_actions(self, actions: jax.Array) -> jax.Array:
        """(B, T-1) int32 latent actions -> (B, T, 1, D) action tokens, one per frame.

        Frame t+1 gets actions[:, t], the action that produced it; frame 0 gets no_action.
        Actions may also be (B, T-1, A) float weights over the A latent actions, embedded as
        the weighted sum of their embeddings: co-training without stop-gradient passes a
        straight-through one-hot (`genie.stages.straight_through_actions`), whose forward value
        gives exactly the int32 embedding and whose gradient reaches the LAM.
        """
        if jnp.issubdtype(actions.dtype, jnp.integer):
            embedded = self.action_embedding(actions)
        else:
            table = self.action_embedding.embedding[...]
            embedded = jnp.einsum(
                "bta,ad->btd", actions.astype(table.dtype), table, precision="highest"
            ).astype(self.action_embedding.dtype or table.dtype)
        no_action = jnp.broadcast_to(
            self.no_action_embedding[...].astype(embedded.dtype),
            (actions.shape[0], 1, embedded.shape[-1]),
        )
        return jnp.concatenate([no_action, embedded], axis=1)[:, :, None, :]

    def embed(self, tokens: jax.Array, actions: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, T, N), (B, T-1), (B, T, N) -> (B, T, N+1, D): patch tokens, then the action token."""
        patches, action_tokens = self.embed_tokens(tokens, mask), self.embed_actions(actions)
        if self.config.action_to_patches:
            patches = patches + action_tokens.astype(patches.dtype)
        return jnp.concatenate([patches, action_tokens.astype(patches.dtype)], axis=2)

    def __call__(self, tokens: jax.Array, actions: jax.Array, mask: jax.Array) -> jax.Array:
        """(B, T, N) int32 tokens, (B, T-1) int32 actions, (B, T, N) bool mask -> (B, T, N, V)
        logits, scored by `self.head` (V = K without the factorised head).

        The logits are computed in float32 (the output projection's dtype) whatever the
        compute dtype. Temporal attention is causal:
        frame t's logits depend on frames < t, on frame t's own unmasked tokens and on
        actions[:, :t] only.
        """
        self._check(tokens, actions)
        logits = self.transformer(self.embed(tokens, actions, mask))[:, :, : self.num_patches]
        if self.copy_logit is None:
            return logits
        strength = self.copy_strength(actions)[..., None]  # (B, T-1, 1) or ()
        return logits.at[:, 1:].add(self.copy_prior(tokens[:, :-1], ~mask[:, :-1], strength))

    def copy_strength(self, actions: jax.Array) -> jax.Array:
        """The copy logit of the frames `actions` lead to: a scalar, or with `copy_per_action`
        (B, S) for (B, S) int32 actions or (B, S, A) weights over them."""
        strength = self.copy_logit[...].astype(jnp.float32)
        if strength.ndim == 0:
            return strength
        if jnp.issubdtype(actions.dtype, jnp.integer):
            return strength[actions]
        return jnp.einsum("bsa,a->bs", actions.astype(jnp.float32), strength)

    def copy_prior(self, previous: jax.Array, visible: jax.Array, strength) -> jax.Array:
        """(..., N) previous frame's token ids, (..., N) bool visibility and the copy logit
        (broadcastable to (..., N)) -> (..., N, V) fp32: the logit on each visible previous
        token's id (or on each of its digits), 0 elsewhere (the class docstring)."""
        weight = strength * visible.astype(jnp.float32)
        return self.head.one_hot(previous) * weight[..., None]

    def prefill(self, tokens: jax.Array, actions: jax.Array) -> KVCache:
        """Temporal key/value cache of a clip (B, T, N) with actions (B, T-1), nothing masked.

        Only the slots before the frame later passed to `decode_frame` matter.
        """
        self._check(tokens, actions)
        return self.transformer.prefill(self.embed(tokens, actions, jnp.zeros(tokens.shape, bool)))

    def decode_frame(
        self,
        frame_tokens: jax.Array,
        frame_mask: jax.Array,
        actions: jax.Array,
        frame_index: jax.Array,
        cache: KVCache,
        previous_tokens: jax.Array | None = None,
    ) -> jax.Array:
        """Logits (B, N, V) fp32 of frame `frame_index` (traced scalar >= 1) from its (B, N) tokens
        and mask, the clip's (B, T-1) actions and the `prefill` cache of the frames before it;
        with the copy prior also from `previous_tokens` (B, N), frame `frame_index - 1`.

        Equal (up to float rounding) to `self(tokens, actions, mask)[:, frame_index]` with the
        frames before `frame_index` unmasked.
        """
        action = jax.lax.dynamic_index_in_dim(actions, frame_index - 1, axis=1, keepdims=True)
        action_token = self.action_embedding(action)[:, :, None, :]  # (B, 1, 1, D)
        patch_tokens = self.embed_tokens(frame_tokens, frame_mask)[:, None]  # (B, 1, N, D)
        if self.config.action_to_patches:
            patch_tokens = patch_tokens + action_token.astype(patch_tokens.dtype)
        x = jnp.concatenate([patch_tokens, action_token.astype(patch_tokens.dtype)], axis=2)
        logits = self.transformer.decode_frame(x, frame_index, cache)[:, 0, : self.num_patches]
        if self.copy_logit is None:
            return logits
        if previous_tokens is None:
            raise ValueError("a dynamics model with a copy prior needs previous_tokens")
        strength = self.copy_strength(action)  # (B, 1) or ()
        visible = jnp.ones(previous_tokens.shape, bool)
        return logits + self.copy_prior(previous_tokens, visible, strength)


def draw_mask(key: jax.Array, shape: tuple[int, int, int], min_mask_rate: float) -> jax.Array:
    """(B, T, N) bool training mask: Genie's mask rate r ~ U(min_mask_rate, 1) per example.

    Genie (section 2.1) masks each token of frames 2..T by Bernoulli(r). Here every frame of an
    example masks exactly ceil(r * N) of its N tokens, chosen uniformly at random: the same
    expected rate (up to the ceil) with less variance, and never an unmasked-only frame. Frame 0
    is never masked: it is the context every prediction starts from.
    """
    batch, frames, patches = shape
    rate_key, position_key = jax.random.split(key)
    mask_rate = jax.random.uniform(rate_key, (batch,), minval=min_mask_rate, maxval=1.0)
    num_masked = jnp.clip(jnp.ceil(mask_rate * patches), 1, patches).astype(jnp.int32)
    # A uniformly random permutation of each frame's tokens: the first num_masked are masked.
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(position_key, shape), axis=-1), axis=-1)
    mask = rank < num_masked[:, None, None]
    return mask.at[:, 0].set(False)


def dynamics_loss(
    model: DynamicsModel, tokens: jax.Array, actions: jax.Array, key: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MaskGIT cross-entropy (fp32) on the masked tokens of (B, T, N) tokens given (B, T-1) actions
    (int32 ids, or (B, T-1, A) weights: `DynamicsModel.embed_actions`); with
    `digit_target_sigma` > 0 against soft digit targets (`TokenHead.loss`).

    Returns (loss, metrics) with metrics 'loss', 'masked_accuracy' and 'token_nll' (-log p of
    the true ids, which is the loss without soft targets); works under
    `nnx.value_and_grad(dynamics_loss, has_aux=True)`.
    """
    mask = draw_mask(key, tokens.shape, model.config.min_mask_rate)
    logits = model(tokens, actions, mask)
    weight = mask.astype(jnp.float32)
    num_masked = jnp.maximum(weight.sum(), 1.0)

    def masked_mean(values):
        return (values * weight).sum() / num_masked

    loss = masked_mean(model.head.loss(logits, tokens))
    nll = masked_mean(model.head.cross_entropy(logits, tokens))
    accuracy = masked_mean((model.head.mode(logits) == tokens).astype(jnp.float32))
    return loss, {"loss": loss, "masked_accuracy": accuracy, "token_nll": nll}
