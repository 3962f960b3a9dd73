"""Baseline methods (SPOS, Cream, DNA), each a method object plugged into the shared engine.

Importing this package registers every baseline in `ennas.methods.METHODS`.
"""

from baselines import (
    cream,  # noqa: F401
    dna,  # noqa: F401
    spos,  # noqa: F401
)
from ennas import ennas_method  # noqa: F401  (registers ennas, ennas-wo-ds)
