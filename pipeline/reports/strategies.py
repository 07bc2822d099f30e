"""The model's strategies, class by class: clusters of the predicted-class maps (spectral relevance analysis).

Lapuschkin et al. (2019, "Unmasking Clever Hans predictors", Nature Communications 10:1096) clustered the
explanation maps of one class and found, in a small cluster that looked somewhere else, the copyright tag
a model used to recognise horses (SpRAy). This module does the same for every class of an audit.

1. **Maps on a common grid** (during the run, on the device: column ``pred_map_grid``). The predicted-class
   map (min-max normalised) is averaged over the cells of a ``grid x grid`` partition (``grid``, 16) of
   - ``frame: object`` (the default): a window twice the network input's size centred on the centre of the
     image's boxes (their union): the map as seen from the object, so that two images whose maps look at
     the same place *relative to the object* get the same grid wherever the object is; or
   - ``frame: input``: the network input itself (SpRAy as published, for cues at a fixed place of the
     image: a watermark in a corner; on data whose objects move it clusters the maps by where the object is).
2. **Groups.** Rows are grouped by predicted class (``by: pred``) or true class (``by: true``; the maps are
   still the predicted-class maps, so a cluster may gather the images the model took for another class by
   one cue). Rows without a usable map (an empty map, no box for the object frame, a non-finite row) are
   left out; a group with fewer than ``min_images`` usable maps is not clustered.
3. **Maps made comparable.** Each grid is smoothed with a Gaussian of ``smooth`` cells (0: none), so that a
   map shifted by a cell stays close to the original, and divided by its Euclidean norm, so that two maps
   are close when their energy lies in the same places whatever its scale (distance ``sqrt(2 - 2 cos)``).
4. **Graph.** Symmetric k-nearest-neighbour affinity ``A = (K + K^T) / 2``, ``K[i, j] = 1`` when j is one of
   i's ``neighbours`` nearest maps (``sklearn.neighbors.kneighbors_graph``).
5. **Spectral embedding and the eigengap.** ``sklearn.manifold.spectral_embedding`` of ``A`` (normalised
   Laplacian ``L = I - D^-1/2 A D^-1/2``, its ``max_clusters + 1`` smallest eigenpairs, seeded). Each
   eigenvalue is the Rayleigh quotient of its eigenvector, ``l = 1 - u^T A u / u^T D u`` for the embedding
   coordinate ``u = D^-1/2 x``; with ``l_0 = 0 <= l_1 <= ...`` the number of clusters is
   ``k = argmax_{1 <= k <= max_clusters} (l_k - l_{k-1})``: one cluster when the graph holds together, k
   when it falls apart into k loosely linked parts.
6. **k-means** (``sklearn.cluster.KMeans``, 10 seeded starts) on the first k embedding coordinates.
7. **Bounded cost.** At most ``max_images`` maps of a group (a seeded sample) build the graph; every other
   row goes to the cluster whose centre (the mean of the sample members' prepared maps) is nearest, in
   chunks: memory is bounded by the cap and the chunk, time grows linearly beyond the cap.
8. **Ranked clusters.** Per cluster: size and share, accuracy, share of maps peaking off every box
   (pointing-game miss), mean excess energy of the predicted-class map, the shares of each ``group_by``
   value, the mean map (for the picture) and the ids of the maps nearest its centre. ``difference`` is
   ``1 - cos(mean map, mean map of the group's largest cluster)`` (0: the same places, 1: disjoint).
   Cluster 0 is the largest; the others follow, most different first. ``pred_strategy`` holds each row's
   cluster number (null when the row was not clustered).
9. **Suspects.** A cluster other than the largest *looks off the object* when at least
   ``off_object_share`` of its maps peak off every box while fewer than that do in the group's largest
   cluster: a sub-population on which the model looks elsewhere. The printed summary names the groups
   that have such clusters.

Determinism: a group's rows are ordered by id before anything else, and the sample, the eigensolver's
start vector and k-means are seeded from ``seed`` and the group's name, so the same rows give the same
clusters whatever order the parts were merged in and whatever the other groups are.
"""

from __future__ import annotations

import math
import time
import warnings
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.settings import StrategySettings

