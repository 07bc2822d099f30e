"""One way to write JSON, for every file and line the pipeline writes as JSON (``summary.json``,
``compare.json``, a shard's ``complete.json``, the JSON log lines, the report metadata): strict JSON (a
non-finite number is ``null``, never a bare ``NaN`` or ``Infinity``, which strict parsers such as
JavaScript's, jq and Go refuse), plain Python values, and files written atomically
(:func:`pipeline.atomic.write_text_atomic`).

Light on purpose: the standard library only (pandas' missing values are recognised when pandas is already
loaded, since only then can a value be one).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text_atomic

JSON_KEY_TYPES = (str, int, float, bool)  # besides None, what json.dumps takes as a key as it is


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON values, recursively through dicts, lists and tuples (a tuple becomes a list).

    - a non-finite float (NaN, +-inf, also NumPy's) becomes ``None``;
    - a NumPy (or other array library's) scalar becomes the Python number or bool (``.item()``);
    - pandas' missing values (``pd.NA``, ``pd.NaT``) become ``None``;
    - anything else that JSON cannot hold (a path, a date, an array of several values) becomes ``str(value)``;
    - a dict key JSON cannot take as it is becomes ``str(key)`` (a NumPy integer key its number first).
    """
    if isinstance(value, dict):
        return {_json_key(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):  # an array of several values
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _is_pandas_missing(value):
        return None
    return str(value)


def _json_key(key: Any) -> Any:
    """A dict key as :func:`json.dumps` takes it: str, int, float, bool and None as they are (json.dumps
    writes them as it always does), a scalar with ``.item()`` as its Python value, anything else as text."""
    if hasattr(key, "item") and not isinstance(key, (str, bytes)):
        try:
            key = key.item()
        except (ValueError, TypeError):
            return str(key)
    return key if key is None or isinstance(key, JSON_KEY_TYPES) else str(key)


def _is_pandas_missing(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    if pandas is None:
        return False
    try:
        return bool(pandas.isna(value))
    except (TypeError, ValueError):  # not a scalar pandas can judge
        return False


def dumps_strict(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` as strict JSON text (:func:`json_safe` first, then ``json.dumps(..., allow_nan=False)``)."""
    return json.dumps(json_safe(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json_atomic(path: Path, payload: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Write ``payload`` to ``path`` as strict JSON (:func:`dumps_strict`), through a temporary file renamed
    into place: a reader sees the old file or the new one, never a part."""
    write_text_atomic(Path(path), dumps_strict(payload, indent=indent, sort_keys=sort_keys))
