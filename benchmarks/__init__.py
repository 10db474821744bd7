"""Benchmarks of sksemiparam, run as ``python -m benchmarks NAME [--quick]``.

Each benchmark is a module ``benchmarks/<name>.py`` (``-`` in NAME becomes ``_``) exposing

- ``run(quick: bool, data_dir: str | None) -> dict`` returning ``{"results": [rows], "summary": {...}}``;
- optionally ``plot(report: dict, path: str) -> None``, drawing the written report to a PNG.

The runner (``benchmarks/__main__.py``) adds the environment and writes ``OUT/NAME.json`` and
``OUT/NAME.png``. ``python -m benchmarks --list`` lists the benchmarks.
"""