MAP_GRID_COLUMN = "pred_map_grid"
STRATEGY_COLUMN = "pred_strategy"
MAP_GRID_DESCRIPTION = (
    "the predicted-class map (min-max normalised) averaged per cell of a grid x grid partition of a window twice "
    "the network input centred on the boxes (report.strategies.frame=object; all 0 without a box) or of the network "
    "input (frame=input); row-major: the strategy clustering's input"
)
STRATEGY_DESCRIPTION = (
    "cluster of the predicted-class map among the maps of its class (report.strategies.by: predicted or true "
    "class): 0 = the class's largest cluster, then the others most different first; null where the class was not "
    "clustered (fewer than report.strategies.min_images usable maps) or the map was not usable (empty; no box "
    "with frame=object) (added when the run finishes, pipeline.reports.strategies)"
)
GROUP_COLUMNS = {"pred": "pred_name", "true": "label_name"}
FRAMES = ("object", "input")
CHUNK = 8192  # rows prepared and assigned at once beyond the cap


# -- on the device, during the run -----------------------------------------------------------------------


def strategy_grid(maps, boxes, valid, settings: StrategySettings):
    """The ``pred_map_grid`` column of a batch: :func:`object_map_grid` (``frame: object``) or
    :func:`map_grid` (``frame: input``) with ``settings.grid``.
    Shapes: maps ``[B, H, W]``, boxes ``[B, N, 4]``, valid ``[B, N]`` -> ``[B, grid * grid]`` float32."""
    if settings.frame == "input":
        return map_grid(maps, settings.grid)
    return object_map_grid(maps, boxes, valid, settings.grid)


def map_grid(maps, grid: int):
    """The mean of each map over each cell of a ``grid x grid`` partition of the map, on its device.

    Pixel ``(y, x)`` belongs to cell ``(floor(y * grid / H), floor(x * grid / W))`` (as
    :func:`pipeline.scores.offbox.off_box_energy_grid`); a cell without a pixel (grid > H) is 0.
    Shapes: maps ``[B, H, W]`` -> ``[B, grid * grid]`` float32, row-major.
    """
    import torch

    _, height, width = maps.shape

    def cells(size: int) -> torch.Tensor:  # [grid, size] one-hot
        index = torch.div(torch.arange(size, device=maps.device) * grid, size, rounding_mode="floor")
        return (index[None, :] == torch.arange(grid, device=maps.device)[:, None]).to(torch.float32)

    rows, cols = cells(height), cells(width)
    sums = torch.einsum("ih,bhw,jw->bij", rows, maps.to(torch.float32), cols)
    counts = rows.sum(dim=1)[:, None] * cols.sum(dim=1)[None, :]
    return (sums / counts.clamp(min=1.0)).flatten(1)


def object_map_grid(maps, boxes, valid, grid: int, samples: int = 4):
    """Each map seen from its object: translated so that the centre of its boxes' union is the centre of a
    window twice the map's size (offsets ``[-W, W) x [-H, H)`` from that centre, so the whole map fits
    wherever the object is; 0 outside the map), averaged on a ``grid x grid`` partition of the window, each
    cell the mean of ``samples x samples`` bilinear samples. A row without a valid box is all zero.
    Shapes: maps ``[B, H, W]``, boxes ``[B, N, 4]`` pixel-edge ``(x1, y1, x2, y2)``, valid ``[B, N]`` bool
    -> ``[B, grid * grid]`` float32, row-major (row i from the top of the window)."""
    import torch
    import torch.nn.functional as F

    batch, height, width = maps.shape
    inf = torch.tensor(float("inf"), device=maps.device)
    coords = boxes.to(device=maps.device, dtype=torch.float32)
    valid = valid.to(device=maps.device)
    present = valid.any(dim=1)
    x1 = torch.where(valid, coords[..., 0], inf).amin(dim=1)
    y1 = torch.where(valid, coords[..., 1], inf).amin(dim=1)
    x2 = torch.where(valid, coords[..., 2], -inf).amax(dim=1)
    y2 = torch.where(valid, coords[..., 3], -inf).amax(dim=1)
    centre_x = torch.where(present, (x1 + x2) / 2, torch.zeros_like(x1))  # [B], pixel-edge coordinates
    centre_y = torch.where(present, (y1 + y2) / 2, torch.zeros_like(y1))
    points = grid * samples
    steps = (torch.arange(points, device=maps.device, dtype=torch.float32) + 0.5) / points * 2.0 - 1.0  # in [-1, 1)
    normal_x = 2.0 * (centre_x[:, None] + steps[None, :] * width) / width - 1.0  # [B, points]; align_corners=False
    normal_y = 2.0 * (centre_y[:, None] + steps[None, :] * height) / height - 1.0
    where = torch.stack(
        [normal_x[:, None, :].expand(batch, points, points), normal_y[:, :, None].expand(batch, points, points)],
        dim=-1,
    )  # [B, points, points, 2]: (x, y) of each sample
    sampled = F.grid_sample(
        maps[:, None].to(torch.float32), where, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    cells = sampled.view(batch, grid, samples, grid, samples).mean(dim=(2, 4))
    return torch.where(present[:, None, None], cells, torch.zeros_like(cells)).flatten(1)


# -- after the run: the clustering -------------------------------------------------------------------------


def prepare(grids: np.ndarray, smooth: float) -> np.ndarray:
    """Maps ready to compare: each ``G x G`` grid smoothed with a Gaussian of ``smooth`` cells (zero outside
    the grid; 0 = not smoothed), then divided by its Euclidean norm (a zero row stays zero).
    ``[N, G * G]`` -> ``[N, G * G]`` float64."""
    values = np.asarray(grids, dtype=np.float64)
    size = int(round(math.sqrt(values.shape[1]))) if values.ndim == 2 and values.shape[1] else 0
    if smooth > 0 and size > 1:
        index = np.arange(size)
        kernel = np.exp(-0.5 * ((index[:, None] - index[None, :]) / smooth) ** 2)  # [G, G], separable
        squares = values.reshape(-1, size, size)
        values = (kernel @ squares @ kernel.T).reshape(len(values), -1)  # batched matrix products
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms > 0, norms, 1.0)


