"""Progress bars (tqdm) that every long routine takes a ``progress`` switch for."""

from __future__ import annotations

import os
from typing import Any, Optional

from tqdm.auto import tqdm


def progress_bar(total: Optional[int], desc: str, enabled: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar, disabled when ``enabled`` is False or ``QLANDSCAPE_PROGRESS=0``."""
    disabled = (not enabled) or os.environ.get("QLANDSCAPE_PROGRESS", "1") == "0"
    kw.setdefault("leave", False)
    return tqdm(total=total, desc=desc, disable=disabled, dynamic_ncols=True, **kw)
