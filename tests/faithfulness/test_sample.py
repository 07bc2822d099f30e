"""The hash sample: exactly n ids, decided by the id list alone (order, batches and resumes do not matter)."""

from __future__ import annotations

from pipeline.faithfulness.sample import hash_sample, id_hash

IDS = [f"img_{i:05d}" for i in range(1000)]


def test_the_sample_has_the_size_asked_for_and_all_ids_when_fewer():
    assert len(hash_sample(IDS, 300, "faithfulness")) == 300
    assert hash_sample(IDS[:20], 300, "faithfulness") == frozenset(IDS[:20])
    assert hash_sample(IDS, 0, "faithfulness") == frozenset()


def test_membership_depends_on_the_ids_not_their_order():
    shuffled = IDS[::-1][500:] + IDS[::-1][:500]
    assert hash_sample(IDS, 100, "faithfulness") == hash_sample(shuffled, 100, "faithfulness")


def test_the_sample_is_spread_over_the_dataset_and_salts_draw_apart():
    chosen = hash_sample(IDS, 200, "faithfulness")
    first_half = sum(1 for i in chosen if int(i[4:]) < 500)
    assert 70 < first_half < 130  # uniform: about half of 200 (binomial sd 7)
    overlap = len(chosen & hash_sample(IDS, 200, "sanity"))
    assert overlap < 80  # independent draws overlap by about 200 * 0.2 = 40


def test_the_hash_is_the_documented_one():
    import hashlib

    digest = hashlib.sha256(b"faithfulness\0img_00001").digest()
    assert id_hash("img_00001", "faithfulness") == int.from_bytes(digest[:8], "big")