def affinity(points: np.ndarray, neighbours: int):
    """Symmetric k-nearest-neighbour connectivity ``(K + K^T) / 2`` of ``points`` ``[n, D]``: a sparse
    ``[n, n]`` matrix, 1 where each is among the other's ``neighbours`` nearest, 0.5 where only one is."""
    from sklearn import config_context
    from sklearn.neighbors import kneighbors_graph

    with config_context(working_memory=64):  # distances in chunks of at most 64 MiB (5,000 maps at once: 200 MiB)
        knn = kneighbors_graph(points, n_neighbors=min(neighbours, len(points) - 1), include_self=False)
    return (0.5 * (knn + knn.T)).tocsr()


def spectral(adjacency, components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``components`` smallest eigenpairs of the normalised Laplacian of ``adjacency`` ``[n, n]``.

    Returns the embedding ``[n, components]`` (``sklearn.manifold.spectral_embedding``, ``u = D^-1/2 x``)
    and its eigenvalues ``[components]`` ascending (``l = 1 - u^T A u / u^T D u``, the Rayleigh quotient
    of ``x``), the columns sorted with them."""
    from sklearn.manifold import spectral_embedding

    # LOBPCG: 0.4 s for 5,000 maps where ARPACK's shift-invert factorisation took 22 s (same eigenvalues to
    # 1e-7); for a handful of maps scikit-learn solves it densely (eigh)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        warnings.filterwarnings("ignore", message="The problem size")  # small: scikit-learn solves it densely
        embedding = spectral_embedding(
            adjacency, n_components=components, eigen_solver="lobpcg", random_state=seed, drop_first=False
        )
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    spread = (embedding * embedding * degree[:, None]).sum(axis=0)  # u^T D u per column
    linked = (embedding * (adjacency @ embedding)).sum(axis=0)  # u^T A u
    values = np.clip(1.0 - linked / np.where(spread > 0, spread, 1.0), 0.0, 2.0)
    order = np.argsort(values, kind="stable")
    return embedding[:, order], values[order]


def eigengap_count(eigenvalues: np.ndarray, max_clusters: int) -> int:
    """``k = argmax_{1 <= k <= max_clusters} (l_k - l_{k-1})`` over the ascending ``eigenvalues`` (``l_0``
    first; the smaller k wins a tie); 1 when there are fewer than two values."""
    top = min(max_clusters, len(eigenvalues) - 1)
    if top < 1:
        return 1
    return int(np.argmax(np.diff(eigenvalues[: top + 1]))) + 1


def cluster_points(points: np.ndarray, settings: StrategySettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral clustering of prepared maps ``points`` ``[n, D]`` (n >= 3): labels ``[n]`` in ``0..k-1`` and the
    eigenvalues ``[<= max_clusters + 1]`` that chose k (module docstring, steps 4-6)."""
    from sklearn.cluster import KMeans

    n = len(points)
    components = max(2, min(settings.max_clusters + 1, n - 1))
    embedding, eigenvalues = spectral(affinity(points, settings.neighbours), components, seed)
    k = eigengap_count(eigenvalues, settings.max_clusters)
    if k == 1:
        return np.zeros(n, dtype=np.int64), eigenvalues
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding[:, :k])
    return np.unique(labels, return_inverse=True)[1].astype(np.int64), eigenvalues  # numbered 0..k-1, none empty


def nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``centres`` ``[k, D]`` (Euclidean) for each of ``points`` ``[n, D]``. ``[n]``."""
    return np.argmin((centres * centres).sum(axis=1)[None, :] - 2.0 * points @ centres.T, axis=1)


def group_seed(seed: int, name: str) -> int:
    """A seed of each group's own, from ``seed`` and its name: the same whatever the other groups are."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**32)


def cluster_group(grids: np.ndarray, settings: StrategySettings, seed: int) -> dict:
    """Cluster one group's maps ``grids`` ``[N, G * G]`` (in id order); at most ``max_images`` build the graph.

    Returns ``labels`` ``[N]`` (0..k-1 as k-means numbered them), ``sampled`` (how many built the graph)
    and ``eigenvalues``."""
    n = len(grids)
    sample = np.arange(n)
    if n > settings.max_images:
        sample = np.sort(np.random.default_rng(seed).choice(n, settings.max_images, replace=False))
    points = prepare(grids[sample], settings.smooth)
    sample_labels, eigenvalues = cluster_points(points, settings, seed)
    labels = np.empty(n, dtype=np.int64)
    labels[sample] = sample_labels
    if len(sample) < n:
        k = int(sample_labels.max()) + 1
        centres = np.stack([points[sample_labels == j].mean(axis=0) for j in range(k)])
        rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
        for start in range(0, len(rest), CHUNK):  # prepared a chunk at a time: memory bounded by the chunk
            block = rest[start : start + CHUNK]
            labels[block] = nearest_centre(prepare(grids[block], settings.smooth), centres)
    return {"labels": labels, "sampled": int(len(sample)), "eigenvalues": eigenvalues}


def usable_maps(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions (``iloc``) of the rows with a usable map, a grid that is present, finite and not all zero,
    and those grids ``[n, G * G]`` float32."""
    column = frame[MAP_GRID_COLUMN]
    positions = np.flatnonzero(column.notna().to_numpy())
    if not len(positions):
        return positions, np.zeros((0, 0), np.float32)
    grids = np.stack(column.iloc[positions].to_numpy()).astype(np.float32, copy=False)
    keep = np.isfinite(grids).all(axis=1) & (grids.max(axis=1) > 0)
    return positions[keep], grids[keep]


def _mean(values: pd.Series) -> float:
    """Mean of the defined values (flags count as 0/1); NaN when none is defined."""
    numbers = pd.to_numeric(values.astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite = numbers[np.isfinite(numbers)]
    return float(finite.mean()) if len(finite) else float("nan")


def _column_mean(rows: pd.DataFrame, column: str) -> float:
    return _mean(rows[column]) if column in rows.columns else float("nan")


def _shares(rows: pd.DataFrame, group_by: list[str]) -> dict:
    """Per ``group_by`` column of ``rows``, the share of each of its (at most 5 most common) values."""
    return {
        column: {
            str(value): float(share)
            for value, share in rows[column].astype(str).value_counts(normalize=True).head(5).items()
        }
        for column in group_by
        if column in rows.columns
    }


def _cosine_difference(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(1.0 - (a @ b) / norms) if norms > 0 else float("nan")


def describe_clusters(
    rows: pd.DataFrame, grids: np.ndarray, labels: np.ndarray, settings: StrategySettings, group_by: list[str]
) -> tuple[list[dict], np.ndarray]:
    """One group's clusters, ranked: the largest first, then the others by ``difference``, most different first.

    ``rows``: the group's clustered rows (``id``, ``correct``, ``pred_pointing_hit``, ``pred_excess_energy``, the
    ``group_by`` columns), ``grids`` ``[n, G * G]`` their maps, ``labels`` ``[n]`` in ``0..k-1``. Returns the
    entries (with ``mean_map`` ``[G, G]`` for the picture) and ``rank`` ``[k]``, each label's cluster number."""
    k = int(labels.max()) + 1
    size = int(round(math.sqrt(grids.shape[1])))
    counts = np.bincount(labels, minlength=k)
    sums, prepared_sums = np.zeros((k, grids.shape[1])), np.zeros((k, grids.shape[1]))
    for start in range(0, len(grids), CHUNK):  # chunk by chunk: memory does not grow with the class
        block, members = grids[start : start + CHUNK], np.eye(k)[labels[start : start + CHUNK]]  # [c, D], [c, k]
        sums += members.T @ block.astype(np.float64)  # one type: BLAS (float64 @ float32 is a slow loop)
        prepared_sums += members.T @ prepare(block, settings.smooth)
    means, centres = sums / counts[:, None], prepared_sums / counts[:, None]
    distance = np.concatenate(  # [n]: each map's squared distance to its cluster's centre (prepared maps)
        [
            (
                (prepare(grids[start : start + CHUNK], settings.smooth) - centres[labels[start : start + CHUNK]]) ** 2
            ).sum(1)
            for start in range(0, len(grids), CHUNK)
        ]
    )
    largest = int(np.argmax(counts))  # the first of equal sizes
    difference = np.array([0.0 if j == largest else _cosine_difference(means[j], means[largest]) for j in range(k)])
    order = sorted(range(k), key=lambda j: (j != largest, -np.nan_to_num(difference[j], nan=-1.0), j))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    entries = []
    for j in order:
        members = labels == j
        member_rows = rows.loc[members]
        nearest = np.argsort(distance[members], kind="stable")[: settings.examples]
        entries.append(
            {
                "cluster": int(rank[j]),
                "images": int(counts[j]),
                "share": float(counts[j] / len(labels)),
                "accuracy": _column_mean(member_rows, "correct"),
                "off_object_peak_share": 1.0 - _column_mean(member_rows, "pred_pointing_hit"),
                "mean_excess_energy": _column_mean(member_rows, "pred_excess_energy"),
                "difference": float(difference[j]),
                "groups": _shares(member_rows, group_by),
                "examples": [str(i) for i in member_rows["id"].iloc[nearest]],
                "mean_map": means[j].reshape(size, size),
            }
        )
    largest_off = entries[0]["off_object_peak_share"]
    for index, entry in enumerate(entries):
        off = entry["off_object_peak_share"]
        entry["looks_off_object"] = bool(
            index > 0 and off >= settings.off_object_share and not largest_off >= settings.off_object_share
        )
    return entries, rank


