"""The built-in default: the synthetic dataset spec from the ``data.synthetic`` config."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.demo.synthetic import SyntheticSpec


def synthetic_spec(synthetic_cfg=None) -> SyntheticSpec:
    """A :class:`SyntheticSpec` from the config keys that name its fields (others, like ``split``, are
    the data source's own). None gives the default spec."""
    if synthetic_cfg is None:
        return SyntheticSpec()
    names = {f.name for f in dataclasses.fields(SyntheticSpec)}
    plain = (
        OmegaConf.to_container(synthetic_cfg, resolve=True)
        if isinstance(synthetic_cfg, DictConfig)
        else dict(synthetic_cfg)
    )
    assert isinstance(plain, dict)  # a mapping's container is a dict
    values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in plain.items() if k in names}
    return SyntheticSpec(**values)
