"""Helpers shared by the test modules (import as `from helpers import ...`)."""

from benchmark.preset import load_preset
from ennas.core.config import resolve


def preset_config(preset: str, overrides: dict | None = None, **top):
    """A resolved RunConfig from a shipped preset, as the CLI builds it."""
    return resolve(load_preset(preset), overrides, **top)
