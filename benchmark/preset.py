"""Preset files (benchmark/presets/NAME.json or any JSON path): found and read here, passed down as dicts."""

from __future__ import annotations

import json
from pathlib import Path

from ennas.core.config import ConfigError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    """Names of the preset files shipped in benchmark/presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> dict:
    """A preset's values by name (benchmark/presets/NAME.json) or by path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; known: {', '.join(list_presets())}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"preset {path} cannot be read as JSON: {err}") from None
