"""REPORT.md's cost section: device-hours by kind from the runs, and the isolated timings of benchmark.perf.

The method's supernet cost is the stage less the measurement probes and less DNA's teacher; the claim itself is
decided by isolated, interleaved epoch timings (`perf_costs.json`, benchmark.perf_costs), not by the runs' own
times, which ran two at a time.
"""

from __future__ import annotations

import json

from benchmark.claims import PERF_COSTS, fmt
from benchmark.results import Results
from benchmark.tables import md_table, mean_sd

COST_COLUMNS = {  # run column -> REPORT.md header (device-hours, mean over complete seeds)
    "supernet_train_s": "method's supernet cost",
    "epoch_start_device_s": "of which epoch start (ζ)",
    "probe_device_s": "probes (not counted)",
    "teacher_device_s": "DNA teacher (one-time, not counted)",
    "search_device_s": "search",
    "retrain_device_s": "retraining",
}


def cost_table(res: Results) -> str:
    """Device-hours per label and space (mean over complete seeds) by kind, GPU-days where the runs used CUDA.

    The method's supernet cost is the stage less the measurement probes and less DNA's teacher (the paper's DNA
    loads a pretrained one); EnNAS's ζ estimate stays in it (a run logged before the split has '—' there and
    its ζ time inside the probes). The times are those of the reference runs, two at a time on one machine.
    """
    rows = []
    for space, label in dict.fromkeys(zip(res.runs["space"], res.runs["label"])):
        ok = res.runs[(res.runs["space"] == space) & (res.runs["label"] == label) & (res.runs["status"] == "ok")]
        if len(ok):
            h = {k: mean_sd(ok[k])[0] / 3600 for k in COST_COLUMNS}
            cuda = bool(ok["cuda"].notna().all())
            rows.append([space, label, len(ok)] + [fmt(v, 3, False) for v in h.values()])
            rows[-1].append(fmt(h["supernet_train_s"] / 24, 2, False) if cuda else "— (CPU runs: no GPU-days)")
    header = ["space", "label", "n", *(f"{v} (device-h)" for v in COST_COLUMNS.values()), "supernet GPU-days"]
    return md_table(header, rows)


def perf_lines(res: Results) -> list[str]:
    """The isolated epoch ratios and the probes' share (benchmark.perf's cost_ratio and probe_share), if measured."""
    path = res.root / PERF_COSTS
    perf = json.loads(path.read_text()) if path.is_file() else {}
    lines = []
    ratios = perf.get("cost_ratio", {})
    if ratios:
        lines += [
            f"Supernet epochs measured in isolation ({PERF_COSTS}: {ratios['what']}, {ratios['rounds']} rounds):",
            "",
        ]
        lines += [
            f"- {key.removesuffix('_over_spos')} / spos: {r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
            for key, r in ratios.items()
            if key.endswith("_over_spos")
        ]
        lines.append("")
    shares = perf.get("probe_share", {})
    if shares:
        lines += ["The probes' share of a KD method's supernet stage (not counted in its cost):", ""]
        for key, r in shares.items():
            if isinstance(r, dict) and "stage_share" in r:
                s = r["settings"]
                lines.append(
                    f"- {key}: {r['stage_share']:.1%} ({s['probe_sets']} sets, {s['probe_images']} images, every "
                    f"{s['probe_every']} epoch(s); predicted teacher s.e. {r['predicted_teacher_se']:.2f} points)"
                )
        lines.append("")
    return lines


def teacher_lines(res: Results) -> list[str]:
    """DNA's trained-once teachers that the runs loaded (from final.json): which, how accurate, their one-time cost.

    A loaded teacher costs DNA's runs nothing (the paper's is pretrained), so its training is a figure of its own,
    once per teacher however many runs share it; a teacher trained inside a run is the cost table's column.
    """
    teachers: dict[str, dict] = {}
    for run in res.runs[(res.runs["label"] == "dna") & (res.runs["status"] == "ok")].itertuples():
        extras = res.final(run.folder).get("extras") or {}
        if extras.get("teacher_kind") in ("committed", "checkpoint"):
            t = teachers.setdefault(extras["teacher_fingerprint"], {"extras": extras, "runs": 0})
            t["runs"] += 1
    lines = []
    for fp, t in teachers.items():
        e, cost, acc = t["extras"], t["extras"].get("teacher_train_device_s"), t["extras"].get("teacher_test_top1")
        trained = f"trained once in {cost / 3600:.3f} device-h" if cost else "trained elsewhere (a checkpoint)"
        accuracy = f"test top-1 {acc:.2f} %, " if acc is not None else ""
        lines.append(
            f"- DNA's teacher `{e['teacher_source']}` (fingerprint {fp}): {accuracy}{trained}, loaded by {t['runs']} "
            "run(s); not in DNA's cost, as the paper's pretrained teacher is not."
        )
    return lines + [""] if lines else []
