"""The data dictionary of docs/data-dictionary.md: every column of samples.parquet, classes.parquet and
errors.parquet, its Arrow type and its description, from the same schema code the run writes its tables with.

    python scripts/data_dictionary.py          # print the Markdown block, as it stands in docs/data-dictionary.md
    python scripts/data_dictionary.py --write  # replace the block in docs/data-dictionary.md with it

``tests/reports/test_data_dictionary.py`` checks that docs/data-dictionary.md holds exactly this output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402

from pipeline.reports.finalize import TRIAGE_DESCRIPTIONS, class_descriptions  # noqa: E402
from pipeline.reports.schema import ERRORS_SCHEMA, MAXBOXACC_DESCRIPTION, METADATA_DESCRIPTION, samples_schema  # noqa: E402
from pipeline.reports.strategies import STRATEGY_COLUMN, STRATEGY_DESCRIPTION  # noqa: E402
from pipeline.scores.registry import tau_key  # noqa: E402
from pipeline.settings import register_schemas, settings_from_config  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"
DOC = Path(__file__).resolve().parent.parent / "docs" / "data-dictionary.md"
START, END = "<!-- data-dictionary:start -->", "<!-- data-dictionary:end -->"


def _type(field) -> str:
    return str(field.type).replace("fixed_size_list<item: float>", "list<float>")


def samples_rows() -> list[tuple[str, str, str]]:
    """``(column, type, description)``: the identity columns, then one map's columns as ``<m>_...``
    (``m`` = pred, true, top2.., neg_*), the top-k extras, MaxBoxAccV2's state and metadata columns."""
    register_schemas()  # conf/ names the groups' schemas
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["cam.top_k=2", "scores.maxboxacc.enabled=true"])
    setup = SimpleNamespace(map_names=["pred", "true", "top2"], metadata=None)
    schema = samples_schema(setup, settings_from_config(cfg))
    rows = []
    for field in schema:
        description = (field.metadata or {}).get(b"description", b"").decode()
        name = field.name
        shown_as_true = name.startswith("pred_") and "true_" + name[len("pred_") :] in schema.names
        top_k_copy = name.startswith("top2_") and not name.startswith("top2_class") and name != "top2_prob"
        if shown_as_true or top_k_copy:
            continue  # the same columns as true_*, shown once as <m>_*
        if name.startswith("true_") and name != "true_maxboxacc_best_iou":
            name, description = "<m>_" + name[len("true_") :], description.rsplit("; ", 1)[0]
        elif name.startswith("top2_"):
            name, description = "top<k>_" + name[len("top2_") :], description.rsplit("; ", 1)[0]
        elif name == "true_maxboxacc_best_iou":
            description = MAXBOXACC_DESCRIPTION + " (scores.maxboxacc.enabled)"
        rows.append((name, _type(field), description))
    rows += [(name, "string", description) for name, description in TRIAGE_DESCRIPTIONS.items()]
    rows.append((STRATEGY_COLUMN, "int32", STRATEGY_DESCRIPTION))
    rows.append(("<metadata column>", "string / int64 / bool / double", METADATA_DESCRIPTION))
    return rows


def table(rows: list[tuple[str, str, str]]) -> list[str]:
    if not any(t for _, t, _ in rows):  # classes.parquet: types follow pandas (int64, double), not stated
        return ["| column | description |", "|---|---|"] + [f"| `{n}` | {d} |" for n, _, d in rows]
    return ["| column | type | description |", "|---|---|---|"] + [f"| `{n}` | {t} | {d} |" for n, t, d in rows]


def markdown() -> str:
    lines = [
        START,
        "",
        "`samples.parquet` (one row per scored image; `<m>` is each map: `pred`, `true`, `top2`.. with "
        "`cam.top_k`, `neg_*` with `cam.negative`; `<tau>` is each threshold of `scores.taus`, e.g. `tau015`):",
        "",
    ]
    lines += table(samples_rows())
    lines += ["", "`classes.parquet` (one row per true class):", ""]
    lines += table(
        [(name.replace("_tau015", "_<tau>"), "", text) for name, text in class_descriptions(tau_key(0.15)).items()]
    )
    lines += ["", "`errors.parquet` (one row per sample that could not be audited):", ""]
    lines += table([(f.name, _type(f), f.metadata[b"description"].decode()) for f in ERRORS_SCHEMA])
    lines += ["", END]
    return "\n".join(lines)


def write(path: Path = DOC) -> None:
    """Replace the block between the two markers in ``path`` with the generated one."""
    text = path.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    path.write_text(text[:start] + markdown() + text[end:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(markdown())
