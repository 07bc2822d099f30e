"""The built-in default: the synthetic dataset spec from the ``data.synthetic`` config."""

from __future__ import annotations

import dataclasses

from pipeline.data.synthetic import SyntheticSpec


def synthetic_spec(synthetic_cfg=None) -> SyntheticSpec:
    """A :class:`SyntheticSpec` from the config keys that name its fields (others, like ``split``, are
    the data source's own). None gives the default spec."""
    if synthetic_cfg is None:
        return SyntheticSpec()
    names = {f.name for f in dataclasses.fields(SyntheticSpec)}
    values = {k: (tuple(v) if isinstance(v, (list, tuple)) or hasattr(v, "_iter_ex") else v)
              for k, v in dict(synthetic_cfg).items() if k in names}
    return SyntheticSpec(**values)
