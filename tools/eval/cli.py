"""``dedup-eval``: near-duplicate benchmark of every space vs PDQ, and threshold calibration.

Exit codes: 0 done; 2 bad arguments; 1 any other dedup error (e.g. a model failed to load).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from dedup.errors import DedupError, InvalidArgument
from tools.eval import report as rep
from tools.eval.augment import LEVELS
from tools.eval.metrics import hamming_radius_at_fmr
from tools.eval.dataset import build_image_benchmark, build_text_benchmark
from tools.eval.runner import (IMAGE_SPACES, SMOKE_SPACES, TEXT_SPACES, EvalSettings, calibrate,
                               run_images, run_texts, score_runs, thresholds_toml)


def _levels(value: str) -> tuple[str, ...]:
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in out if v not in LEVELS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"levels must be a comma list of {LEVELS}, got {value!r}")
    return tuple(sorted(set(out), key=LEVELS.index))


def _spaces(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _fmr(value: str) -> float:
    f = float(value)
    if not 0 < f < 1:
        raise argparse.ArgumentTypeError(f"a false-match rate is in (0, 1), got {value}")
    return f


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="dedup-eval", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("eval-out"), help="output directory")
    p.add_argument("--seed", type=int, default=0, help="one seed for split and augmentations")
    p.add_argument("--quick", action="store_true", help="few images and texts, one level (tests)")
    p.add_argument("--levels", type=_levels, default=None, help="comma list of mild,medium,hard")
    p.add_argument("--modality", choices=("image", "text", "both"), default="both")
    p.add_argument("--image-spaces", type=_spaces, default=IMAGE_SPACES)
    p.add_argument("--text-spaces", type=_spaces, default=TEXT_SPACES)
    p.add_argument("--target-fmr", type=_fmr, default=0.001, help="false-match rate to calibrate at")
    p.add_argument("--calib-levels", type=_levels, default=("mild", "medium"),
                   help="levels whose union the thresholds are chosen on")
    p.add_argument("--pos-copies", type=int, default=3, help="augmented copies per seed image")
    p.add_argument("--neg-copies", type=int, default=5, help="augmented copies per distractor image")
    p.add_argument("--k", type=int, default=5, help="neighbours per query (micro-AP predictions)")
    p.add_argument("--write-config", type=Path, default=None,
                   help="also write the calibrated [spaces.*] TOML here")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    return p


def settings_from(args: argparse.Namespace) -> EvalSettings:
    """EvalSettings from parsed arguments (quick mode shrinks the defaults)."""
    levels = args.levels or (("mild",) if args.quick else LEVELS)
    if min(args.pos_copies, args.neg_copies, args.k) < 1:
        raise InvalidArgument("--pos-copies, --neg-copies and --k must be >= 1")
    s = EvalSettings(seed=args.seed, levels=levels, image_spaces=args.image_spaces,
                     text_spaces=args.text_spaces, pos_copies=args.pos_copies,
                     neg_copies=args.neg_copies, k=args.k, target_fmr=args.target_fmr,
                     calib_levels=args.calib_levels, quick=args.quick)
    if args.quick:
        s.pos_copies, s.neg_copies = min(s.pos_copies, 2), min(s.neg_copies, 2)
    if s.target_fmr not in s.fmrs:
        s.fmrs = tuple(sorted({*s.fmrs, s.target_fmr}, reverse=True))
    return s


def run(args: argparse.Namespace) -> dict:
    """Build the benchmarks, measure every space, calibrate, write the outputs; returns the report."""
    s = settings_from(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in asdict(s).items()},
                    "dataset": {}, "results": [], "calibration": {}, "plots": [], "timings_s": {},
                    "notes": [
                        "Protocol: seeds indexed per space; queries = augmented seeds (positives) "
                        "+ augmented distractors (negatives, originals not seeds); score = "
                        "similarity (cosine; 1 - hamming/256 for pdq).",
                        "micro_ap: ISC2021 micro average precision over the pooled top-k "
                        "predictions of all queries.",
                        "at_fmr[x]: threshold above which at most a fraction x of negative "
                        "queries' best scores lie, and the recall of positives at it; "
                        "negatives_allowed_above = floor(x * n_negative) (0 = weak estimate).",
                        "clip:dedup-tiny/none is a random-init test model: a smoke row, not a "
                        "measurement of CLIP, and never calibrated.",
                    ]}
    modalities = []
    calib_levels = tuple(lv for lv in s.calib_levels if lv in s.levels) or s.levels
    if args.modality in ("image", "both") and s.image_spaces:
        t0 = time.perf_counter()
        bench = build_image_benchmark(s.seed, quick=s.quick)
        report["dataset"]["image"] = bench.summary()
        # Each negative query is searched exhaustively against every seed.
        report["dataset"]["image"]["negative_queries_per_level"] = len(bench.distractors) * s.neg_copies
        report["dataset"]["image"]["positive_queries_per_level"] = len(bench.seeds) * s.pos_copies
        report["timings_s"]["image/dataset"] = time.perf_counter() - t0
        modalities.append(run_images(bench, s))
    if args.modality in ("text", "both") and s.text_spaces:
        t0 = time.perf_counter()
        tbench = build_text_benchmark(s.seed, quick=s.quick)
        report["dataset"]["text"] = tbench.summary()
        report["dataset"]["text"]["negative_queries_per_level"] = len(tbench.distractors) * s.text_neg_copies
        report["dataset"]["text"]["positive_queries_per_level"] = len(tbench.seeds) * s.text_pos_copies
        report["timings_s"]["text/dataset"] = time.perf_counter() - t0
        modalities.append(run_texts(tbench, s))
    calibrations = []
    for res in modalities:
        scored = score_runs(res, s)
        report["timings_s"].update({f"{res.modality}/{k}": v for k, v in res.timings.items()})
        spaces = list(dict.fromkeys(sp for sp, _ in res.runs))
        for space in spaces:
            smoke = space in SMOKE_SPACES
            cal = None
            if not smoke:
                cal = calibrate(space, scored, calib_levels, s.target_fmr,
                                res.binary_bits.get(space))
                cal["modality"] = res.modality
                calibrations.append(cal)
            for level in s.levels:
                m = scored[(space, level)]
                row = {"modality": res.modality, "space": space, "level": level,
                       "model_id": res.model_ids.get(space, space), "smoke": smoke,
                       **rep.public(m)}
                if space in res.binary_bits:
                    for key, v in m["at_fmr"].items():
                        v["hamming_threshold"] = hamming_radius_at_fmr(
                            m["_neg_scores"], float(key), res.binary_bits[space])
                    row["hamming_at_0.001"] = m["at_fmr"].get("0.001", {}).get("hamming_threshold")
                report["results"].append(row)
            thr = {f"FMR {s.target_fmr:g}": cal["threshold"]} if cal else {}
            report["plots"].append(rep.plot_pr(out, res.modality, space, scored).name)
            report["plots"].append(rep.plot_hist(out, res.modality, space, scored, thr).name)
        report["plots"].append(rep.plot_summary(out, res.modality, report["results"],
                                                f"{s.target_fmr:g}").name)
    # A space that embeds both modalities (clip) is calibrated per modality; the service has one
    # threshold per space, so the config gets the stricter (higher) one.
    by_space: dict[str, dict] = {}
    for cal in calibrations:
        if cal["space"] not in by_space or cal["threshold"] > by_space[cal["space"]]["threshold"]:
            by_space[cal["space"]] = cal
    model_ids = {sp: mid for res in modalities for sp, mid in res.model_ids.items()}
    toml = thresholds_toml(list(by_space.values()), model_ids)
    (out / "thresholds.toml").write_text(toml)
    if args.write_config:
        args.write_config.parent.mkdir(parents=True, exist_ok=True)
        args.write_config.write_text(toml)
    report["calibration"] = {"target_fmr": s.target_fmr, "levels": list(calib_levels),
                             "spaces": calibrations, "toml": "thresholds.toml"}
    report["timings_s"]["total"] = time.perf_counter() - t_start
    rep.write_json(out / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = parser().parse_args(argv)
    try:
        report = run(args)
    except InvalidArgument as e:
        print(f"dedup-eval: {e}", file=sys.stderr)
        return 2
    except DedupError as e:
        print(f"dedup-eval: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print((args.out / "report.json").read_text())
        return 0
    print(rep.table(report["results"]))
    print("* random-init smoke model: exercises the code path, not a measurement\n")
    print(f"thresholds at FMR {report['calibration']['target_fmr']:g} on "
          f"{'+'.join(report['calibration']['levels'])}:")
    for cal in report["calibration"]["spaces"]:
        extra = f" (Hamming <= {cal['hamming_threshold']})" if "hamming_threshold" in cal else ""
        print(f"  {cal['modality']:<6} {cal['space']:<22} threshold {cal['threshold']:.6g}{extra}  "
              f"recall {cal['recall']:.3f}  fmr {cal['achieved_fmr']:.5f} over "
              f"{cal['n_negative']} negatives")
    print(f"\nwrote {args.out}/report.json, thresholds.toml and {len(report['plots'])} plots "
          f"in {report['timings_s']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
