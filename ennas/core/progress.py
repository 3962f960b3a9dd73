"""Progress of long stages without a terminal: one line at most every `every_s` seconds, on rank 0.

On a terminal the stages draw tqdm bars; in a log file (a cluster job, nohup) a bar's redraws would be
thousands of carriage-return frames, so the search, DNA's ratings and the ground truth print a plain
line instead, with the rate and, where the total is known, the time left.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import timedelta
from pathlib import Path

from ennas.core import distributed as dist

RUN_FOLDER = re.compile(r".+-[a-z0-9_]+-seed\d+")  # the harness's <label>-<space>-seed<N>


def run_name(ctx) -> str:
    """What the console calls a run (`ctx`: a RunContext): its folder's <label>-<space>-seed<N>, so ennas-beta0 is
    not mistaken for ennas, else the configuration's method, space and seed (a --run-dir of another name)."""
    folder = Path(ctx.out).name
    return folder if RUN_FOLDER.fullmatch(folder) else f"{ctx.cfg.method}-{ctx.cfg.space}-seed{ctx.cfg.seed}"


class Ticker:
    """Counts work items of one stage and prints `[label] done/total ... eta` now and then."""

    def __init__(self, label: str, total: int | None = None, every_s: float = 30.0, enabled: bool = True) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.enabled = enabled and dist.is_main() and not sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.done = 0

    def tick(self, count: int = 1) -> str | None:
        """Add `count` finished items; returns (and prints) the line when one is due."""
        self.done += count
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every_s:
            return None
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        left = f" eta {timedelta(seconds=round((self.total - self.done) / rate))}" if self.total and rate else ""
        line = f"[{self.label}] {self.done}{of} done, {rate:.2f}/s{left}"
        print(line, file=sys.stderr, flush=True)
        return line
