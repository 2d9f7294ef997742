"""``dedup-eval``: near-duplicate benchmarks and threshold calibration.

Images are measured through a real server (``tools.eval.imagebench``): seeds added with
AddSeeds, edited queries sent with BatchLookup, one threshold per space calibrated on one half
and reported on the other. Texts (``--modality text``) still run the older in-process protocol;
``dedup-eval text ...`` runs the text benchmark (``tools.eval.textbench``).

Rebuild the picture cache and run the full image benchmark (about 1.5 h on 2 CPU cores):

    dedup-eval --modality image --cache /work/data/bench --out eval-out

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
from tools.eval.runner import (SMOKE_SPACES, TEXT_SPACES, EvalSettings, calibrate, run_texts,
                               score_runs, thresholds_toml)

CACHE_NAME = "pictures"


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
    p.add_argument("--seed", type=int, default=0, help="one seed for split and edits")
    p.add_argument("--quick", action="store_true",
                   help="tiny sets (pip pictures only, a few texts): seconds, for tests")
    p.add_argument("--modality", choices=("image", "text", "both"), default="both")
    p.add_argument("--target-fmr", type=_fmr, default=0.001, help="false-match rate to calibrate at")
    p.add_argument("--write-config", type=Path, default=None,
                   help="also write the calibrated [spaces.*] TOML here")
    p.add_argument("--json", action="store_true", help="print report.json instead of the tables")
    img = p.add_argument_group("images (through the service)")
    img.add_argument("--config", type=Path, default=None,
                     help="service config whose enabled image [spaces] are measured "
                          "(default: the service's default spaces)")
    img.add_argument("--image-spaces", type=_spaces, default=None,
                     help="comma list: only these image spaces (a new one gets default settings)")
    img.add_argument("--cache", type=Path, default=None,
                     help="picture cache folder (default $DEDUP_BENCH_CACHE or ~/.cache/dedup-bench)")
    img.add_argument("--rebuild-cache", action="store_true", help="prepare the pictures again")
    img.add_argument("--seeds", type=int, default=1000, help="seed pictures over both halves")
    img.add_argument("--negatives", type=int, default=20000, help="negative queries over both halves")
    img.add_argument("--pos-per-level", type=int, default=2,
                     help="edited copies per held-out seed and level")
    img.add_argument("--calib-pos-per-level", type=int, default=1,
                     help="edited copies per calibration seed and level")
    img.add_argument("--top-k", type=int, default=10, help="neighbours per space")
    img.add_argument("--resume", action="store_true",
                     help="go on with an interrupted run in --out (same settings)")
    img.add_argument("--report-only", action="store_true",
                     help="report what an unfinished run in --out has answered so far")
    txt = p.add_argument_group("texts (in-process protocol)")
    txt.add_argument("--levels", type=_levels, default=None, help="comma list of easy,medium,hard")
    txt.add_argument("--text-spaces", type=_spaces, default=TEXT_SPACES)
    txt.add_argument("--calib-levels", type=_levels, default=("easy", "medium"),
                     help="levels whose union the text thresholds are chosen on")
    txt.add_argument("--k", type=int, default=5, help="neighbours per text query (micro-AP)")
    return p


def settings_from(args: argparse.Namespace) -> EvalSettings:
    """Text EvalSettings from parsed arguments (quick mode shrinks the defaults)."""
    levels = args.levels or (("easy",) if args.quick else LEVELS)
    if args.k < 1:
        raise InvalidArgument("--k must be >= 1")
    s = EvalSettings(seed=args.seed, levels=levels, text_spaces=args.text_spaces, k=args.k,
                     target_fmr=args.target_fmr, calib_levels=args.calib_levels, quick=args.quick)
    if s.target_fmr not in s.fmrs:
        s.fmrs = tuple(sorted({*s.fmrs, s.target_fmr}, reverse=True))
    return s


def image_settings_from(args: argparse.Namespace):
    """ImageBenchSettings from parsed arguments (quick mode: a handful of pictures)."""
    from tools.eval.imagebench import ImageBenchSettings

    if min(args.seeds, args.negatives, args.pos_per_level, args.calib_pos_per_level,
           args.top_k) < 1:
        raise InvalidArgument("--seeds, --negatives, --pos-per-level, --calib-pos-per-level and "
                              "--top-k must be >= 1")
    s = ImageBenchSettings(seed=args.seed, n_seeds=args.seeds, n_negatives=args.negatives,
                           pos_per_level=args.pos_per_level,
                           calib_pos_per_level=args.calib_pos_per_level, top_k=args.top_k,
                           target_fmr=args.target_fmr, quick=args.quick)
    if args.quick:
        s.n_seeds, s.n_negatives = min(s.n_seeds, 8), min(s.n_negatives, 96)
        s.pos_per_level = s.calib_pos_per_level = 1
    return s


def run_image(args: argparse.Namespace, out: Path) -> dict:
    """Pictures -> split -> both passes through the service; plots; returns the report part."""
    from tools.eval.dataset import build_image_benchmark, default_cache_dir
    from tools.eval.imagebench import measured_spaces, run

    s = image_settings_from(args)
    spaces = measured_spaces(args.config, args.image_spaces)
    t0 = time.perf_counter()
    if args.quick:  # the pip packages' pictures only: no apt, seconds
        cache = out / "quick-cache"
        bench = build_image_benchmark(s.n_seeds, s.seed, cache, packages=(), rebuild=args.rebuild_cache)
    else:
        cache = (args.cache or default_cache_dir()) / CACHE_NAME
        bench = build_image_benchmark(s.n_seeds, s.seed, cache, rebuild=args.rebuild_cache)
    t_data = time.perf_counter() - t0
    image = run(bench, spaces, s, out, resume=args.resume, report_only=args.report_only)
    image["timings_s"]["dataset_s"] = t_data
    sc_ho = image.pop("_scores")["heldout"]
    records = image.pop("_records")
    _write_records(out / "queries.jsonl.gz", records)
    image["plots"] = [rep.plot_image_hist(out, sp, sc_ho, image["spaces"][sp]["heldout"]["threshold"]).name
                      for sp in image["spaces"]]
    image["plots"] += [rep.plot_image_recall(out, image, "edit").name,
                       rep.plot_image_recall(out, image, "level").name]
    image["queries_file"] = "queries.jsonl.gz"
    return image


def _write_records(path: Path, records: dict) -> None:
    import gzip
    import json

    with gzip.open(path, "wt") as f:
        for half in records:
            for r in records[half]:
                f.write(json.dumps(r.to_json()) + "\n")


def run_text(args: argparse.Namespace, out: Path) -> tuple[dict, list[dict]]:
    """The in-process text protocol; returns its report part and its calibrations."""
    from tools.eval.dataset import build_text_benchmark

    s = settings_from(args)
    part: dict = {"settings": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in asdict(s).items()},
                  "results": [], "plots": [], "timings_s": {}}
    t0 = time.perf_counter()
    tbench = build_text_benchmark(s.seed, quick=s.quick)
    part["dataset"] = tbench.summary()
    part["dataset"]["negative_queries_per_level"] = len(tbench.distractors) * s.text_neg_copies
    part["dataset"]["positive_queries_per_level"] = len(tbench.seeds) * s.text_pos_copies
    part["timings_s"]["dataset"] = time.perf_counter() - t0
    res = run_texts(tbench, s)
    calib_levels = tuple(lv for lv in s.calib_levels if lv in s.levels) or s.levels
    scored = score_runs(res, s)
    part["timings_s"].update(res.timings)
    calibrations = []
    for space in dict.fromkeys(sp for sp, _ in res.runs):
        smoke = space in SMOKE_SPACES
        cal = None
        if not smoke:
            cal = calibrate(space, scored, calib_levels, s.target_fmr, res.binary_bits.get(space))
            cal["modality"] = "text"
            calibrations.append(cal)
        for level in s.levels:
            m = scored[(space, level)]
            row = {"modality": "text", "space": space, "level": level,
                   "model_id": res.model_ids.get(space, space), "smoke": smoke, **rep.public(m)}
            if space in res.binary_bits:
                for key, v in m["at_fmr"].items():
                    v["hamming_threshold"] = hamming_radius_at_fmr(
                        m["_neg_scores"], float(key), res.binary_bits[space])
                row["hamming_at_0.001"] = m["at_fmr"].get("0.001", {}).get("hamming_threshold")
            part["results"].append(row)
        thr = {f"FMR {s.target_fmr:g}": cal["threshold"]} if cal else {}
        part["plots"].append(rep.plot_pr(out, "text", space, scored).name)
        part["plots"].append(rep.plot_hist(out, "text", space, scored, thr).name)
    part["plots"].append(rep.plot_summary(out, "text", part["results"], f"{s.target_fmr:g}").name)
    part["calibration"] = {"target_fmr": s.target_fmr, "levels": list(calib_levels),
                           "spaces": calibrations, "model_ids": res.model_ids}
    return part, calibrations


def run(args: argparse.Namespace) -> dict:
    """Run the chosen modalities, write report.json and thresholds.toml; returns the report."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report: dict = {"seed": args.seed, "quick": args.quick, "target_fmr": args.target_fmr}
    toml_lines: list[str] = []
    if args.modality in ("image", "both"):
        report["image"] = run_image(args, out)
        toml_lines += rep.image_thresholds_toml(report["image"])
    if args.modality in ("text", "both") and args.text_spaces:
        report["text"], cals = run_text(args, out)
        # The in-process text protocol has no held-out half: its thresholds rest on one set.
        text_toml = thresholds_toml(cals, report["text"]["calibration"]["model_ids"])
        toml_lines += ["", *text_toml.splitlines()]
    toml = "\n".join(toml_lines).lstrip("\n") + "\n"
    (out / "thresholds.toml").write_text(toml)
    if args.write_config:
        args.write_config.parent.mkdir(parents=True, exist_ok=True)
        args.write_config.write_text(toml)
    report["thresholds_toml"] = "thresholds.toml"
    report["total_s"] = time.perf_counter() - t_start
    rep.write_json(out / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``dedup-eval text ...`` runs the text benchmark, tools.eval.textbench)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["text"]:
        from tools.eval import textbench

        return textbench.main(argv[1:])
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
    if "image" in report:
        print(rep.image_table(report["image"]))
        print()
    if "text" in report:
        print(rep.table(report["text"]["results"]))
        print("* random-init smoke model: exercises the code path, not a measurement\n")
        for cal in report["text"]["calibration"]["spaces"]:
            print(f"  text {cal['space']:<22} threshold {cal['threshold']:.6g}  recall "
                  f"{cal['recall']:.3f}  fmr {cal['achieved_fmr']:.5f} over {cal['n_negative']} negatives")
    print(f"\nwrote {args.out}/report.json and thresholds.toml in {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
