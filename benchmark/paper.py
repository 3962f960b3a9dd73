"""The paper's numbers (Table 1) and claims (§1, §4) as plain data, for `benchmark.report` to test ours against.

Source: "Neural Architecture Search via Ensemble-based Knowledge Distillation" (EnNAS, ICLR 2022 submission),
ImageNet, 8 × 2080 Ti. Labels are this suite's method names (`ennas-wo-ds` is the paper's "EnNAS w/o DS").

How the Table 1 claims are read (checked against Table 1 in tests/test_report.py): "+1.2 % on average" is
EnNAS's top-1 minus the mean of the four other rows of its space (SPOS, Cream, DNA, EnNAS w/o DS), averaged
over s1-s3: (1.175 + 1.4 + 0.95) / 3 = 1.18 (with the three external baselines only it would be 1.42);
"+3.3 % at most" is the largest single difference, EnNAS − SPOS on s2 (78.4 − 75.1).
"""

from __future__ import annotations

from dataclasses import dataclass

NAMES = {"spos": "SPOS", "cream": "Cream", "dna": "DNA", "ennas-wo-ds": "EnNAS w/o DS", "ennas": "EnNAS"}
BASELINES = ("spos", "cream", "dna", "ennas-wo-ds")  # the rows EnNAS's Table 1 gains are taken against
# "The same GPU-days as SPOS": held if EnNAS's supernet costs under 5 % more than SPOS's (the check).
COST_MARGIN = 1.05


@dataclass(frozen=True)
class Table1Row:
    """One printed row of Table 1: top-1/top-5 (%), FLOPs (millions of multiply-adds), supernet GPU-days."""

    space: str
    label: str
    top1: float
    top5: float | None  # SPOS on s1 prints "-"
    mflops: float
    supervised: bool
    gpu_days: float


def _space(space: str, *rows: tuple) -> tuple[Table1Row, ...]:
    """Rows of one space in the paper's order: spos, cream, dna, ennas-wo-ds, ennas."""
    labels = ("spos", "cream", "dna", "ennas-wo-ds", "ennas")
    return tuple(Table1Row(space, label, *row) for label, row in zip(labels, rows, strict=True))


# Table 1, transcribed: (top-1, top-5, MFLOPs, supervised, GPU-days). The paper lists no params column.
TABLE1: tuple[Table1Row, ...] = (
    *_space(
        "s1",
        (74.7, None, 328, False, 12),
        (77.6, 93.3, 287, False, 16),
        (77.1, 93.3, 348, True, 4),
        (77.5, 93.5, 317, False, 12),
        (77.9, 93.6, 330, False, 12),
    ),
    *_space(
        "s2",
        (75.1, 92.5, 479, False, 14),
        (77.3, 93.0, 422, False, 19),
        (77.6, 93.1, 396, True, 5),
        (78.0, 93.6, 436, False, 14),
        (78.4, 93.8, 413, False, 14),
    ),
    *_space(
        "s3",
        (77.1, 93.3, 482, False, 17),
        (78.7, 93.7, 495, False, 22),
        (78.2, 93.2, 471, True, 7),
        (78.6, 93.4, 519, False, 17),
        (79.1, 94.2, 532, False, 17),
    ),
)


def table1_row(space: str, label: str) -> Table1Row | None:
    """The paper's Table 1 row for (space, label), or None where the paper has none."""
    return next((r for r in TABLE1 if r.space == space and r.label == label), None)


