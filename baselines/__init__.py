"""Baseline methods (SPOS, Cream, DNA), each a method object plugged into the shared engine.

Importing this package registers every baseline in `ennas.core.method.METHODS`.
"""

from baselines import (
    cream,  # noqa: F401
    dna,  # noqa: F401
    spos,  # noqa: F401
)
