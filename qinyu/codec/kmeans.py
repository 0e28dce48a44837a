"""K-means and residual vector quantisation, in torch (matrix products on the CPU)."""

from __future__ import annotations

import numpy as np
import torch


def _nearest(x: torch.Tensor, centroids: torch.Tensor, block: int = 16384) -> torch.Tensor:
    c2 = (centroids * centroids).sum(1)
    out = []
    for i in range(0, len(x), block):
        xb = x[i:i + block]
        out.append((c2[None, :] - 2.0 * xb @ centroids.T).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def kmeans(x: np.ndarray, k: int, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means; returns [k, D] centroids. With fewer points than ``k`` the
    centroids are the points, repeated; empty clusters are re-seeded with the points
    farthest from their centroid."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n = len(data)
    if n == 0:
        raise ValueError("k-means needs at least one vector")
    if n <= k:
        reps = data[torch.arange(k) % n]
        return reps.numpy()
    centroids = data[torch.randperm(n, generator=gen)[:k]].clone()
    for _ in range(iterations):
        assign = _nearest(data, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k).float()
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            err = ((data - centroids[assign]) ** 2).sum(1)
            far = err.argsort(descending=True)[:int(empty.sum())]
            centroids[empty] = data[far]
    return centroids.numpy()


def rvq_fit(x: np.ndarray, stages: int, k: int, iterations: int = 20, seed: int = 0, progress=None) -> np.ndarray:
    """Fit ``stages`` codebooks of ``k`` centroids, each on the residual of the previous."""
    residual = np.asarray(x, dtype=np.float32).copy()
    books = []
    for s in range(stages):
        c = kmeans(residual, k, iterations, seed + s)
        idx = rvq_nearest(residual, c)
        residual -= c[idx]
        books.append(c)
        if progress:
            progress(s, float(np.mean(residual ** 2)))
    return np.stack(books)


def rvq_nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return _nearest(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                    torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))).numpy()


def rvq_encode(x: np.ndarray, books: np.ndarray) -> np.ndarray:
    """Greedy residual quantisation: [N, D] -> [stages, N] indices."""
    residual = np.asarray(x, dtype=np.float32).copy()
    codes = []
    for c in books:
        idx = rvq_nearest(residual, c)
        residual -= c[idx]
        codes.append(idx)
    return np.stack(codes) if codes else np.zeros((0, len(x)), dtype=np.int64)


def rvq_decode(codes: np.ndarray, books: np.ndarray) -> np.ndarray:
    out = np.zeros((codes.shape[1], books.shape[2]), dtype=np.float32)
    for s, c in enumerate(books):
        out += c[codes[s]]
    return out
