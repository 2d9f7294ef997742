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
