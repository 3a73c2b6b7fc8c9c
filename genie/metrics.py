"""Metrics for evaluation and action probing.

Units and conventions, shared by every function here:

- Frames are ``(..., H, W, C)``: uint8 in 0..255 or floats in [0, 1]. uint8 frames are divided
  by 255, so every error is measured on the [0, 1] scale and PSNR uses a peak value of 1.0.
- A rollout batch is ``(M, T, H, W, C)``: M clips, T horizon steps (T[0] is horizon 1, the
  first generated frame).
- PSNR is in dB. **Averaging matters**: identical frames have infinite PSNR, and they are
  common (about a quarter of consecutive CoinRun frames are byte-identical, so a "repeat the
  last frame" prediction is exact there), so a mean of per-frame PSNRs depends on an arbitrary
  cap. The headline number is *pooled* PSNR, ``-10 log10(mean MSE)``, where the MSE is averaged
  over pixels and over the pooled frames *before* the logarithm. It is +inf only if every pooled
  frame is reproduced exactly. Controllability (ΔtPSNR) follows Genie (Bruce et al. 2024),
  section 3.
- SSIM has no such singularity (identical frames score 1.0) and is averaged per frame.
- Entropies use the natural log.

All functions are pure and return numpy values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import dm_pix
import jax.numpy as jnp
import numpy as np

_FLOAT_RANGE_TOLERANCE = 1e-3


def to_unit_float(frames, name: str = "frames") -> np.ndarray:
    """uint8 0..255 or float [0, 1] -> float in [0, 1]: float32 for uint8 and half-precision
    input (an evaluation set is large), float64 kept as is. Means accumulate in float64."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / np.float32(255.0)
    if "float" not in frames.dtype.name:  # numpy floats and ml_dtypes' bfloat16
        raise ValueError(f"{name} must be uint8 (0..255) or float in [0, 1], got {frames.dtype}")
    if frames.size and (
        frames.min() < -_FLOAT_RANGE_TOLERANCE or frames.max() > 1 + _FLOAT_RANGE_TOLERANCE
    ):
        raise ValueError(
            f"float {name} must lie in [0, 1] but span [{frames.min():.3g}, {frames.max():.3g}]; "
            "clip decoder outputs, and pass 0..255 images as uint8"
        )
    return frames if frames.dtype == np.float64 else frames.astype(np.float32)


def _frame_pair(target, prediction) -> tuple[np.ndarray, np.ndarray]:
    target = to_unit_float(target, "target")
    prediction = to_unit_float(prediction, "prediction")
    if target.shape != prediction.shape:
        raise ValueError(
            f"target {target.shape} and prediction {prediction.shape} must have the same shape"
        )
    if target.ndim < 3:
        raise ValueError(f"frames must be (..., H, W, C), got shape {target.shape}")
    return target, prediction


def _frame_axes(ndim: int, axis: int | Sequence[int] | None) -> tuple[int, ...]:
    """Pooled axes given over the leading (frame) axes ``...`` of ``(..., H, W, C)``."""
    leading = ndim - 3
    if axis is None:
        return tuple(range(leading))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    normalized = []
    for a in axes:
        if not -leading <= a < leading:
            raise ValueError(
                f"axis {a} is not one of the {leading} leading frame axes of (..., H, W, C)"
            )
        normalized.append(a % leading)
    return tuple(sorted(set(normalized)))


# --------------------------------------------------------------------------------------------
# Per-frame metrics (dm-pix)


def psnr_per_frame(target, prediction) -> np.ndarray:
    """(..., H, W, C) frames -> (...) PSNR in dB of each frame (dm-pix, peak value 1.0).

    Identical frames give +inf: do not average these; use `pooled_psnr`.
    """
    target, prediction = _frame_pair(target, prediction)
    lead, frame = target.shape[:-3], target.shape[-3:]
    values = dm_pix.psnr(
        jnp.asarray(target.reshape(-1, *frame), jnp.float32),
        jnp.asarray(prediction.reshape(-1, *frame), jnp.float32),
    )
    return np.asarray(values, np.float64).reshape(lead)


def ssim_per_frame(target, prediction) -> np.ndarray:
    """(..., H, W, C) frames -> (...) SSIM of each frame (dm-pix defaults: 11x11 Gaussian
    window, sigma 1.5, peak value 1.0). Identical frames give 1.0."""
    target, prediction = _frame_pair(target, prediction)
    lead, frame = target.shape[:-3], target.shape[-3:]
    values = dm_pix.ssim(
        jnp.asarray(target.reshape(-1, *frame), jnp.float32),
        jnp.asarray(prediction.reshape(-1, *frame), jnp.float32),
    )
    return np.asarray(values, np.float64).reshape(lead)


