"""Importing this module registers every method: EnNAS's two (`ennas.method`) and the baselines."""

import baselines  # noqa: F401
import ennas.method  # noqa: F401
from ennas.core.method import METHODS

__all__ = ["METHODS"]
