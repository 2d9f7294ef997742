"""The evaluation's outputs: report.json, PNG plots (matplotlib Agg), thresholds.toml, a table."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from tools.eval.augment import LEVELS


def slug(space: str) -> str:
    """A file-name-safe form of a space name: ``image:effnet-lite0`` -> ``image_effnet-lite0``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", space).strip("_")


def public(metrics: dict) -> dict:
    """Metrics without the raw arrays (keys starting with ``_``)."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


def write_json(path: Path, report: dict) -> None:
    """JSON with NaN/inf as null, so strict parsers accept it."""
    path.write_text(json.dumps(_finite(report), indent=2, sort_keys=False) + "\n")


def plot_pr(out_dir: Path, modality: str, space: str, scored: dict) -> Path:
    """One figure per space: a precision/recall curve per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for level in LEVELS:
        m = scored.get((space, level))
        if m is None:
            continue
        p, r = m["_pr"]
        ax.plot(r, p, label=f"{level} (AP {m['micro_ap']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01),
           title=f"{modality}: {space}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    path = out_dir / f"pr_{modality}_{slug(space)}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_hist(out_dir: Path, modality: str, space: str, scored: dict,
              thresholds: dict[str, float]) -> Path:
    """Scores of true matches vs the best score of non-matches, one panel per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [lv for lv in LEVELS if (space, lv) in scored]
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.6), dpi=100, squeeze=False)
    for ax, level in zip(axes[0], levels):
        m = scored[(space, level)]
        pos, neg = m["_pos_scores"], m["_neg_scores"]
        finite = np.concatenate([pos[np.isfinite(pos)], neg[np.isfinite(neg)]])
        lo = float(finite.min()) if len(finite) else 0.0
        bins = np.linspace(lo, 1.0, 50)
        ax.hist(neg[np.isfinite(neg)], bins=bins, alpha=0.6, label=f"non-match best (n={len(neg)})",
                color="tab:red", density=True)
        ax.hist(pos[np.isfinite(pos)], bins=bins, alpha=0.6, label=f"match (n={len(pos)})",
                color="tab:blue", density=True)
        for name, t in thresholds.items():
            ax.axvline(t, color="k", ls="--", lw=1)
            ax.text(t, ax.get_ylim()[1] * 0.5, f" {name}", fontsize=7, rotation=90, va="center")
        ax.set(title=f"{space} — {level}", xlabel="similarity")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    path = out_dir / f"hist_{modality}_{slug(space)}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def table(rows: list[dict]) -> str:
    """A fixed-width table: space x level -> recall@1, microAP, R@1%FMR, R@0.1%FMR, thresholds."""
    head = ("modality", "space", "level", "R@1", "microAP", "R@1%FMR", "R@.1%FMR", "thr@.1%", "negs")
    fmt = "{:<8} {:<22} {:<7} {:>6} {:>8} {:>8} {:>9} {:>9} {:>6}"
    lines = [fmt.format(*head), "-" * 92]
    for r in rows:
        f1, f01 = r["at_fmr"].get("0.01", {}), r["at_fmr"].get("0.001", {})
        thr = f01.get("threshold", float("nan"))
        thr_s = f"d<={r['hamming_at_0.001']}" if "hamming_at_0.001" in r else f"{thr:.4f}"
        lines.append(fmt.format(
            r["modality"], r["space"] + (" *" if r.get("smoke") else ""), r["level"],
            f"{r['recall_at_1']:.3f}", f"{r['micro_ap']:.3f}", f"{f1.get('recall', float('nan')):.3f}",
            f"{f01.get('recall', float('nan')):.3f}", thr_s, r["n_negative"]))
    return "\n".join(lines)


def plot_summary(out_dir: Path, modality: str, rows: list[dict], fmr_key: str = "0.001") -> Path:
    """Bars: recall at the given false-match rate, per level, one bar per space (PDQ beside)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["modality"] == modality]
    spaces = list(dict.fromkeys(r["space"] for r in rows))
    levels = [lv for lv in LEVELS if any(r["level"] == lv for r in rows)]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(levels), 3.6), dpi=100)
    width = 0.8 / max(len(spaces), 1)
    for j, space in enumerate(spaces):
        vals = [next((r["at_fmr"][fmr_key]["recall"] for r in rows
                      if r["space"] == space and r["level"] == lv), np.nan) for lv in levels]
        xs = np.arange(len(levels)) + (j - (len(spaces) - 1) / 2) * width
        bars = ax.bar(xs, vals, width, label=space + (" (smoke)" if rows and any(
            r["smoke"] for r in rows if r["space"] == space) else ""))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(levels)), levels)
    ax.set(ylim=(0, 1.1), ylabel=f"recall at FMR {float(fmr_key):g}", title=f"{modality} near-duplicates")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    path = out_dir / f"summary_{modality}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- the image benchmark through the service (tools.eval.imagebench) -------------------------

