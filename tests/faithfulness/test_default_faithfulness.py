"""On the built-in default model at its default layer, the maps are faithful by RISE's measure: removing
the pixels the predicted-class map ranks first destroys the prediction faster than putting them back into
a blurred copy restores it (deletion AUC below insertion AUC, on average and for most images)."""

from __future__ import annotations

import pytest
import torch

from pipeline.compute import audit_batch
from pipeline.data.dataset import AuditDataset, collate_samples
from pipeline.setup import prepare
from tests.helpers_corpus import DEFAULT_CACHE, compose

# the built-in default model: a fresh clone generates its data and trains it first (minutes on 2 cores), then
# 64 images x 31 forwards each: make test-all
pytestmark = [pytest.mark.timeout(1800), pytest.mark.slow]


def test_deletion_is_below_insertion_for_the_default_model(tmp_path):
    cfg = compose(
        [
            "data.limit=64",
            "faithfulness.sample=64",
            "runtime.num_workers=0",
            "runtime.progress=false",
            f"cache_dir={DEFAULT_CACHE}",
        ]
    )
    setup = prepare(cfg, tmp_path / "prepare")
    records = [r for r in setup.records if not r.problem]
    assert len(setup.faithfulness.sample_ids) == len(records) == 64  # the sample is every image here
    setup.faithfulness.bind(records, setup.device)
    dataset = AuditDataset(records, setup.preprocess)
    deletion, insertion, drop = [], [], []
    for start in range(0, len(records), 32):
        batch = collate_samples([dataset[i] for i in range(start, min(start + 32, len(records)))])
        labels = torch.tensor([records[i].label for i in batch.index.tolist()])
        columns, _, _ = audit_batch(setup, batch, labels)
        deletion.append(columns["pred_deletion_auc"])
        insertion.append(columns["pred_insertion_auc"])
        drop.append(columns["pred_confidence_drop"])
    deletion, insertion, drop = torch.cat(deletion), torch.cat(insertion), torch.cat(drop)
    assert not torch.isnan(deletion).any() and not torch.isnan(insertion).any()
    assert deletion.mean() < 0.5 * insertion.mean()  # measured: 0.17 against 0.61 on 200 images
    assert (insertion > deletion).float().mean() > 0.9
    assert ((drop >= 0) & (drop <= 1)).all()
