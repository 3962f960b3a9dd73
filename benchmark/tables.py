"""Two small helpers every report table uses: the mean and sd of a column, and a markdown table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark.results import NAN


def mean_sd(series: pd.Series) -> tuple[float, float]:
    """Mean and sample sd (NaN below two values) of the finite values."""
    x = series.to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    return (float(x.mean()) if len(x) else NAN), (float(x.std(ddof=1)) if len(x) > 1 else NAN)


def md_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]) + "\n"
