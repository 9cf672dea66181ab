"""Notebooks run end-to-end in fast mode (QLANDSCAPE_FAST=1)."""

import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_fast_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("QLANDSCAPE_FAST", "1")
    monkeypatch.setenv("QLANDSCAPE_OUT", str(tmp_path))
    runpy.run_path(str(path), run_name="__main__")
    assert any(tmp_path.glob("*.png"))