def suspect_of(entry: dict, rows: pd.DataFrame, ranks: np.ndarray, group_by: list[str]) -> dict | None:
    """The clusters of one group that look off the object, pooled: their numbers, images, share of the
    group, share peaking off every box, accuracy and ``group_by`` shares, beside the largest cluster's.
    ``rows`` are the group's clustered rows, ``ranks`` ``[n]`` their cluster numbers. None when there are none."""
    off = [c["cluster"] for c in entry["clusters"] if c["looks_off_object"]]
    if not off:
        return None
    chosen, largest = np.isin(ranks, off), ranks == 0
    pooled, main = rows.loc[chosen], rows.loc[largest]
    return {
        "name": entry["name"],
        "clusters": off,
        "of_clusters": len(entry["clusters"]),
        "images": int(chosen.sum()),
        "share": float(chosen.mean()),
        "off_object_peak_share": 1.0 - _column_mean(pooled, "pred_pointing_hit"),
        "largest_off_object_peak_share": 1.0 - _column_mean(main, "pred_pointing_hit"),
        "accuracy": _column_mean(pooled, "correct"),
        "largest_accuracy": _column_mean(main, "correct"),
        "groups": _shares(pooled, group_by),
        "largest_groups": _shares(main, group_by),
        "examples": [x for c in entry["clusters"] if c["looks_off_object"] for x in c["examples"][:1]],
    }


def rule_text(settings: StrategySettings) -> str:
    """What was clustered and how, with the settings, in one sentence (summary and page)."""
    by = "predicted" if settings.by == "pred" else "true"
    frame = (
        "a window twice the network input centred on the object" if settings.frame == "object" else "the network input"
    )
    return (
        f"per {by} class with at least {settings.min_images} usable maps: each predicted-class map on a "
        f"{settings.grid} x {settings.grid} grid of {frame}, smoothed (Gaussian, sigma {settings.smooth:g} cells), divided by its "
        f"norm; a symmetric {settings.neighbours}-nearest-neighbour graph of at most {settings.max_images} maps (a "
        "seeded sample; the rest go to the nearest cluster centre), spectral embedding, 1 to "
        f"{settings.max_clusters} clusters by the largest eigengap, k-means; a cluster other than the largest looks "
        f"off the object when at least {100 * settings.off_object_share:g}% of its maps peak off every box and fewer "
        "do in the largest"
    )


