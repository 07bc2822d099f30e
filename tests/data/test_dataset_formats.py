"""``data.source`` through the registry of dataset formats: a new format is its reader module (which
registers itself) and its ``conf/data/<name>.yaml``, nothing else; shown here with a tiny fake format whose
module is found the way a real one would be (``pipeline/data/<name>.py``, imported on first use)."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
from omegaconf import OmegaConf

import pipeline.data
from pipeline.data import sources
from pipeline.data.sources import DATASET_FORMATS, dataset_format, load_records
from pipeline.errors import ConfigError

FAKE_READER = """
import numpy as np

from pipeline.data.records import ClassList, SampleRecord, unusable_record
from pipeline.data.sources import DatasetRead, register_dataset_format


@register_dataset_format("{name}", samples_option="data.listing", annotations_option="data.listing")
def read_listing(data_cfg, cache_dir, model_classes=None):
    classes = ClassList(("cat", "dog"), ("cat", "dog"))
    records = [
        SampleRecord("b", "/images/b.jpg", 1, np.array([[0, 0, 4, 4]], np.float32)),
        SampleRecord("a", "/images/a.jpg", 0, np.zeros((0, 4), np.float32)),
        unusable_record("a", "", "MissingImage", "listed twice, no file"),
    ]
    return DatasetRead(records[: data_cfg.listing.count], classes)
"""


@pytest.fixture
def fake_format(tmp_path, monkeypatch):
    """A reader module ``pipeline/data/<name>.py`` (in a folder added to the package's path) that nothing
    imports or lists: only its name in ``data.source`` reaches it."""
    name = f"listing_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FAKE_READER).replace("{name}", name))
    monkeypatch.setattr(pipeline.data, "__path__", [*pipeline.data.__path__, str(tmp_path)])
    monkeypatch.setattr(sources, "DATASET_FORMATS", dict(DATASET_FORMATS))  # the registration does not outlive the test
    yield name
    sys.modules.pop(f"pipeline.data.{name}", None)


def _data_cfg(source: str, count: int = 3):
    return OmegaConf.create({"source": source, "metadata": None, "limit": None, "listing": {"count": count}})


def test_a_new_format_is_its_module_and_is_read_through_load_records(fake_format, tmp_path):
    assert fake_format not in sources.DATASET_FORMATS
    records, classes, metadata = load_records(_data_cfg(fake_format), tmp_path)
    assert [r.sample_id for r in records] == ["a", "a#dup1", "b"]  # sorted, duplicates marked as for any format
    assert [r.label for r in records] == [0, -1, 1] and records[1].problem.type == "DuplicateId"
    assert classes.names == ("cat", "dog") and metadata is None
    assert list(sources.DATASET_FORMATS)[:4] == ["synthetic", "voc", "coco", "manifest"]
    assert fake_format in sources.DATASET_FORMATS


def test_a_new_format_names_its_own_options(fake_format, tmp_path):
    with pytest.raises(ConfigError) as error:
        load_records(_data_cfg(fake_format, count=0), tmp_path)
    assert error.value.option == "data.listing" and "no samples" in str(error.value)
    failing = [r for r in load_records(_data_cfg(fake_format), tmp_path)[0] if r.problem]
    with pytest.raises(ConfigError) as error:
        sources.check_index_problems(failing, load_records(_data_cfg(fake_format), tmp_path)[1], fake_format, 0.1, 50)
    assert error.value.option == "data.listing"


@pytest.mark.parametrize("source", ["nonexistent", "records", "../voc", ""])
def test_an_unknown_source_is_a_config_error_listing_the_known_ones(source):
    with pytest.raises(ConfigError) as error:
        dataset_format(source)
    assert error.value.option == "data.source"
    assert str(error.value).endswith("choose synthetic, voc, coco or manifest")


def test_the_built_in_formats_name_the_options_they_had():
    samples = {name: DATASET_FORMATS[name].samples_option for name in ("synthetic", "voc", "coco", "manifest")}
    assert samples == {
        "synthetic": "data.synthetic",
        "voc": "data.images",
        "coco": "data.annotations",
        "manifest": "data.manifest",
    }
