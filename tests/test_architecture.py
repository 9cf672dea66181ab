"""The package's layering, read from the source: library packages never import the job layer, and no module
uses another package's private names.

Layers, bottom to top: the library (every module outside the three below), ``jobs/`` (the commands' jobs
on the public step API), ``sweep/`` (sweeps run the jobs' steps), then ``cli.py``. A module may import
from its own layer and the layers below; ``qlandscape/__init__.py`` re-exports the public API of every
layer (lazily) and is not a layer of its own. "Private" is a name with one leading underscore; a
*package* is a folder under ``qlandscape/`` (the modules directly in ``qlandscape/`` form the root package).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qlandscape"
LAYERS = {"jobs": 1, "sweep": 2, "cli": 3}  # everything else: 0 (the library)


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str, is_init: bool) -> str:
    """Package of a module: ``qlandscape.ntk.kernel`` -> ``ntk``; ``qlandscape.ntk`` (its __init__) -> ``ntk``;
    ``qlandscape.config`` (a package) -> ``config``; ``qlandscape.losses`` -> "" (the root package)."""
    parts = module.split(".")
    if len(parts) >= 3 or (is_init and len(parts) == 2):
        return parts[1]
    return ""


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) >= 2 else -1


def _imports(path: Path) -> Iterator[tuple[str, str, int]]:
    """``(imported module, imported name or "", line)`` for every import in the file, relative ones resolved."""
    module, is_init = _module(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                yield a.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_init else module.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            for a in node.names:
                aliases[a.asname or a.name] = f"{base}.{a.name}"
                yield base, a.name, node.lineno
    for node in ast.walk(tree):  # module._private through an imported module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = aliases[node.value.id]
            if target.startswith("qlandscape"):
                yield target, node.attr, node.lineno


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_source_tree_is_found():
    modules = {_module(p) for p in _sources()}
    assert {"qlandscape.jobs.steps", "qlandscape.jobs.training", "qlandscape.sweep.worker", "qlandscape.cli",
            "qlandscape.config.checks"} <= modules
    assert "qlandscape.pipeline" not in modules  # the job layer is qlandscape.jobs


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    module = _module(path)
    if module == "qlandscape":
        return  # the top-level API re-exports every layer
    own = _layer(module)
    upward = [f"line {line}: {target}{'.' + name if name else ''}" for target, name, line in _imports(path)
              if target.startswith("qlandscape") and _layer(target if target != "qlandscape" else
                                                           f"qlandscape.{name}") > own]
    assert not upward, f"{module} (layer {own}) imports a layer above it: {upward}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_uses_a_private_name_of_another_package(path):
    module, is_init = _module(path), path.name == "__init__.py"
    own = _package(module, is_init)
    found = []
    for target, name, line in _imports(path):
        if not target.startswith("qlandscape") or not name.startswith("_") or name.startswith("__"):
            continue
        target_is_package = (PACKAGE.parent / target.replace(".", "/") / "__init__.py").exists()
        if _package(target, target_is_package) != own:
            found.append(f"line {line}: {target}.{name}")
    assert not found, f"{module} uses private names of another package: {found}"


def test_the_checks_catch_what_they_are_written_for(tmp_path):
    """The two checks fail on a library module that imports the job layer or another package's private name."""
    pkg = tmp_path / "qlandscape"
    (pkg / "ntk").mkdir(parents=True)
    (pkg / "jobs").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "ntk" / "__init__.py").write_text("")
    bad = pkg / "ntk" / "bad.py"
    bad.write_text("from .. import jobs\nfrom ..config import _check_int\nfrom ..jobs.steps import step\n")
    globals()["PACKAGE"] = pkg  # the helpers read the module-level PACKAGE
    try:
        with pytest.raises(AssertionError, match="imports a layer above it"):
            test_no_module_imports_a_layer_above_its_own(bad)
        with pytest.raises(AssertionError, match=r"private names of another package.*_check_int"):
            test_no_module_uses_a_private_name_of_another_package(bad)
    finally:
        globals()["PACKAGE"] = Path(__file__).resolve().parent.parent / "qlandscape"