def _fmt_rate(d: dict | None, digits: int = 3) -> str:
    if not d or d.get("rate") is None:
        return "-"
    return f"{d['rate']:.{digits}f}"


def _ci(d: dict, key: str = "ci95_exact", digits: int = 5) -> str:
    lo, hi = d.get(key, (float("nan"), float("nan")))
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def image_thresholds_toml(image: dict) -> list[str]:
    """``[spaces."<name>"]`` entries in dedup.config's format, with the held-out evidence."""
    v = image["verdicts"]["heldout_at_calibrated"]["wrong_label"]
    done = image.get("answered", {}).get("heldout", {})
    lines = [] if image.get("complete", True) else [
        f"# UNFINISHED RUN: {done.get('answered')} of {done.get('planned')} held-out queries "
        "answered (a random sample of them); finish with --resume."]
    lines += ["# Image spaces: calibrated by dedup-eval through the service (one global threshold per",
             "# space at the target false-match rate on the calibration half), reported on the",
             "# held-out half (other source pictures). A match is score >= threshold (cosine;",
             "# 1 - hamming/bits for binary spaces). 95% intervals are exact (Clopper-Pearson).",
             f"# Held-out verdict false matches (any label but the true seed's, all spaces together): "
             f"{v['all']['k']}/{v['all']['n']} lookups = {_fmt_rate(v['all'], 5)} {_ci(v['all'])}; "
             f"negatives {v['negatives']['k']}/{v['negatives']['n']} {_ci(v['negatives'])}"]
    for space, r in image["spaces"].items():
        cal, ho = r["calibration"], r["heldout"]
        rec = ho["recall"]
        levels = ", ".join(f"{lv} {_fmt_rate(x)}" for lv, x in rec["by_level"].items())
        lines += [
            "",
            f"# {space}: target false-match rate {cal['target_fmr']:g} on {cal['n_negative']} "
            f"calibration negatives ({cal['negatives_allowed_above']} allowed above, achieved "
            f"{cal['achieved_fmr']:.5f})",
            f"# held-out false-match rate {_fmt_rate(ho['fmr'], 5)} ({ho['fmr']['k']}/{ho['fmr']['n']} "
            f"negative queries), 95% CI {_ci(ho['fmr'])}",
            f"# held-out recall {_fmt_rate(rec['all'], 4)} over {rec['all']['n']} positives ({levels})",
            f"# measured model: {r['model_id']}",
        ]
        if cal.get("hamming_threshold") is not None:
            lines.append(f"# Hamming distance <= {cal['hamming_threshold']} of {r['binary_bits']} bits")
        lines += [f'[spaces."{space}"]', f'model = "{space}"', f"threshold = {cal['threshold']!r}"]
    return lines