def find_strategies(
    frame: pd.DataFrame, settings: StrategySettings, group_by: list[str] | None = None
) -> tuple[dict, pd.Series]:
    """Cluster the maps of every group of ``frame`` (``samples.parquet`` rows with ``pred_map_grid``).

    Returns the summary's ``strategies`` section and ``pred_strategy`` (nullable ``Int32``, aligned with
    ``frame.index``). The section: ``rule``, ``settings``, ``classes`` (one entry per clustered group:
    ``name``, ``images``, ``sampled``, ``eigenvalues``, ``clusters`` from :func:`describe_clusters`; the groups
    with several clusters first, the most different cluster first), ``several`` (their names),
    ``not_clustered`` (groups under ``min_images``, with their counts), ``suspects`` (:func:`suspect_of`) and
    ``seconds``. Each cluster's ``mean_map`` stays in the entries for :func:`write_strategy_pictures`, which
    drops it; summary.json never holds it.
    """
    started = time.perf_counter()
    group_by = list(group_by or [])
    ids = pd.Series(pd.array([pd.NA] * len(frame), dtype="Int32"), index=frame.index)
    section: dict[str, Any] = {
        "rule": rule_text(settings),
        "settings": asdict(settings),
        "classes": [],
        "several": [],
        "not_clustered": [],
        "suspects": [],
        "seconds": 0.0,
    }
    if not len(frame) or MAP_GRID_COLUMN not in frame.columns or settings.grid <= 0:
        return section, ids
    positions, grids = usable_maps(frame)
    usable = frame.iloc[positions]
    names = usable[GROUP_COLUMNS[settings.by]].astype(str).to_numpy()
    sample_ids = usable["id"].astype(str).to_numpy()
    numbers = np.full(len(frame), -1, dtype=np.int64)
    entries, suspects = [], []
    for name in sorted(set(names)):
        members = np.flatnonzero(names == name)
        if len(members) < max(settings.min_images, 3):
            section["not_clustered"].append({"name": name, "images": int(len(members))})
            continue
        members = members[np.argsort(sample_ids[members], kind="stable")]  # id order: merge order does not matter
        rows, group_grids = usable.iloc[members].reset_index(drop=True), grids[members]
        result = cluster_group(group_grids, settings, group_seed(settings.seed, name))
        clusters, rank = describe_clusters(rows, group_grids, result["labels"], settings, group_by)
        ranks = rank[result["labels"]]
        numbers[positions[members]] = ranks
        entry = {
            "name": name,
            "images": int(len(members)),
            "sampled": result["sampled"],
            "eigenvalues": [round(float(v), 6) for v in result["eigenvalues"]],
            "clusters": clusters,
        }
        entries.append(entry)
        suspect = suspect_of(entry, rows, ranks, group_by)
        if suspect is not None:
            suspects.append(suspect)
    entries.sort(key=lambda e: (len(e["clusters"]) == 1, -max(c["difference"] for c in e["clusters"]), e["name"]))
    ids[:] = pd.array(np.where(numbers >= 0, numbers, 0), dtype="Int32")
    ids[numbers < 0] = pd.NA
    section.update(
        classes=entries,
        several=[e["name"] for e in entries if len(e["clusters"]) > 1],
        suspects=sorted(suspects, key=lambda s: -s["images"]),
        seconds=round(time.perf_counter() - started, 3),
    )
    return section, ids


def strategy_column(ids: pd.Series) -> dict:
    """``pred_strategy`` for the samples table (:func:`pipeline.reports.finalize.write_samples_table`):
    ``{name: (int32 Arrow array with nulls, description)}`` from the ``Int32`` ids of :func:`find_strategies`."""
    import pyarrow as pa

    return {STRATEGY_COLUMN: (pa.array(ids.astype("Int32"), pa.int32()), STRATEGY_DESCRIPTION)}


