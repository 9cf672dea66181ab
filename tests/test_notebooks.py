"""Notebooks are notebooks: every source executes as a Jupyter notebook in fast mode (QLANDSCAPE_FAST=1), its
figures show inline and are saved, and every committed executed ``.ipynb`` is in sync with its source."""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("_qlandscape_docs_notebooks", ROOT / "docs" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
SOURCES = TOOL.sources()


def _inline_images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_every_notebook_source_is_found():
    assert [p.name[:2] for p in SOURCES] == ["00", "01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_notebook_runs_as_a_notebook_in_fast_mode_with_inline_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("QLANDSCAPE_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as in .ci/run: the tool must still give the kernel its inline backend
    out = tmp_path / f"{path.stem}.ipynb"
    TOOL.execute(path, out, fast=True, timeout=600)
    nb = nbformat.read(out, as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip())
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert _inline_images(nb) >= 1, "no figure displayed inline"
    assert any((tmp_path / "out").glob("*.png")), "no figure saved"


def test_committed_notebooks_are_executed_and_in_sync_with_their_sources():
    problems = TOOL.check()
    assert not problems, "; ".join(f"{p.notebook}: {p.reason}" for p in problems)
    for source in SOURCES:
        nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
        assert _inline_images(nb) >= 1, f"{source.stem}.ipynb shows no figure"


def test_the_sync_check_finds_a_stale_a_missing_an_unexecuted_and_a_failed_notebook(tmp_path):
    source = tmp_path / "99_tiny.py"
    source.write_text("# %% [markdown]\n# # Tiny\n\n# %%\nx = 1 + 1\nprint(x)\n")
    ipynb = source.with_suffix(".ipynb")
    assert [p.reason.split(":")[0] for p in TOOL.check([source])] == ["missing"]

    nb = TOOL.to_notebook(source)
    nbformat.write(nb, ipynb)
    assert "never executed" in TOOL.check([source])[0].reason
    nb.cells[1].execution_count = 1
    nbformat.write(nb, ipynb)
    assert TOOL.check([source]) == []
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    nbformat.write(nb, ipynb)
    assert "raised ValueError: boom" in TOOL.check([source])[0].reason
    nb.cells[1].outputs = []
    nbformat.write(nb, ipynb)
    source.write_text(source.read_text().replace("1 + 1", "1 + 2"))  # the source edited, not re-executed
    problem = TOOL.check([source])[0]
    assert "out of sync with 99_tiny.py from cell 1" in problem.reason and "execute 99_tiny" in problem.reason


def test_fast_runs_never_overwrite_the_committed_notebooks():
    with pytest.raises(SystemExit):
        TOOL.main(["execute", "04", "--fast"])
