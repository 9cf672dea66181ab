"""Checksums of published sweep runs: a run is *done* only while every file it published is intact.

A worker writes ``manifest.json`` into a run directory last, just before publishing it: the SHA-256 and
size of every file the run holds (``run.json``, ``metrics.json``, ``arrays.npz``, the run's log, its
job steps and stamps; not the lock file). :func:`verify_run` checks a published run against it, and
:func:`move_aside` takes a damaged run out of ``runs/`` into ``damaged/`` (never deleting anything) so
that the next ``sweep run`` computes it again.

Runs published before manifests existed (no ``manifest.json``) are checked by reading their record files:
``run.json`` and ``metrics.json`` must parse as JSON objects and every array of ``arrays.npz`` must load.
"""

from __future__ import annotations

import json
import os
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
DAMAGED_DIR = "damaged"
_EXCLUDED = {".lock", MANIFEST}


def _files(run_dir: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``run_dir`` (sorted), the manifest and lock excluded."""
    out = []
    for dirpath, _, names in os.walk(run_dir):
        for name in names:
            rel = Path(dirpath, name).relative_to(run_dir).as_posix()
            if rel not in _EXCLUDED:
                out.append(rel)
    return sorted(out)


def write_manifest(run_dir: Path) -> dict[str, Any]:
    """Write ``run_dir/manifest.json`` (atomically): ``{"format": 1, "files": {path: {"sha256", "bytes"}}}``
    for every file now in ``run_dir``; returns it."""
    from ..rundir import sha256_file, write_json
    run_dir = Path(run_dir)
    files = {rel: {"sha256": sha256_file(run_dir / rel), "bytes": (run_dir / rel).stat().st_size}
             for rel in _files(run_dir)}
    record = {"format": MANIFEST_FORMAT, "files": files}
    write_json(run_dir / MANIFEST, record)
    return record


def verify_run(run_dir: Path) -> Optional[str]:
    """Why the published run in ``run_dir`` cannot be trusted, or None when it is intact.

    Parameters
    ----------
    run_dir : Path
        ``DIR/runs/<dirname>``.

    Returns
    -------
    str or None
        One phrase naming the first problem found, e.g. ``"metrics.json does not match its checksum
        (truncated or modified)"``, ``"arrays.npz is missing"``, ``"manifest.json is unreadable"``.
    """
    from ..rundir import sha256_file
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.exists():
        return _verify_legacy(run_dir)
    try:
        record = json.loads(path.read_bytes())
        files = record["files"]
        if record.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for rel, entry in sorted(files.items()):
        target = run_dir / rel
        if not target.is_file():
            return f"{rel} is missing"
        try:
            if target.stat().st_size != entry["bytes"] or sha256_file(target) != entry["sha256"]:
                return f"{rel} does not match its checksum (truncated or modified)"
        except (OSError, KeyError, TypeError):
            return f"{rel} cannot be read"
    return None


def _verify_legacy(run_dir: Path) -> Optional[str]:
    """The check of a run published without a manifest: its record files parse and its arrays load."""
    import numpy as np
    for name in ("run.json", "metrics.json"):
        try:
            value = json.loads((run_dir / name).read_bytes())
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError):
            return f"{name} is unreadable (no {MANIFEST}: published by an older version)"
        if not isinstance(value, dict):
            return f"{name} is not a JSON object"
    try:
        with np.load(run_dir / "arrays.npz") as z:
            for key in z.files:
                z[key]
    except FileNotFoundError:
        return "arrays.npz is missing"
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return f"arrays.npz is unreadable (no {MANIFEST}: published by an older version)"
    return None


def move_aside(root: Path, run_dir: Path) -> Path:
    """Move a damaged published run ``run_dir`` to ``root/damaged/<name>.<UTC time>`` (kept, never deleted);
    returns the new path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = Path(root) / DAMAGED_DIR / f"{run_dir.name}.{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(run_dir, target)
    return target
