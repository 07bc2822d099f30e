"""The built-in demo as a client of the pipeline's two seams: the reader of ``data.source=synthetic`` and the
builder of ``model.name=default``.

``pipeline/data/sources.py`` and ``pipeline/model/from_config.py`` name these two functions by their dotted
path and import this module the first time they are asked for (never at their own import): the data and
model packages do not depend on the demo.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pipeline.data.records import read_class_file
from pipeline.data.sources import DatasetRead, ModelClasses
from pipeline.data.voc import read_voc
from pipeline.demo.defaults import synthetic_spec
from pipeline.demo.synthetic import ensure_synthetic, report_metadata
from pipeline.demo.train_default import ensure_default_model, load_default_model
from pipeline.model.build import BuiltModel


def read_synthetic_source(data_cfg: DictConfig, cache_dir: Path, model_classes: ModelClasses = None) -> DatasetRead:
    """The demo dataset, generated under ``cache_dir`` on first use: VOC XML with its own classes file and
    metadata (``metadata.csv`` without the columns that repeat the report's own,
    :func:`~pipeline.demo.synthetic.report_metadata`: no warning the user could not act on).
    ``model_classes`` is not read: the dataset names its classes."""
    root = ensure_synthetic(cache_dir, synthetic_spec(data_cfg.synthetic))
    split = root / data_cfg.synthetic.split
    classes = read_class_file(root / "classes.txt")
    return DatasetRead(read_voc(split / "images", split / "annotations", classes), classes, report_metadata(split))


def build_default_model(cache_dir: Path, data_cfg: DictConfig | None) -> BuiltModel:
    """The built-in CNN, trained on the training split of the synthetic dataset that ``data_cfg.synthetic``
    describes (the default one when the data config has no ``synthetic`` key) on first use, and cached under
    ``cache_dir``. Its checkpoint states the classes, normalisation and input size."""
    synthetic = data_cfg.synthetic if data_cfg is not None and "synthetic" in data_cfg else None
    path = ensure_default_model(Path(cache_dir), synthetic_spec(synthetic))
    module, checkpoint = load_default_model(path)
    return BuiltModel(
        module,
        classes=(tuple(checkpoint["classes"]), tuple(checkpoint["classes"])),
        classes_bind=True,
        mean=tuple(checkpoint["mean"]),
        std=tuple(checkpoint["std"]),
        input_size=int(checkpoint["input_size"]),
        info={"checkpoint": str(path)},
        # trained on the whole image resized to a square, antialiased bilinear (train_default.py)
        preprocess={"size": int(checkpoint["input_size"]), "interpolation": "bilinear"},
        preprocess_source="built-in default model checkpoint",
    )