def image_table(image: dict) -> str:
    """Terminal tables: per space and level, per edit type, and the service's verdicts."""
    spaces = list(image["spaces"])
    out = []
    if not image.get("complete", True):
        done = image["answered"]["heldout"]
        out.append(f"UNFINISHED: {done['answered']} of {done['planned']} held-out queries answered "
                   "(a random sample); finish with --resume\n")
    head = "{:<22} {:>9} {:>26} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6}"
    out.append(head.format("space", "threshold", "held-out FMR [95% CI]", "easy", "medium",
                           "hard", "| @.1%:", "easy", "medium", "hard"))
    out.append("-" * 118)
    for sp in spaces:
        ho = image["spaces"][sp]["heldout"]
        thr = ho["threshold"]
        thr_s = f"d<={ho['hamming_threshold']}" if "hamming_threshold" in ho else f"{thr:.4f}"
        fmr = f"{ho['fmr']['k']}/{ho['fmr']['n']} {_ci(ho['fmr'], digits=4)}"
        free = ho.get("threshold_free", {}).get("recall", {}).get("by_level", {})
        out.append(head.format(sp, thr_s, fmr, *(_fmt_rate(ho["recall"]["by_level"].get(lv))
                                                   for lv in LEVELS), "",
                               *(_fmt_rate(free.get(lv)) for lv in LEVELS)))
    out.append("(recall at the calibrated threshold, then threshold-free recall at the target FMR "
               "on the held-out negatives)")
    v = image["verdicts"]["heldout_at_calibrated"]
    w = v["wrong_label"]
    out.append("")
    out.append(f"service verdicts at the calibrated thresholds (held-out): wrong-label lookups "
               f"{w['all']['k']}/{w['all']['n']} = {_fmt_rate(w['all'], 5)} {_ci(w['all'])}; "
               f"negatives {w['negatives']['k']}/{w['negatives']['n']} {_ci(w['negatives'])}; "
               f"positives {w['positives']['k']}/{w['positives']['n']}")
    out.append("  true-label recall: " + ", ".join(
        f"{lv} {_fmt_rate(x)}" for lv, x in v["recall"]["by_level"].items()))
    s = image["verdicts"]["calibration_at_shipped"]["wrong_label"]
    out.append(f"  (shipped thresholds, calibration half: wrong-label lookups {s['all']['k']}/"
               f"{s['all']['n']} = {_fmt_rate(s['all'], 4)}; negatives {s['negatives']['k']}/"
               f"{s['negatives']['n']}, positives {s['positives']['k']}/{s['positives']['n']})")
    out.append("")
    cols = spaces + ["verdict", "wrong"]
    fmt = "{:<15}" + " {:>20}" * len(cols)
    out.append(fmt.format("edit", *[c[-20:] for c in cols]))
    out.append("-" * (15 + 21 * len(cols)))
    for e in v["recall"]["by_edit"]:
        row = [_fmt_rate(image["spaces"][sp]["heldout"]["recall"]["by_edit"].get(e)) for sp in spaces]
        row.append(_fmt_rate(v["recall"]["by_edit"].get(e)))
        we = w["by_edit"].get(e)
        row.append(f"{we['k']}/{we['n']}" if we else "-")
        out.append(fmt.format(e, *row))
    out.append("(held-out recall at the calibrated thresholds per edit type, all levels; verdict = "
               "the service matched the true label; wrong = lookups matching a wrong label)")
    return "\n".join(out)


def plot_image_hist(out_dir: Path, space: str, sc, threshold: float) -> Path:
    """Held-out scores: true seed (positives) vs best neighbour (negatives), one panel per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LEVELS), figsize=(4 * len(LEVELS), 3.6), dpi=100, squeeze=False)
    for ax, level in zip(axes[0], LEVELS):
        sel = (sc.level == level) & ~sc.error
        pos = sc.true[space][sel & sc.pos]
        neg = sc.best[space][sel & ~sc.pos]
        finite = np.concatenate([pos[np.isfinite(pos)], neg[np.isfinite(neg)]])
        lo = float(finite.min()) if finite.size else 0.0
        bins = np.linspace(lo, 1.0, 60)
        ax.hist(neg[np.isfinite(neg)], bins=bins, alpha=0.6, color="tab:red", density=True,
                label=f"negative best (n={neg.size})")
        ax.hist(pos[np.isfinite(pos)], bins=bins, alpha=0.6, color="tab:blue", density=True,
                label=f"true seed (n={pos.size})")
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.set(title=f"{space} — {level}", xlabel="score", yscale="log")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    path = out_dir / f"hist_image_{slug(space)}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_image_recall(out_dir: Path, image: dict, by: str) -> Path:
    """Held-out recall at the calibrated thresholds per edit type or level: one bar per space
    and one for the service's verdict (true label matched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = {"edit": "by_edit", "level": "by_level"}[by]
    v = image["verdicts"]["heldout_at_calibrated"]["recall"][key]
    groups = list(v)
    series = {sp: r["heldout"]["recall"][key] for sp, r in image["spaces"].items()}
    series["service verdict"] = v
    fig, ax = plt.subplots(figsize=(2 + 0.75 * len(groups) * max(1, len(series) / 2), 4), dpi=100)
    width = 0.8 / len(series)
    for j, (name, vals) in enumerate(series.items()):
        ys = [(vals.get(g) or {}).get("rate") or 0.0 for g in groups]
        xs = np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=45 if by == "edit" else 0, ha="right"
                  if by == "edit" else "center", fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="held-out recall at calibrated threshold",
           title=f"image near-duplicates by {by}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    path = out_dir / f"recall_image_by_{by}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
