"""Write the benchmarks page from the JSON and PNG files in docs/benchmarks/ (called by conf.py).

Every ``python -m benchmarks NAME`` run writes ``NAME.json``: ``{"name", "environment", "results",
"summary"}``, where ``summary`` is a flat mapping with dotted keys (``"mnist.semiparametric.final"``)
and a few nested values, ``results`` the per-run records and ``environment`` the machine and versions.
The page shows, per benchmark: the plot when there is one, the summary as tables, the environment, and
a link to the raw JSON. The generated file is not tracked (see .gitignore); edit this script instead.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

# Benchmarks grouped by the user-guide page that discusses them (by name prefix), in page order.
SECTIONS = [
    ("Choosing an estimator: real tables", "choosing", ("tables",)),
    ("SemiparametricClassifier", "semiparametric", ("semiparametric-",)),
    ("MbPAClassifier", "mbpa", ("mbpa-",)),
    ("Meta-Neighborhoods", "meta-neighborhoods", ("meta-neighborhoods-",)),
    ("NNGKClassifier", "nngk", ("nngk-",)),
    ("ImpostorClassifier", "impostor", ("impostor-",)),
    ("Neighbour search", "neighbor-index", ("index",)),
    ("Predicting against a million stored examples", "neighbor-index", ("predict-scale",)),
    ("What the memory costs over the plain network", "training", ("overhead",)),
    ("Training on long streams", "training", ("stream-",)),
    ("Grid search on a Dask cluster", "training", ("gridsearch-",)),
]

ENVIRONMENT_LABELS = {
    "date": "date",
    "quick": "quick run",
    "total_seconds": "total time (s)",
    "cpu": "CPU",
    "cpu_count": "CPU cores",
    "load_average_1min": "load average (1 min)",
    "torch_threads": "torch threads",
    "device": "device",
    "regenerated_from_cells": "summary regenerated from the cached folds on",
}


def _fmt(value) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _cell(value) -> str:
    """One cell of a list-table: escaped so that ``*`` or a trailing ``_`` stay text."""
    text = _fmt(value)
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, "\\" + char)
    return text or "\\ "


def _flatten(summary: dict) -> dict:
    """Nested dicts (a grid of validation scores, passes per data set) become dotted keys."""
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def _summary_tables(summary: dict) -> list[tuple[str | None, list[str], list[list]]]:
    """Pivot the dotted keys: the last part is the column, the rest the row.

    Rows with the same columns form one table; rows that share their columns with no other row, and
    keys without a dot, go into one two-column table of settings and single numbers.
    """
    rows: dict[str, dict[str, object]] = {}
    singles: list[tuple[str, object]] = []
    for key, value in _flatten(summary).items():
        dots = [m.start() for m in re.finditer(r"\.(?!\d)", key)]  # "e0.1", "lr=0.001" are one part
        if dots:
            row, column = key[: dots[-1]], key[dots[-1] + 1 :]
            rows.setdefault(row, {})[column] = value
        else:
            singles.append((key, value))
    for cells in rows.values():  # "acc" and "acc_std" become one column "acc": mean +- std
        for column in [c for c in cells if f"{c}_std" in cells]:
            std = cells.pop(f"{column}_std")
            if isinstance(cells[column], (int, float)) and isinstance(std, (int, float)):
                cells[column] = f"{_fmt(cells[column])} \u00b1 {_fmt(std)}"
            else:
                cells[f"{column}_std"] = std
    groups: dict[tuple[str, ...], list[str]] = {}
    for row, cells in rows.items():
        groups.setdefault(tuple(cells), []).append(row)
    tables = []
    for columns, names in groups.items():
        if len(names) == 1 or len(columns) == 1 and len(names) < 3:
            singles.extend((f"{name}.{column}", rows[name][column]) for name in names for column in columns)
            continue
        tables.append((None, ["", *columns], [[name, *(rows[name][c] for c in columns)] for name in names]))
    if singles:
        tables.append(("Settings and single numbers", ["key", "value"], [list(item) for item in singles]))
    return tables


def _list_table(header: list[str], rows: list[list], title: str | None = None) -> list[str]:
    lines = [f".. list-table:: {title}" if title else ".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        cells = [_cell(v) for v in row]
        lines.append(f"   * - {cells[0]}")
        lines.extend(f"     - {c}" for c in cells[1:])
    return [*lines, ""]


VERSIONS = ("python", "sksemiparam", "torch", "numpy", "sklearn", "pynndescent", "numba")


MAX_RESULT_ROWS = 40


def _results_table(results: list) -> list[str]:
    """The per-run records as one table when there are few of them: scalar fields only, and the
    fields that are the same in every record said once above the table."""
    records = [r for r in results if isinstance(r, dict)]
    if not records or len(records) > MAX_RESULT_ROWS:
        return []
    columns = []
    for record in records:
        columns += [k for k, v in record.items() if not isinstance(v, (list, dict)) and k not in columns]
    constant = [c for c in columns if len({repr(r.get(c)) for r in records}) == 1 and len(records) > 1]
    varying = [c for c in columns if c not in constant]
    lines = ["**Results.**", ""]
    if constant:
        same = "; ".join(f"{c} = {_fmt(records[0].get(c))}" for c in constant)
        lines += [f"In every record: {_cell(same)}.", ""]
    if varying:
        lines += _list_table(varying, [[r.get(c) for c in varying] for r in records])
    return lines


def _environment(env: dict) -> list[str]:
    versions = ", ".join(f"{k} {env[k]}" for k in VERSIONS if k in env)
    lines = []
    if versions:
        lines += [f"**Environment.** {versions}.", ""]
    rows = [[ENVIRONMENT_LABELS.get(k, k), env[k]] for k in ENVIRONMENT_LABELS if k in env]
    shown = {*VERSIONS, *ENVIRONMENT_LABELS}
    rows += [[k, v] for k, v in env.items() if k not in shown]
    if rows:
        lines += _list_table(["", "value"], rows)
    return lines


def _benchmark(name: str, data: dict, png: Path | None, source_dir: Path) -> list[str]:
    env = data.get("environment", {})
    quick = " --quick" if env.get("quick") else ""
    title = f"``{name}``"
    lines = [title, "~" * len(title), ""]
    lines += [f"Reproduce with ``python -m benchmarks {name}{quick}``.", ""]
    if env.get("quick"):
        lines += [".. note:: This run used ``--quick`` (a reduced protocol; see the user-guide page).", ""]
    if png is not None:
        lines += [f".. image:: {source_dir.name}/{png.name}", f"   :alt: {name}", "   :width: 100%", ""]
    summary = data.get("summary") or {}
    if summary:
        lines += ["**Summary.**", ""]
        for table_title, header, rows in _summary_tables(summary):
            lines += _list_table(header, rows, table_title)
    results = data.get("results") or []
    lines += _results_table(results)
    lines += _environment(env)
    lines += [
        f"Raw data: :download:`{name}.json <{source_dir.name}/{name}.json>` "
        f"({len(results)} result record{'s' if len(results) != 1 else ''}).",
        "",
    ]
    return lines


def render(source_dir: Path) -> str:
    files = sorted(source_dir.glob("*.json"), key=lambda f: f.stem)
    lines = [
        ".. This file is generated by docs/_benchmarks_page.py from docs/benchmarks/*.json and *.png.",
        "   Do not edit it; it is not tracked.",
        "",
        "Benchmarks",
        "==========",
        "",
        "Every table and plot below is read from the files that ``python -m benchmarks NAME`` wrote "
        "(``docs/benchmarks/NAME.json`` and ``NAME.png``) when this site was built. The user-guide page "
        "of each method discusses its numbers against the paper. Times depend on the machine, "
        "its load and the number of torch threads: each benchmark lists the environment it ran on.",
        "",
    ]
    placed = set()
    for heading, page, prefixes in SECTIONS:
        members = [f for f in files if f.stem.startswith(prefixes) and f.stem not in placed]
        if not members:
            continue
        lines += [heading, "-" * len(heading), "", f"Discussed in :doc:`{page}`.", ""]
        for f in members:
            placed.add(f.stem)
            png = f.with_suffix(".png")
            lines += _benchmark(f.stem, json.loads(f.read_text()), png if png.is_file() else None, source_dir)
    rest = [f for f in files if f.stem not in placed]
    if rest:
        lines += ["Other benchmarks", "----------------", ""]
        for f in rest:
            png = f.with_suffix(".png")
            lines += _benchmark(f.stem, json.loads(f.read_text()), png if png.is_file() else None, source_dir)
    return "\n".join(lines).rstrip() + "\n"


def write(source_dir: Path, target: Path) -> None:
    """Write the page, leaving the file untouched when nothing changed (no needless rebuild)."""
    text = render(Path(source_dir))
    target = Path(target)
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)