def strategy_lines(section: dict | None) -> list[str]:
    """The printed summary's lines: how many classes split into several clusters, and one line per class with
    clusters that look off the object (pooled: images, share peaking off every box against the largest
    cluster's, accuracy, the first ``group_by`` column's most common value). None or no clustering: no line."""
    if not section or not section.get("settings", {}).get("grid"):
        return []
    settings = section["settings"]
    by = "predicted" if settings["by"] == "pred" else "true"
    classes, small = section.get("classes", []), section.get("not_clustered", [])
    if not classes:
        return [
            f"  strategies: no {by} class has {settings['min_images']} usable maps: nothing clustered "
            f"({len(small)} classes, pred_strategy null)"
        ]
    several = [e for e in classes if len(e["clusters"]) > 1]
    named = ", ".join(f"{e['name']} {len(e['clusters'])}" for e in several[:5]) + (
        f", {len(several) - 5} more" if len(several) > 5 else ""
    )
    lines = [
        f"  strategies: {len(several)} of the {len(classes)} {by} classes clustered have several clusters of maps"
        f"{f' ({named})' if several else ''}"
        + (f"; {len(small)} classes under {settings['min_images']} maps not clustered" if small else "")
    ]
    pictures = {e["name"]: e.get("picture") for e in classes}
    for suspect in section.get("suspects", []):
        context = ""
        for column, shares in suspect.get("groups", {}).items():
            value, share = next(iter(shares.items()))
            main = suspect.get("largest_groups", {}).get(column, {}).get(value, 0.0)
            context = f"; {column}={value} on {100 * share:.0f}% of them ({100 * main:.0f}% in the largest)"
            break
        picture = f"; see {pictures[suspect['name']]}" if pictures.get(suspect["name"]) else ""
        lines.append(
            f"  strategy suspect: {by} {suspect['name']!r}: {len(suspect['clusters'])} of its {suspect['of_clusters']} "
            f"clusters ({suspect['images']} images, {100 * suspect['share']:.0f}%) look off the object: "
            f"{100 * suspect['off_object_peak_share']:.0f}% of their maps peak off every box against "
            f"{100 * suspect['largest_off_object_peak_share']:.0f}% in its largest cluster, accuracy "
            f"{100 * suspect['accuracy']:.0f}% against {100 * suspect['largest_accuracy']:.0f}%{context}{picture}"
        )
    return lines


# -- pictures ----------------------------------------------------------------------------------------------


def object_centred_mean_input(records: list, spec, limit: int = 16) -> np.ndarray | None:
    """The mean of the first ``limit`` readable images of ``records`` (:class:`~pipeline.data.records.SampleRecord`),
    each placed as the run placed it (``spec``) and translated into a window twice the network input so that
    the centre of its boxes' union is the window's centre (as :func:`object_map_grid`); a pixel no image
    covers is grey. ``[2 S, 2 S, 3]`` uint8 RGB, or None when no image could be read."""
    import torch

    from pipeline.data.dataset import boxes_in_pixels
    from pipeline.data.decode import decode_image
    from pipeline.data.geometry import boxes_to_input, image_to_input, plan_placement

    size = spec.size
    total = np.zeros((2 * size, 2 * size, 3))
    count = np.zeros((2 * size, 2 * size, 1))
    used = 0
    for record in records:
        if used >= limit:
            break
        try:
            image, (width, height) = decode_image(
                str(record.image_path),
                spec.boxes_refer_to,
                min_side=spec.resize_size or size,
                max_pixels=spec.max_pixels,
            )
            placement = plan_placement(width, height, spec.mode, size, spec.resize_size)
            boxes, _ = boxes_to_input(boxes_in_pixels(record, width, height), placement)
            if not len(boxes):
                continue
            pixels = image_to_input(image, placement, spec.interpolation, spec.fill).to(torch.float64)
        except Exception:  # noqa: BLE001 -- a backdrop, not a measurement: an unreadable file is skipped
            continue
        centre_x = (boxes[:, 0].min() + boxes[:, 2].max()) / 2
        centre_y = (boxes[:, 1].min() + boxes[:, 3].max()) / 2
        left, top = int(round(size - centre_x)), int(round(size - centre_y))
        left, top = min(max(left, 0), size), min(max(top, 0), size)
        total[top : top + size, left : left + size] += pixels.permute(1, 2, 0).numpy()
        count[top : top + size, left : left + size] += 1
        used += 1
    if not used:
        return None
    mean = np.where(count > 0, total / np.maximum(count, 1), 128.0)
    return np.clip(np.round(mean), 0, 255).astype(np.uint8)


def cluster_backdrops(frame: pd.DataFrame, section: dict, setup, limit: int = 16) -> dict[tuple[str, int], np.ndarray]:
    """The mean input of each drawn cluster's images (the first ``limit`` of its rows in ``frame``, which holds
    ``pred_strategy``): object-centred (:func:`object_centred_mean_input`) or on the network input
    (:func:`pipeline.data.backdrop.mean_input`), by ``settings.frame``. Keys ``(class name, cluster)``; the time it
    took goes in ``section["backdrop_seconds"]``."""
    from pipeline.data.backdrop import mean_input

    started = time.perf_counter()
    settings = section["settings"]
    column = GROUP_COLUMNS[settings["by"]]
    records = {r.sample_id: r for r in setup.records} if settings["frame"] == "object" else {}
    out = {}
    for entry in drawn_classes(section):
        in_class = frame[frame[column].astype(str) == entry["name"]]
        for cluster in entry["clusters"]:
            rows = in_class[in_class[STRATEGY_COLUMN] == cluster["cluster"]].sort_values("id").head(limit)
            if settings["frame"] == "object":
                chosen = [records[i] for i in rows["id"] if i in records]
                backdrop = object_centred_mean_input(chosen, setup.preprocess, limit)
            else:
                backdrop = mean_input(rows["path"].tolist(), setup.preprocess, limit)
            if backdrop is not None:
                out[(entry["name"], cluster["cluster"])] = backdrop
    section["backdrop_seconds"] = round(time.perf_counter() - started, 3)
    return out