# --------------------------------------------------------------------------------------------
# Pooled metrics (the headline numbers)


def mse(target, prediction, axis: int | Sequence[int] | None = None) -> np.ndarray:
    """Mean squared error on the [0, 1] scale, averaged over (H, W, C) and over the leading frame
    axes named in ``axis`` (None: all of them, a scalar; ``()``: one value per frame).

    ``axis`` indexes the leading axes ``...`` of ``(..., H, W, C)``: for (M, T, H, W, C) input,
    ``axis=0`` pools over clips and returns (T,).
    """
    target, prediction = _frame_pair(target, prediction)
    per_frame = np.mean(np.square(target - prediction), axis=(-3, -2, -1), dtype=np.float64)
    return np.mean(per_frame, axis=_frame_axes(target.ndim, axis))


def _psnr_from_mse(error: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(error)


def pooled_psnr(target, prediction, axis: int | Sequence[int] | None = None) -> np.ndarray:
    """-10 log10(mean MSE) in dB, the MSE pooled over pixels and the frame axes in ``axis``
    (see `mse`; None pools every frame into one number).

    Finite unless every pooled frame is reproduced exactly (then +inf). This is the headline PSNR
    (see "Averaging matters" in the module docstring); it is at most the mean of per-frame PSNRs
    (Jensen)."""
    return _psnr_from_mse(mse(target, prediction, axis))


def psnr_by_horizon(target, prediction) -> np.ndarray:
    """(M, T, H, W, C) clips -> (T,) pooled PSNR in dB over the M clips at each horizon step."""
    _check_rollout(target, prediction)
    return pooled_psnr(target, prediction, axis=0)


def ssim_by_horizon(target, prediction) -> np.ndarray:
    """(M, T, H, W, C) clips -> (T,) SSIM averaged over the M clips at each horizon step."""
    _check_rollout(target, prediction)
    return np.mean(ssim_per_frame(target, prediction), axis=0)


def _check_rollout(target, prediction) -> None:
    if np.ndim(target) != 5:
        raise ValueError(f"expected (M, T, H, W, C) clips, got shape {np.shape(target)}")
    if np.shape(target) != np.shape(prediction):
        raise ValueError(
            f"target {np.shape(target)} and prediction {np.shape(prediction)} differ in shape"
        )


def delta_psnr(target, pred_inferred, pred_random) -> np.ndarray:
    """Genie section 3 controllability, ΔtPSNR = PSNR(x_t, x̂_t) − PSNR(x_t, x̂'_t), per step.

    (M, T, H, W, C) clips -> (T,) in dB. ``pred_inferred`` is generated from the latent actions
    the LAM infers from the real clip, ``pred_random`` from uniformly random latent actions; both
    PSNRs are pooled over the M clips (`psnr_by_horizon`). The paper reports step t = 4
    (index 3). Computed as 10 log10(MSE' / MSE), which equals the difference of pooled PSNRs and
    is exactly 0 when both predictions have the same error, including when both are perfect
    (+inf or -inf when only one of them is perfect).
    """
    _check_rollout(target, pred_inferred)
    _check_rollout(target, pred_random)
    error_inferred = mse(target, pred_inferred, axis=0)
    error_random = mse(target, pred_random, axis=0)
    same = error_inferred == error_random
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = 10.0 * np.log10(error_random / error_inferred)
    return np.where(same, 0.0, delta)


def repeat_last_frame_rollout(clips, context: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The "repeat the last frame" world model.

    (M, T_clip, H, W, C) clips -> (targets, predictions), each (M, horizon, H, W, C), with
    ``targets[:, h] = clips[:, context + h]`` and every prediction equal to the last context
    frame ``clips[:, context - 1]``. Frames keep their dtype.
    """
    clips = np.asarray(clips)
    if clips.ndim != 5:
        raise ValueError(f"expected (M, T, H, W, C) clips, got shape {clips.shape}")
    clip_length = clips.shape[1]
    if context < 1 or horizon < 1 or context + horizon > clip_length:
        raise ValueError(
            f"context {context} + horizon {horizon} frames do not fit in clips of "
            f"{clip_length} frames (need context >= 1, horizon >= 1)"
        )
    targets = clips[:, context : context + horizon]
    predictions = np.broadcast_to(clips[:, context - 1 : context], targets.shape)
    return targets, predictions


def repeat_last_frame_baseline(clips, context: int, horizon: int) -> np.ndarray:
    """Pooled PSNR (dB) per horizon step, (horizon,), of predicting x_{context+h} by
    x_{context-1} for h = 0..horizon-1: what a world model that ignores its actions and predicts
    no motion scores, so the floor a useful one must beat. Index 0 (horizon 1) is the PSNR of
    consecutive frames. For published CoinRun rollout numbers see GenieRedux (Savov et al.
    2024, arXiv 2409.06445)."""
    return psnr_by_horizon(*repeat_last_frame_rollout(clips, context, horizon))


# --------------------------------------------------------------------------------------------
# Codebook usage


@dataclasses.dataclass(frozen=True)
class CodeUsage:
    counts: np.ndarray  # (K,) int64, occurrences of each code
    fractions: np.ndarray  # (K,) float64, counts / total; sums to 1
    perplexity: float  # exp(entropy in nats): 1 if one code is used, K if all are used equally


def _check_labels(labels, name: str, num_classes: int | None = None) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integer ids, got {labels.dtype}")
    if labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes):
        upper = "" if num_classes is None else f" (0..{num_classes - 1})"
        raise ValueError(
            f"{name} span {labels.min()}..{labels.max()}, outside the valid range{upper}"
        )
    return labels


def _entropy(probabilities: np.ndarray) -> float:
    nonzero = probabilities[probabilities > 0]
    return float(-np.sum(nonzero * np.log(nonzero)))


def code_usage(codes, num_codes: int) -> CodeUsage:
    """Usage of a codebook of K = ``num_codes`` entries by integer ``codes`` of any shape."""
    codes = _check_labels(codes, "codes", num_codes)
    counts = np.bincount(codes, minlength=num_codes).astype(np.int64)
    fractions = counts / counts.sum()
    return CodeUsage(counts, fractions, float(np.exp(_entropy(fractions))))


def used_codes(codes, num_codes: int, min_share: float) -> np.ndarray:
    """The codes that make up at least ``min_share`` of integer ``codes`` (any shape) -> their
    ids, ascending, int32. Never empty: the most used code counts even below the share (which
    only happens when more than 1 / min_share codes are used about equally)."""
    usage = code_usage(codes, num_codes)
    chosen = usage.fractions >= min_share
    chosen[np.argmax(usage.counts)] = True
    return np.flatnonzero(chosen).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Action probing


@dataclasses.dataclass(frozen=True)
class ActionClasses:
    """How a dataset's true action ids collapse into the classes codes are compared with, as
    the dataset itself declares them (the "actions" entry of its build info, written by its
    builder in data_pipelines; genie knows no game's actions).

    names: the classes; of_action[a]: the class of true action id a; groups: coarser
    groupings, each (names, group of each class), probed beside the classes; keys: the class
    each play key ("left", "right", "up", "none") stands for, where the dataset says.
    """

    names: tuple[str, ...]
    of_action: np.ndarray
    groups: dict[str, tuple[tuple[str, ...], np.ndarray]]
    keys: dict[str, str]

    @classmethod
    def from_metadata(cls, metadata: dict, source: str = "the dataset") -> ActionClasses:
        """Reads a build info's "actions" entry; a malformed one is an error naming `source`."""
        try:
            names = tuple(metadata["classes"]["names"])
            of_action = np.asarray(metadata["classes"]["of_action"], np.int64)
            groups = {
                name: (tuple(group["names"]), np.asarray(group["of_class"], np.int64))
                for name, group in metadata.get("groups", {}).items()
            }
            keys = dict(metadata.get("keys", {}))
        except (KeyError, TypeError) as error:
            raise ValueError(f"the action metadata of {source} is malformed: {error!r}") from None
        problems = []
        if (
            of_action.ndim != 1
            or of_action.min(initial=0) < 0
            or of_action.max(initial=0) >= len(names)
        ):
            problems.append(f"classes.of_action must name classes 0..{len(names) - 1}")
        for name, (group_names, of_class) in groups.items():
            if of_class.shape != (len(names),) or of_class.max(initial=0) >= len(group_names):
                problems.append(
                    f"group {name!r} must give each of the {len(names)} classes a group"
                )
        unknown = sorted(set(keys.values()) - set(names))
        if unknown:
            problems.append(f"keys name unknown classes {unknown}")
        if problems:
            raise ValueError(f"the action metadata of {source} is malformed: {'; '.join(problems)}")
        return cls(names, of_action, groups, keys)

    def classify(self, actions) -> np.ndarray:
        """True action ids (any shape) -> their class ids, same shape."""
        actions = np.asarray(actions)
        _check_labels(actions, "true actions", len(self.of_action))
        return self.of_action[actions]

    def group(self, name: str, classes) -> np.ndarray:
        """Class ids (any shape) -> their ids in group `name`, same shape."""
        return self.groups[name][1][np.asarray(classes)]


def confusion_matrix(codes, true_actions, num_codes: int, num_actions: int) -> np.ndarray:
    """(K, A) int64 counts: entry [k, a] is how often latent code k co-occurs with true action a.

    ``codes`` and ``true_actions`` are integer arrays of the same shape (one per transition).
    """
    codes = _check_labels(codes, "codes", num_codes)
    true_actions = _check_labels(true_actions, "true_actions", num_actions)
    if codes.shape != true_actions.shape:
        raise ValueError(f"{codes.size} codes but {true_actions.size} true actions")
    counts = np.zeros((num_codes, num_actions), np.int64)
    np.add.at(counts, (codes, true_actions), 1)
    return counts


def normalized_mutual_information(codes, true_actions) -> float:
    """NMI = I(code; action) / mean(H(code), H(action)), in [0, 1].

    Arithmetic-mean normalisation, as sklearn's default ``normalized_mutual_info_score``; also like
    sklearn, two constant labelings score 1 and a constant against a varying one scores 0.
    """
    codes = _check_labels(codes, "codes")
    true_actions = _check_labels(true_actions, "true_actions")
    if codes.shape != true_actions.shape:
        raise ValueError(f"{codes.size} codes but {true_actions.size} true actions")
    _, code_ids = np.unique(codes, return_inverse=True)
    _, action_ids = np.unique(true_actions, return_inverse=True)
    joint = confusion_matrix(code_ids, action_ids, code_ids.max() + 1, action_ids.max() + 1)
    if joint.shape == (1, 1):
        return 1.0
    joint = joint / joint.sum()
    code_marginal, action_marginal = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    outer = np.outer(code_marginal, action_marginal)
    mutual_information = float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))
    normaliser = 0.5 * (_entropy(code_marginal) + _entropy(action_marginal))
    if mutual_information <= 0.0 or normaliser == 0.0:
        return 0.0
    return float(np.clip(mutual_information / normaliser, 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    accuracy: float  # held-out accuracy of predicting the true action from the code
    chance: float  # held-out accuracy of always predicting the training half's majority action
    code_to_action: dict[int, int]  # the fitted mapping (codes seen in the training half)
    num_train: int
    num_test: int


def probe_accuracy(codes, true_actions, seed: int = 0) -> ProbeResult:
    """How well the latent code predicts the true action, on data the probe did not see.

    The transitions are shuffled with ``seed`` and split in half. On the training half each code
    is mapped to its majority true action (the best predictor that sees only the code; ties go to
    the lower action id); codes absent there predict the overall majority action. Accuracy is
    scored on the held-out half. ``chance`` is the held-out accuracy of always predicting the
    training majority action (the majority-class baseline).
    """
    codes = _check_labels(codes, "codes")
    true_actions = _check_labels(true_actions, "true_actions")
    if codes.shape != true_actions.shape:
        raise ValueError(f"{codes.size} codes but {true_actions.size} true actions")
    if codes.size < 2:
        raise ValueError(f"probing needs at least 2 transitions, got {codes.size}")
    order = np.random.default_rng(seed).permutation(codes.size)
    train, test = order[: codes.size // 2], order[codes.size // 2 :]

    num_codes, num_actions = int(codes.max()) + 1, int(true_actions.max()) + 1
    counts = confusion_matrix(codes[train], true_actions[train], num_codes, num_actions)
    majority_action = int(np.argmax(counts.sum(0)))
    seen = counts.sum(1) > 0
    prediction_of_code = np.where(seen, np.argmax(counts, axis=1), majority_action)

    accuracy = float(np.mean(prediction_of_code[codes[test]] == true_actions[test]))
    chance = float(np.mean(true_actions[test] == majority_action))
    code_to_action = {int(k): int(prediction_of_code[k]) for k in np.flatnonzero(seen)}
    return ProbeResult(accuracy, chance, code_to_action, train.size, test.size)
