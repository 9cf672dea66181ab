"""Executed notebooks from their percent-format sources.

The reviewed source of every notebook is ``notebooks/NN_name.py`` (jupytext percent format). This
tool turns a source into a Jupyter notebook and executes it with nbclient, in a real kernel, from
the repository root, so figures are captured inline (the notebooks switch matplotlib to ``Agg``
only outside a kernel) and are still saved to the notebook's ``OUT`` folder for the README.

Commands (run from anywhere; paths are resolved from this file)::

    python docs/notebooks.py execute            # full runs: writes notebooks/NN_name.ipynb
    python docs/notebooks.py execute 04 05      # only those (by number or file stem)
    python docs/notebooks.py execute --fast --out DIR   # QLANDSCAPE_FAST=1 smoke runs into DIR
    python docs/notebooks.py check              # every .ipynb exists, is executed, error-free
                                                # and has exactly its source's cells

``check`` compares each committed ``.ipynb`` cell by cell (type and source) with jupytext's
conversion of its ``.py``, so an edited source whose notebook was not re-executed fails it. The
test suite runs ``check`` and executes every source in fast mode through :func:`execute`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def sources() -> list[Path]:
    """The notebook sources, ``notebooks/NN_*.py``, in order."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def select(names: list[str]) -> list[Path]:
    """Sources matching each name (a two-digit number or a file stem); raises on an unknown name."""
    all_sources = sources()
    if not names:
        return all_sources
    chosen = []
    for name in names:
        match = [p for p in all_sources if p.stem == name or p.stem.split("_", 1)[0] == name]
        if not match:
            raise SystemExit(f"no notebook source matches {name!r}; have: {', '.join(p.stem for p in all_sources)}")
        chosen.extend(match)
    return chosen


def to_notebook(source: Path):  # -> nbformat.NotebookNode
    """The unexecuted notebook of a percent-format source (jupytext's conversion)."""
    import jupytext
    nb = jupytext.read(source)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata.pop("jupytext", None)
    return nb


def execute(source: Path, out: Path, fast: bool, timeout: int = 7200) -> float:
    """Execute ``source`` as a notebook (cwd: the repository root) and write it to ``out``.

    Parameters
    ----------
    source : Path
        A ``notebooks/NN_name.py`` percent-format file.
    out : Path
        The ``.ipynb`` to write (outputs included). Written also when a cell raises, so the
        traceback can be read; the error is then re-raised.
    fast : bool
        Sets ``QLANDSCAPE_FAST=1`` (the notebook's smoke settings) for the kernel.
    timeout : int
        Seconds allowed per cell.

    Returns
    -------
    float
        Wall-clock seconds of the execution.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = to_notebook(source)
    env_before = dict(os.environ)
    os.environ["QLANDSCAPE_FAST"] = "1" if fast else "0"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("QLANDSCAPE_PROGRESS", "0")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend, so figures are captured
    started = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    return time.perf_counter() - started


@dataclass
class Problem:
    notebook: str
    reason: str


def check(paths: list[Path] | None = None) -> list[Problem]:
    """Problems with the committed notebooks (empty when every one is in sync and executed).

    For every source: its ``.ipynb`` exists; its cells are the source's cells (same types and
    sources, same order); every code cell has been executed (has an execution count); no output
    is an error.
    """
    import nbformat

    problems = []
    for source in paths or sources():
        ipynb = source.with_suffix(".ipynb")
        name = ipynb.name
        if not ipynb.exists():
            problems.append(Problem(name, "missing: run `python docs/notebooks.py execute "
                                          f"{source.stem}`"))
            continue
        committed = nbformat.read(ipynb, as_version=4)
        expected = to_notebook(source)
        have = [(c.cell_type, c.source) for c in committed.cells]
        want = [(c.cell_type, c.source) for c in expected.cells]
        if have != want:
            first = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
            problems.append(Problem(name, f"out of sync with {source.name} from cell {first} "
                                          f"({len(have)} cells committed, {len(want)} in the source): "
                                          f"re-run `python docs/notebooks.py execute {source.stem}`"))
            continue
        for i, cell in enumerate(committed.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if cell.get("execution_count") is None:
                problems.append(Problem(name, f"cell {i} was never executed"))
                break
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if errors:
                problems.append(Problem(name, f"cell {i} raised {errors[0].get('ename')}: "
                                              f"{errors[0].get('evalue', '')[:200]}"))
                break
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute sources as notebooks and write .ipynb files")
    ex.add_argument("names", nargs="*", help="notebook numbers or stems (default: all)")
    ex.add_argument("--fast", action="store_true", help="QLANDSCAPE_FAST=1 smoke settings (needs --out)")
    ex.add_argument("--out", type=Path, help="folder for the .ipynb files (default: next to the sources)")
    ex.add_argument("--timeout", type=int, default=7200, help="seconds per cell (default 7200)")
    sub.add_parser("check", help="check the committed .ipynb files against their sources")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = check()
        for p in problems:
            print(f"{p.notebook}: {p.reason}")
        print(f"{len(sources()) - len({p.notebook for p in problems})}/{len(sources())} notebooks in sync and executed")
        return 1 if problems else 0
    if args.fast and args.out is None:
        parser.error("--fast writes smoke runs, which must not replace the committed full runs: give --out DIR")
    failed = 0
    for source in select(args.names):
        out = (args.out or NOTEBOOKS) / f"{source.stem}.ipynb"
        try:
            seconds = execute(source, out, fast=args.fast, timeout=args.timeout)
            print(f"{source.name} -> {out} ({seconds / 60:.1f} min)", flush=True)
        except Exception as exc:  # report every notebook, then fail
            failed += 1
            print(f"{source.name}: FAILED ({type(exc).__name__}: {str(exc)[-400:]}); partial output in {out}",
                  file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
