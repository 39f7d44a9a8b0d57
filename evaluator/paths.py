"""Where things live: the repository root and the checkpoint cache."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root(start: Path | None = None) -> Path:
    """The benchmark repository: ``$APB_ROOT``, else the nearest parent of *start* (default: cwd) that holds
    ``submissions/`` and ``taxonomy/``, else the checkout this package was installed from."""
    if os.environ.get("APB_ROOT"):
        return Path(os.environ["APB_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "submissions").is_dir() and (candidate / "taxonomy").is_dir():
            return candidate
    return PACKAGE_DIR.parent


def cache_dir() -> Path:
    """Content-addressed checkpoint cache: ``$APB_CACHE_DIR``, else the user cache dir."""
    if os.environ.get("APB_CACHE_DIR"):
        return Path(os.environ["APB_CACHE_DIR"]).expanduser().resolve()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("apb")) / "checkpoints"
