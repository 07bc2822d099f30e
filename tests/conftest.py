"""Fixtures shared by every test package: composed Hydra configs, the tiny model, the bad-input corpus and
the real-photo sample.

``tests`` is a package, so test modules import shared plain functions as ``tests.helpers_corpus`` (and
``tests.scores.scores_reference``); nothing edits ``sys.path``. The tiny model stays a module
(``tests.helpers_tiny_model.TinyNet``) because runs instantiate it by that dotted path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# OpenMP threads that sleep while they wait instead of spinning: the tests start processes (the command line,
# loader workers) beside this one on 2-core machines, where the spinning threads of two processes made torch's
# convolutions many times slower (tests/maps/test_oracle_gradcam.py beside one busy process: 21 s spinning,
# 13 s passive; the same alone). Read when torch loads OpenMP, so set before torch is imported; processes that
# the tests start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from omegaconf import DictConfig
from PIL import Image

from pipeline.settings import register_schemas
from tests.helpers_corpus import (
    REAL_PHOTO_SAMPLE,
    REAL_PHOTOS_REQUIRED,
    build_bad_input_corpus,
    compose,
    real_photos_missing,
)
from tests.helpers_tiny_model import TinyNet

# Tests compose conf/ with Hydra in several places (tests.helpers_corpus.compose, hydra.compose directly),
# and its files name the groups' schemas: stored once for the session.
register_schemas()


@pytest.fixture(scope="session")
def compose_config() -> Callable[[list[str]], DictConfig]:
    """``compose_config(overrides) -> DictConfig``: the run's configuration from ``conf/`` as the CLI
    composes it (without the ``hydra`` node)."""
    return compose


@pytest.fixture
def tiny_model() -> TinyNet:
    """The seeded 3-class :class:`~tests.helpers_tiny_model.TinyNet` that ``base_overrides`` runs use
    (same weights in every process)."""
    return TinyNet()


@pytest.fixture(scope="session")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat 12,000 x 9,000 JPEG (1.7 MB on disk, 309 MiB decoded at full size)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.new("RGB", (12000, 9000), (90, 120, 150)).save(path, quality=50)
    return path


@pytest.fixture(scope="session")
def bad_input_corpus(tmp_path_factory: pytest.TempPathFactory, big_jpeg: Path) -> tuple[Path, dict[str, dict]]:
    """One VOC-style dataset with a sample per kind of bad input: ``(root, id -> expected outcome)``
    (see :func:`tests.helpers_corpus.build_bad_input_corpus`). Read-only: copy it to change it."""
    root = tmp_path_factory.mktemp("bad_input") / "data"
    return root, build_bad_input_corpus(root, big_jpeg)


def _stop_without_real_photos() -> None:
    """Skip the test where the real-photo sample or its model packages are missing, with the reason; fail
    instead where ``CAM_AUDIT_REQUIRE_REAL_PHOTOS=1`` says they must be there."""
    reason = real_photos_missing()
    if reason is None:
        return
    if REAL_PHOTOS_REQUIRED:
        pytest.fail(f"CAM_AUDIT_REQUIRE_REAL_PHOTOS is set but {reason}", pytrace=False)
    pytest.skip(f"real-photo test not run: {reason}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_photos") is not None:
        _stop_without_real_photos()


@pytest.fixture(scope="session")
def real_photo_sample() -> Path:
    """The 42 ImageNet photos with VOC XML boxes and ``classes.txt``
    (:data:`tests.helpers_corpus.REAL_PHOTO_SAMPLE`); skipped or failed as the ``real_photos`` marker."""
    _stop_without_real_photos()
    return REAL_PHOTO_SAMPLE
