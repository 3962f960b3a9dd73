"""Does averaging supernet scores rank the ground truth better? (issue 13 study, calibration.md §11)

    python results/proxy/calibration/score_averaging.py [results/proxy]

Reads only committed files: each run's memoised per-epoch scores (`ranking_scores.jsonl`, the search's own
scoring of the 40 ground-truth architectures) and `groundtruth_s1.csv`. Prints, per label and seed, Kendall tau
against the 2-seed ground-truth means of the last epoch's score, of the mean score over epochs 3-5 and over all
epochs; then, per label, of the mean last-epoch score over the three seeds' supernets. If averaging does not help,
the supernets' disagreement with stand-alone training is systematic rather than noise of one supernet or epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

from benchmark.results import LABELS as REPORT_LABELS

LABELS = [label for label in REPORT_LABELS if label != "dna"]  # DNA's block ratings have no per-epoch scores
SEEDS = (0, 1, 2)


def scores(root: Path, label: str, seed: int) -> pd.DataFrame:
    """Architecture x epoch table of one run's search scores."""
    sc = pd.read_json(root / f"{label}-s1-seed{seed}" / "ranking_scores.jsonl", lines=True)
    return sc.pivot(index="arch", columns="epoch", values="score")


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "results/proxy")
    truth = pd.read_csv(root / "groundtruth_s1.csv").groupby("arch")["test_top1"].mean()
    tau = lambda s: kendalltau(s, truth.loc[s.index])[0]  # noqa: E731
    print("label seed: tau(last epoch) tau(mean of epochs 3-5) tau(mean of all epochs)")
    for label in LABELS:
        last = []
        for seed in SEEDS:
            p = scores(root, label, seed)
            last.append(p[p.columns.max()])
            late = p[[e for e in p.columns if e >= 3]].mean(axis=1)
            print(f"{label} {seed}: {tau(last[-1]):.3f} {tau(late):.3f} {tau(p.mean(axis=1)):.3f}")
        print(
            f"{label}, mean last-epoch score of {len(SEEDS)} supernets: {tau(pd.concat(last, axis=1).mean(axis=1)):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
