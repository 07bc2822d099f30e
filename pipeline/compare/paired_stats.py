"""Paired statistics for comparing two audits of the same images: is a change more than chance?

Two runs on the same images are paired: each image is measured twice. Both tests here use the pairing,
which is what makes a small change on many images detectable and a change on few images not.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def binomial_tail_half(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): sum_{i >= k} C(n, i) / 2^n.

    Exact integer arithmetic up to n = 2,000; above, the same sum in log space (log C(n, i) from lgamma,
    log-sum-exp), relative error about 1e-12, so that 50,000 discordant images take milliseconds.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n > 2000:
        tail = np.arange(k, n + 1, dtype=np.float64)  # the i of the sum
        log_terms = math.lgamma(n + 1) - log_factorial(tail) - log_factorial(n - tail) - n * math.log(2.0)
        top = log_terms.max()
        return float(min(1.0, np.exp(top) * np.exp(log_terms - top).sum()))
    term, total = 1, 0  # term = C(n, i), built up from C(n, 0)
    for i in range(0, n + 1):
        if i >= k:
            total += term
        term = term * (n - i) // (i + 1)
    return total / 2**n


def log_factorial(values: np.ndarray) -> np.ndarray:
    """log(v!) of each integer-valued v (float64 array), from lgamma."""
    return np.frompyfunc(math.lgamma, 1, 1)(values + 1).astype(np.float64)


def mcnemar_exact(broke: int, fixed: int) -> float:
    """McNemar's exact test for a change of accuracy between two paired classifications; two-sided p.

    Only the discordant images carry information: ``broke`` (right -> wrong) and ``fixed`` (wrong -> right).
    Under "no change", each discordant image is equally likely to go either way, so
    ``broke ~ Binomial(broke + fixed, 1/2)``, and
    ``p = min(1, 2 * P(X >= max(broke, fixed)))`` (the binomial's symmetry makes both tails equal).
    Source: McNemar (1947), Psychometrika 12(2); exact form as in Fagerland, Lydersen & Laake (2013), BMC
    Med. Res. Methodol. 13:91 (equal to ``scipy.stats.binomtest(broke, broke + fixed, 0.5)``).
    """
    n = broke + fixed
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_tail_half(max(broke, fixed), n))


def mean_statistic(values: np.ndarray, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean of ``values[index]`` per resample: ``index`` ``[R, n]`` -> ``[R]``."""
    return values[index].mean(axis=1)


def class_mean_statistic(values: np.ndarray, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean over classes of the per-class mean of ``values[index]`` (the pointing game's aggregation,
    TorchRay): ``index`` ``[R, n]``, ``labels`` ``[n]`` in ``0..K-1`` -> ``[R]``. A class absent from a
    resample is left out of that resample's mean."""
    resamples, n_classes = index.shape[0], int(labels.max()) + 1 if len(labels) else 1
    slots = labels[index] + n_classes * np.arange(resamples)[:, None]  # [R, n]: (resample, class) slot
    sums = np.bincount(slots.ravel(), weights=values[index].ravel(), minlength=resamples * n_classes).reshape(
        resamples, n_classes
    )
    counts = np.bincount(slots.ravel(), minlength=resamples * n_classes).reshape(resamples, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = sums / counts
    return np.nanmean(per_class, axis=1)


Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def paired_bootstrap(
    before: np.ndarray,
    after: np.ndarray,
    labels: np.ndarray,
    statistic: Statistic = mean_statistic,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk_values: int = 4_000_000,
) -> dict:
    """Paired bootstrap of ``statistic(after) - statistic(before)`` over images: its point value and a
    percentile confidence interval.

    Each resample draws ``n`` images with replacement and evaluates both runs on the *same* draw, so the
    interval reflects the per-image differences, not the spread of the images. ``before``, ``after``,
    ``labels``: ``[n]`` (only images where both values are defined). Resamples are drawn ``[R, n]`` at once
    (in chunks of about ``chunk_values`` indices to bound memory). Source: Efron & Tibshirani (1993),
    An Introduction to the Bootstrap, ch. 13 (percentile interval), paired resampling as in
    Koehn (2004), EMNLP, "Statistical significance tests for machine translation evaluation".

    Returns ``{"delta", "low", "high", "n", "resamples", "seed", "confidence"}`` (NaN bounds when ``n`` is 0).
    """
    n = len(before)
    whole = np.arange(n)[None, :]
    out = {"n": int(n), "resamples": int(resamples), "seed": int(seed), "confidence": float(confidence)}
    if n == 0:
        return {**out, "delta": float("nan"), "low": float("nan"), "high": float("nan")}
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    delta = float(statistic(after, labels, whole)[0] - statistic(before, labels, whole)[0])
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_values // n)
    deltas = []
    for start in range(0, resamples, per_chunk):
        index = rng.integers(0, n, size=(min(per_chunk, resamples - start), n))  # [r, n]
        deltas.append(statistic(after, labels, index) - statistic(before, labels, index))
    low, high = np.quantile(np.concatenate(deltas), [(1 - confidence) / 2, (1 + confidence) / 2])
    return {**out, "delta": delta, "low": float(low), "high": float(high)}


def holm_adjusted(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values of a family of ``m`` tests (same order as given); NaN stays NaN and
    is not counted in ``m``.

    Sorted ascending, ``p_(1) <= ... <= p_(m)``: ``adjusted_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    Rejecting where ``adjusted < alpha`` is Holm's procedure: reject ``H_(1)`` .. ``H_(i)`` while
    ``p_(i) < alpha / (m - i + 1)``, stop at the first that is not. It holds the family-wise error rate at
    ``alpha`` like Bonferroni (``alpha / m`` for every test) and rejects at least as much: only the smallest p
    faces ``alpha / m``. Source: Holm (1979), "A simple sequentially rejective multiple test procedure",
    Scand. J. Statist. 6(2); adjusted form as in Wright (1992), Biometrics 48(4).
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    if m == 0:
        return out
    order = defined[np.argsort(p[defined], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
