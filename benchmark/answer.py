"""The answer on one screen: each of the paper's claims in plain words, the paper's figure, ours and the verdict.

`benchmark.report` writes it as `answer.md` beside REPORT.md and puts it at REPORT.md's top; the README's front
page carries the committed reference run's copy, which `tests/test_docs.py` keeps equal to
`results/proxy/answer.md`, so the front page cannot drift from the report it summarises.
"""

from __future__ import annotations

from benchmark.tables import md_table

# claim id -> the claim in plain words, in the order shown ("…" continues the line above)
PLAIN = {
    "top1_avg": "EnNAS finds more accurate architectures than the baselines, on average",
    "top1_vs_spos": "… than SPOS",
    "top1_max": "… its largest gain over any one baseline",
    "gap_positive": "its ensemble teacher is above its students",
    "gap_vs_cream": "that gap is larger than Cream's",
    "teacher_vs_cream": "its teacher is more accurate than Cream's",
    "ds_teacher": "diversity sampling makes the teacher more accurate",
    "ds_diversity": "diversity sampling makes the sets more diverse",
    "cost_vs_spos": "its supernet costs what SPOS's does",
}
GROUPS = ("claim", "check")  # the cost claim's co-scheduled twin (group cost-coscheduled) is not the claim


def _paper(c: dict) -> str:
    """The paper's figure, with its scaled value where the two differ; the ratio for the cost claim."""
    shown = c["shown"]
    if c["test"] == "equivalence":
        return f"ratio {shown['paper']}"
    if c["paper"] is None:
        return "(no figure)"
    return shown["paper"] + (f" (scaled {shown['scaled']})" if shown["scaled"] != shown["paper"] else "")


def _isolated(c: dict) -> bool:
    """Whether the claim is the cost claim measured by isolated timings (its n counts rounds, not seeds)."""
    return c["test"] == "equivalence" and not c["seeds"]


def _ours(c: dict) -> str:
    """Our estimate and its 95 % interval; the cost claim says it is measured by isolated timings, not runs."""
    return f"{c['shown']['mean']} {c['shown']['interval']}" + (" (isolated timings)" if _isolated(c) else "")


def _verdict(c: dict) -> str:
    """The verdict; an inconclusive one with why where a held one fell to its permutation null, the effect it
    could have seen and the sample it would need."""
    if c["verdict"] != "inconclusive":
        return c["verdict_label"]
    unit = "rounds" if _isolated(c) else "seeds"
    need = f", {c['n_needed']} {unit} for Δ" if c.get("n_needed") else ""
    why = f"not above the label-permutation null (p = {c['null']['p']:.2f}); " if c.get("held_below_null") else ""
    return f"inconclusive: {why}MDE {c['shown']['mde']} at n = {c['n']}{need}"


def answer_rows(claims: list[dict]) -> list[list[str]]:
    """One row per claim of PLAIN that was judged (per space where several were), in PLAIN's order."""
    judged = [c for c in claims if c.get("group") in GROUPS and c.get("id") in PLAIN and "shown" in c]
    spaces = {c["space"] for c in judged if c["space"] != "all"}
    rows = []
    for cid, text in PLAIN.items():
        for c in (c for c in judged if c["id"] == cid):
            where = f" ({c['space']})" if len(spaces) > 1 and c["space"] != "all" else ""
            rows.append([text + where, _paper(c), _ours(c), _verdict(c)])
    return rows


def answer_md(claims: list[dict]) -> str:
    """The table as markdown (claim, paper, ours, verdict); empty where no claim could be judged."""
    rows = answer_rows(claims)
    return md_table(["claim", "paper", "ours", "verdict"], rows) if rows else ""
