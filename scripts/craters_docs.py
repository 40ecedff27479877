#!/usr/bin/env python
"""Write the measured tables of docs/craters.md from the JSON outputs of the evaluation scripts.

Usage (after the runs listed in docs/craters.md, "Reproduce")::

    PYTHONPATH=$PWD python scripts/craters_docs.py --dir docs/craters_results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_craters  # noqa: E402
import eval_craters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load(p: Path):
    return json.loads(p.read_text()) if p.exists() else None


def _row(label, r):
    f = eval_craters.fmt
    return (f"| {label} | {r['case']} | {f(r['precision'])} | {f(r['recall'])} | {f(r['f1'])} | "
            f"{f(r['med_pos_err'])} | {f(r['med_diam_err'])} |")


def evaluation_section(d: Path) -> str:
    main = _load(d / "eval.json")
    out = ["## Evaluation on real data", ""]
    if main is None:
        return "\n".join(out + ["(no evaluation run found)", ""])
    out += [
        "Real LOLA DEMs (`tiles/`, provenance in /work/shared/data/README.md) against real catalogues:",
        "HKPolyU LU1319381 (Wang, Wu et al. 2021; complete to D ≥ 1 km; 60–80° S subset) and Head et al. 2010",
        "(D ≥ 20 km, global). Evaluated catalogue craters: D ≥ D_min = max(5 px, catalogue completeness),",
        "the whole rim inside the DEM, centre in the latitude band (the 1600 m DEM reaches ~70° S on its axes",
        "and ~62° S in its corners, so the 60–80° S annulus is the part of it inside the DEM). Detections are",
        "restricted to the same footprint and band; precision counts detections with D ≥ D_min.",
        "Matching (Silburt et al. 2019, DeepMoon `template_match_t2c`): a detection matches a catalogue crater",
        "when ((x₁−x₂)² + (y₁−y₂)²)/min(R₁,R₂)² < 1.8 and |R₁−R₂|/min(R₁,R₂) < 1.0, one-to-one, best score first.",
        "*Strict* also reported: centre distance < 0.25·min(D) and |ΔD|/min(D) < 0.25. Errors are medians over",
        "DeepMoon matches: |centre offset|/R_cat and |D_det − D_cat|/D_cat. Pixel IoU/recall: rim pixels",
        "(p ≥ 0.5) vs the evaluated catalogue craters' rims rasterised 2 px wide (small uncatalogued craters",
        "count against IoU).",
        "",
        "Shipped configuration (DeepMoon thresholds 0.1 / 0.5, pyramid 1, 2, 4, 8, no TTA):",
        "",
        eval_craters.markdown(main["results"], main["detector"]),
        "",
    ]
    rows = []
    for fname, label in (("eval.json", "shipped defaults"), ("eval_tta.json", "+ TTA (4 flips)"),
                         ("eval_t04.json", "template threshold 0.4 (sensitivity)"),
                         ("eval_baseline.json", "curvature baseline, no network")):
        r = _load(d / fname)
        if r:
            rows += [_row(label, x) for x in r["results"]]
    if rows:
        out += ["Variants (same data and criteria). The ring-matching thresholds are DeepMoon's values, fixed",
                "before any real-data run and confirmed on synthetic held-out chips (below); the 0.4 threshold row",
                "is a sensitivity check chosen *after* seeing real data, so it is optimistic. One choice was made",
                "after a look at real data: pyramid levels overlap by a factor 2 in radius (`COARSE_R_MIN_PX = 8`),",
                "adopted because non-overlapping levels found no HKPolyU crater of 64–128 km on the 1600 m DEM with a",
                "development model (0 % → 14 % recall in that bin, precision unchanged).", "",
                "| detector | case | precision | recall | F1 | med. pos. err / R | med. \\|ΔD\\|/D |",
                "|---|---|---|---|---|---|---|", *rows, ""]
    tune = _load(d / "tune.json")
    if tune:
        b = tune["best"]
        out += [f"Threshold sweep on {tune['n_chips']} synthetic held-out chips (`scripts/tune_craters.py`): best F1 "
                f"{b['f1']:.2f} at target {b['target_thresh']}, template {b['template_thresh']} "
                f"(precision {b['precision']:.2f}, recall {b['recall']:.2f}); at DeepMoon's (0.1, 0.5): " +
                ", ".join(f"F1 {r['f1']:.2f} (P {r['precision']:.2f}, R {r['recall']:.2f})" for r in tune["rows"]
                          if r["target_thresh"] == 0.1 and r["template_thresh"] == 0.5) + ".", ""]
    return "\n".join(out)


def benchmark_section(d: Path) -> str:
    b = _load(d / "bench.json")
    out = ["## Benchmark", ""]
    if b is None:
        return "\n".join(out + ["(no benchmark run found)", ""])
    return "\n".join(out + [bench_craters.markdown(b), ""])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=ROOT / "docs" / "craters_results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "craters.md")
    args = ap.parse_args(argv)
    text = args.doc.read_text()
    start = text.index("## Evaluation on real data")
    end = text.index("## Known limitations")
    new = evaluation_section(args.dir) + "\n" + benchmark_section(args.dir) + "\n"
    args.doc.write_text(text[:start] + new + text[end:])


if __name__ == "__main__":
    main()
