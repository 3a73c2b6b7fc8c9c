"""What a per-patch code can reach at all: PSNR bounds for a tokenizer of P x P patches.

    python -m experiments.ablations.patch_bounds --dataset coinrun_tiny --patch-size 8

Two model-free references on the validation split, to read tokenizer ablations against:

- linear: the best rank-k linear code of each patch alone (PCA fitted on the validation
  patches themselves, so an upper bound for a linear per-patch autoencoder with k numbers);
- k-means: K centroids fitted by Lloyd's algorithm on patches of training clips, each validation
  patch replaced by its nearest centroid: roughly what a K-code VQ reaches when it decodes every
  patch on its own (a tokenizer's decoder also reads neighbouring and earlier tokens, so it can
  do better, but not by much at short training).

Both are pooled PSNR (-10 log10 of the mean squared error of [0, 1] pixels), beside repeating
the previous frame. The test split is never read.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.loader import read_clips
from genie import metrics


def patches(frames: np.ndarray, patch_size: int) -> np.ndarray:
    """(M, T, H, W, C) uint8 -> (M * T * H/P * W/P, P * P * C) float32 in [0, 1]."""
    m, t, h, w, c = frames.shape
    p = patch_size
    x = frames.astype(np.float32).reshape(m, t, h // p, p, w // p, p, c) / 255.0
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(-1, p * p * c)


def psnr(mse: float) -> float:
    return float(-10.0 * np.log10(mse))


def linear_bounds(x: np.ndarray, ranks: list[int]) -> dict[int, float]:
    """PSNR of the best rank-k reconstruction of the rows of x (plus their mean), per k."""
    centred = x - x.mean(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred / len(x)))[::-1]
    return {k: psnr(eigenvalues[k:].sum() / x.shape[1]) for k in ranks}


@jax.jit
def _nearest(x: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of and squared distance to the nearest centroid, per row of x."""
    distance = (
        jnp.sum(x * x, axis=1, keepdims=True)
        - 2.0 * x @ centroids.T
        + jnp.sum(centroids * centroids, axis=1)[None]
    )
    return jnp.argmin(distance, axis=1), jnp.maximum(jnp.min(distance, axis=1), 0.0)


def kmeans(x: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's algorithm from k random rows; an emptied cluster restarts at a random row."""
    centroids = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iterations):
        assignment = np.asarray(_nearest(jnp.asarray(x), jnp.asarray(centroids))[0])
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, x)
        counts = np.bincount(assignment, minlength=k)[:, None]
        restart = x[rng.choice(len(x), k)]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), restart)
    return centroids


def kmeans_bound(train: np.ndarray, valid: np.ndarray, k: int, iterations: int, seed: int):
    centroids = kmeans(train, k, iterations, np.random.default_rng(seed))
    _, distance = _nearest(jnp.asarray(valid), jnp.asarray(centroids))
    return psnr(float(np.mean(np.asarray(distance))) / valid.shape[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations.patch_bounds")
    parser.add_argument("--dataset", default="coinrun_tiny")
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--clip-frames", type=int, default=8)
    parser.add_argument("--ranks", default="16,32,64")
    parser.add_argument("--codes", default="256,1024,4096")
    parser.add_argument("--train-patches", type=int, default=60_000)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    read = dict(clip_frames=args.clip_frames)
    valid_frames = read_clips(args.dataset, "validation", **read)["frames"]
    valid = patches(valid_frames, args.patch_size)
    train = patches(read_clips(args.dataset, "train", limit=200, **read)["frames"], args.patch_size)
    rng = np.random.default_rng(args.seed)
    train = train[rng.choice(len(train), min(len(train), args.train_patches), replace=False)]

    print(f"{args.dataset} validation, {len(valid_frames)} clips, {args.patch_size}px patches")
    print("| reference | pooled PSNR (dB) |\n|---|---|")
    repeat = float(metrics.pooled_psnr(valid_frames[:, 1:], valid_frames[:, :-1]))
    print(f"| repeat the previous frame | {repeat:.2f} |")
    for k, value in linear_bounds(valid, [int(r) for r in args.ranks.split(",")]).items():
        print(f"| best rank-{k} linear code per patch | {value:.2f} |")
    for k in (int(c) for c in args.codes.split(",")):
        value = kmeans_bound(train, valid, k, args.iterations, args.seed)
        print(f"| k-means, {k} centroids per patch | {value:.2f} |")


if __name__ == "__main__":
    main()