@dataclass(frozen=True)
class Claim:
    """One claim: the paper's figure, the quantity ours is computed from, and the side of the threshold claimed.

    `kind` says how per-seed values are formed from `quantity` (a final.json field or a last-supernet-epoch
    log field): `value` a; `diff` a − b (paired seeds); `ratio` a / b (paired seeds); `mean_gain` / `max_gain`
    a minus each label of b on the same space and seed, averaged (over b, then spaces) or maximised.
    """

    id: str
    text: str
    source: str
    paper: float | None  # the paper's figure, in `unit`
    quantity: str  # top1 | teacher_acc | student_acc | gap | diversity | supernet_train_s
    kind: str
    a: str
    b: tuple[str, ...] = ()
    direction: str = ">"
    threshold: float = 0.0
    unit: str = "points"
    digits: int = 2

    @property
    def per_space(self) -> bool:
        """Judged per search space (training-curve and cost claims) or pooled over spaces (Table 1 gains)."""
        return self.kind not in ("mean_gain", "max_gain")

    @property
    def labels(self) -> tuple[str, ...]:
        """Every run label the claim reads."""
        return (self.a, *self.b)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "top1_avg",
        "EnNAS improves top-1 of the searched architectures by 1.2 % on average over the baselines",
        "Abstract, §4.1, Table 1",
        1.2,
        "top1",
        "mean_gain",
        "ennas",
        BASELINES,
    ),
    Claim(
        "top1_max",
        "EnNAS improves top-1 by 3.3 % at most over the baselines",
        "Abstract, §1, Table 1",
        3.3,
        "top1",
        "max_gain",
        "ennas",
        BASELINES,
    ),
    Claim(
        "gap_vs_cream",
        "EnNAS's teachers are 5.8 points above their students, Cream's only 2.1",
        "§1, §4.2",
        5.8 - 2.1,
        "gap",
        "diff",
        "ennas",
        ("cream",),
    ),
    Claim(
        "teacher_vs_cream",
        "At the end of supernet training EnNAS's teacher is 4.5 points more accurate than Cream's",
        "§4.2, Fig. 1",
        4.5,
        "teacher_acc",
        "diff",
        "ennas",
        ("cream",),
    ),
    Claim(
        "ds_teacher",
        "Diversity-sampled ensemble teachers are 2.5 points above random-sampling ones (EnNAS w/o DS)",
        "§4.3",
        2.5,
        "teacher_acc",
        "diff",
        "ennas",
        ("ennas-wo-ds",),
    ),
    Claim(
        "cost_vs_spos",
        "EnNAS takes the same supernet GPU-days as SPOS (12/12, 14/14, 17/17)",
        "§4.1, Table 1",
        1.0,
        "supernet_train_s",
        "ratio",
        "ennas",
        ("spos",),
        direction="<",
        threshold=COST_MARGIN,
        unit="×",
        digits=3,
    ),
)

# Qualitative checks the paper's argument rests on; ennas-beta0 is EnNAS with ennas.beta = 0 (uniform
# sampling without repeats), which splits the diversity gain into "no repeats" and "ζ-based" parts.
CHECKS: tuple[Claim, ...] = (
    Claim("gap_positive", "EnNAS's ensemble teacher is above its students", "§4.2", 5.8, "gap", "value", "ennas"),
    Claim(
        "top1_vs_spos",
        "EnNAS's searched architecture is more accurate than SPOS's",
        "Table 1",
        None,
        "top1",
        "diff",
        "ennas",
        ("spos",),
    ),
    Claim(
        "ds_diversity",
        "Diversity-sampled sets are more diverse than random ones",
        "§4.3, Fig. 2",
        None,
        "diversity",
        "diff",
        "ennas",
        ("ennas-wo-ds",),
        unit="logit distance",
        digits=3,
    ),
    Claim(
        "control_repeats",
        "Control: sets without repeats (beta = 0) are more diverse than independent random sets",
        "control",
        None,
        "diversity",
        "diff",
        "ennas-beta0",
        ("ennas-wo-ds",),
        unit="logit distance",
        digits=3,
    ),
    Claim(
        "control_zeta",
        "Control: ζ-based sampling is more diverse than sampling without repeats alone (beta = 0)",
        "control",
        None,
        "diversity",
        "diff",
        "ennas",
        ("ennas-beta0",),
        unit="logit distance",
        digits=3,
    ),
)