def drawn_classes(section: dict) -> list[dict]:
    """The classes with several clusters that get a picture and a page entry: the first ``max_pictures``
    (most different cluster first)."""
    several = [e for e in section.get("classes", []) if len(e["clusters"]) > 1]
    return several[: int(section["settings"]["max_pictures"])]


def cluster_panel(mean_map: np.ndarray, backdrop: np.ndarray | None, caption: str, frame: str, side: int = 200):
    """One cluster: its mean map ``[G, G]`` (scaled to its own maximum, inferno) over ``backdrop`` (``[H, W, 3]``
    uint8 RGB; grey when None), with a cross at the object's centre for ``frame`` object, ``caption`` below.
    ``[side + 20, side, 3]`` uint8 BGR."""
    import cv2

    peak = float(mean_map.max())
    scaled = mean_map / peak if peak > 0 else np.zeros_like(mean_map)
    heat = cv2.applyColorMap(np.round(255 * scaled).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = cv2.resize(heat, (side, side), interpolation=cv2.INTER_LINEAR)
    base: np.ndarray
    if backdrop is None:
        base = np.full((side, side, 3), 128, np.uint8)
    else:
        base = cv2.resize(np.ascontiguousarray(backdrop[..., ::-1]), (side, side), interpolation=cv2.INTER_AREA)
    weight = cv2.resize(scaled.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    alpha = 0.2 + 0.6 * np.clip(weight, 0, 1)  # the backdrop shows through where the map is low
    picture = np.round(base * (1 - alpha) + heat * alpha).astype(np.uint8)
    if frame == "object":
        middle = side // 2
        cv2.drawMarker(picture, (middle, middle), (0, 255, 0), cv2.MARKER_CROSS, 14, 1, cv2.LINE_AA)
    canvas = np.full((side + 20, side, 3), 255, np.uint8)
    canvas[:side] = picture
    cv2.putText(canvas, caption, (2, side + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def class_picture(entry: dict, backdrops: dict, frame: str, per_row: int = 4, side: int = 200) -> np.ndarray:
    """A class's clusters side by side (:func:`cluster_panel`, ``per_row`` a row), in rank order, each captioned
    with its number, size and share of maps peaking off the object. ``[rows * (side + 20), n * side, 3]`` BGR."""
    panels = [
        cluster_panel(
            np.asarray(c["mean_map"], dtype=np.float64),
            backdrops.get((entry["name"], c["cluster"])),
            f"#{c['cluster']}: {c['images']} img, off {100 * c['off_object_peak_share']:.0f}%",
            frame,
            side,
        )
        for c in entry["clusters"]
    ]
    blank = np.full_like(panels[0], 255)
    rows = []
    for start in range(0, len(panels), per_row):
        row = panels[start : start + per_row]
        if len(panels) > per_row:
            row = row + [blank] * (per_row - len(row))
        rows.append(np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in row], axis=1))
    return np.concatenate(rows, axis=0)


def write_strategy_pictures(section: dict, out_dir: Path, backdrops: dict | None = None) -> None:
    """One PNG per drawn class (:func:`drawn_classes`; ``<out_dir>/<class stem>.png``, :func:`class_picture`)
    over ``backdrops[(name, cluster)]`` when given; sets each drawn entry's ``picture`` (relative to the run
    folder) and drops every cluster's ``mean_map`` (summary.json keeps the numbers only)."""
    import cv2

    from pipeline.reports.overlays import safe_file_stem

    started = time.perf_counter()
    frame = section.get("settings", {}).get("frame", "object")
    for entry in drawn_classes(section):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{safe_file_stem(entry['name'])}.png"
        cv2.imwrite(str(path), class_picture(entry, backdrops or {}, frame))
        entry["picture"] = f"{out_dir.name}/{path.name}"
    for entry in section.get("classes", []):
        for cluster in entry["clusters"]:
            cluster.pop("mean_map", None)
    section["picture_seconds"] = round(time.perf_counter() - started, 3)
