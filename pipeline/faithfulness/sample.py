"""Which images are in a sample: the ``n`` ids with the smallest hash, so that membership depends on the id
and the dataset's id list only. A resumed run (any part of the rows already written), a run split over
``torchrun`` ranks and a second run of the same data all pick the same images, whatever the order or the
batches they come in.

The draw is uniform over the dataset's images: the issue asked for a draw across triage categories, but an
image's triage category is known only once the run has finished (it needs the whole run's rows), while the
sample must be decided before its image is audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def id_hash(sample_id: str, salt: str) -> int:
    """A 64-bit number from the id: the first 8 bytes of ``SHA-256(salt + "\\0" + id)`` (UTF-8, with
    undecodable bytes as ``surrogateescape``), big-endian."""
    digest = hashlib.sha256(f"{salt}\0{sample_id}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big")


def hash_sample(ids: Iterable[str], size: int, salt: str) -> frozenset[str]:
    """The ``size`` ids with the smallest :func:`id_hash` (ties, which need a 64-bit collision, by id); all
    ids when there are fewer, none when ``size`` is 0. Each sample has its own ``salt``, so the
    deletion/insertion sample and the sanity check's sample are drawn independently."""
    if size <= 0:
        return frozenset()
    distinct = sorted(set(ids), key=lambda sample_id: (id_hash(sample_id, salt), sample_id))
    return frozenset(distinct[:size])
