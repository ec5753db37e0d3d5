"""Where vidclass finds its assets.

Every location is configurable, by explicit argument (CLI flags) first, then environment
variable, then the repository's own folders, so an operator can point vidclass at the
original project's `models_enhanced/`, `features_enhanced/` and `data/processed/test/`.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _resolve(override: str | os.PathLike | None, env_var: str, default: Path) -> Path:
    if override:
        return Path(override)
    value = os.environ.get(env_var)
    return Path(value) if value else default


def models_dir(override: str | os.PathLike | None = None) -> Path:
    return _resolve(override, "VIDCLASS_MODELS_DIR", REPO_ROOT / "models_enhanced")


def features_dir(override: str | os.PathLike | None = None) -> Path:
    return _resolve(override, "VIDCLASS_FEATURES_DIR", REPO_ROOT / "features_enhanced")


def processed_dir(override: str | os.PathLike | None = None) -> Path:
    return _resolve(override, "VIDCLASS_PROCESSED_DIR", REPO_ROOT / "data" / "processed" / "test")
