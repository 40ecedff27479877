#!/usr/bin/env python
"""Benchmark crater inference on CPU: chips/s, s per megapixel, end-to-end on real DEMs.

Timings on shared machines are noisy (ENVIRONMENT.md): every figure is the median of
``--repeats`` runs, and each is also given as a ratio to a fixed reference workload timed in the
same process (numpy 1024x1024 float32 matmul), so runs on different machines compare.

Usage::

    PYTHONPATH=$PWD python scripts/bench_craters.py --threads 1 --repeats 3
    PYTHONPATH=$PWD python scripts/bench_craters.py --baseline curvature   # no network
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lunarmap import craters as C  # noqa: E402
from lunarmap.io import open_dem  # noqa: E402
from lunarmap.tiling import n_chips  # noqa: E402

TILE_200 = ROOT / "tiles" / "shackleton_ridge_lola10m_200m_51km.tif"
DEM_1600 = ROOT / "tiles" / "lola_ldem256_south_polarstereo_1600m.tif"


def median_time(fn, repeats):
    ts = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def reference(repeats):
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    return median_time(lambda: a @ a, max(5, repeats))[0]


def markdown(res) -> str:
    """The benchmark as a markdown table (docs/craters.md)."""
    lines = [
        f"Detector: {res['detector']}; torch {res['torch']}, {res['threads']} thread(s), chip {res['chip']}, "
        f"batch {res['batch']}; reference workload (1024² float32 matmul) {res['reference_matmul_s'] * 1000:.0f} ms.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| model forward, chips/s (256², median) | {res['chips_per_s']:.1f} |",
        f"| model forward, s per megapixel | {res['model_s_per_mpx']:.2f} |",
        f"| `crater_inputs`, ms per chip | {res['inputs_s_per_chip'] * 1000:.1f} |",
    ]
    for key, name in (("tile_200m", "Shackleton 200 m tile"), ("regional_1600m", "1600 m regional DEM")):
        if key not in res:
            continue
        r = res[key]
        lines += [
            f"| {name} ({r['shape'][0]}×{r['shape'][1]}, {r['chips']} chips over 4 levels): end-to-end s "
            f"(probability + catalogue + density) | {r['end_to_end_s']:.1f} ({r['end_to_end_x_ref']:.0f}× reference) |",
            f"| {name}: probability pyramid s / extraction + density s | {r['probability_s']:.1f} / {r['extraction_and_density_s']:.1f} |",
            f"| {name}: s per megapixel (end-to-end) / craters found | {r['s_per_mpx']:.1f} / {r['n_craters']} |",
        ]
    if "seams_1600m_chunks256" in res:
        r = res["seams_1600m_chunks256"]
        lines.append(f"| one block vs 256-px Dask chunks (1600 m DEM): level-1 max / mean \\|Δp\\|, pixels crossing 0.5; "
                     f"craters (all levels) | {r['max_abs_diff']:.1e} / {r['mean_abs_diff']:.1e}, {r['pixels_crossing_0.5']}, "
                     f"{r['craters_one_block']} vs {r['craters_chunked']} |")
    if "chip_placement_1600m_stride96_vs_default" in res:
        r = res["chip_placement_1600m_stride96_vs_default"]
        lines.append(f"| chip placement: stride 96 vs default 160 (1600 m DEM): level-1 max / mean \\|Δp\\|, pixels crossing 0.5; craters | "
                     f"{r['max_abs_diff']:.2f} / {r['mean_abs_diff']:.4f}, {r['pixels_crossing_0.5']}, "
                     f"{r['craters_default']} vs {r['craters_stride96']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--baseline", choices=["curvature"], default=None)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-seams", action="store_true", help="skip the one-block vs chunked comparison")
    ap.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end runs")
    args = ap.parse_args(argv)

    import dask

    dask.config.set(scheduler="synchronous" if args.threads == 1 else "threads", num_workers=args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.baseline:
        from eval_craters import CurvatureBaseline  # noqa: E402

        model, label = CurvatureBaseline(), "curvature baseline"
        inputs_fn = model.inputs
    else:
        from lunarmap.models import crater_inputs, load_crater_model

        model = load_crater_model(args.weights)
        label = f"crater U-Net ({model.card.get('architecture', {}).get('encoder', '?')})"
        inputs_fn = crater_inputs
    ref = reference(args.repeats)
    res = {"detector": label, "threads": args.threads, "chip": args.chip, "batch": args.batch,
           "reference_matmul_s": ref, "torch": torch.__version__}

    # 1. raw model throughput
    elev = open_dem(TILE_200, chunks=None)
    z = elev.values[: args.chip, : args.chip]
    x = np.stack([inputs_fn(z, 200.0)] * args.batch).astype("float32")
    model.predict(x[:1])  # warm-up
    t, _ = median_time(lambda: model.predict(x), args.repeats)
    res["chips_per_s"] = args.batch / t
    res["model_s_per_mpx"] = t / (args.batch * args.chip**2 / 1e6)
    t_in, _ = median_time(lambda: [inputs_fn(z, 200.0) for _ in range(args.batch)], args.repeats)
    res["inputs_s_per_chip"] = t_in / args.batch

    # 2. end to end (probability pyramid + ring extraction + density) on real DEMs
    for key, path in (() if args.skip_e2e else (("tile_200m", TILE_200), ("regional_1600m", DEM_1600))):
        e = open_dem(path)
        halo = C.default_halo(model, args.chip)
        chips = sum(
            n_chips((-(-e.sizes["y"] // s), -(-e.sizes["x"] // s)), None, chip=args.chip, halo=halo)
            for s in C.DEFAULT_SCALES
        )

        def run():
            t0 = time.perf_counter()
            levels = [lv.persist() for lv in C.crater_probability_levels(e, model=model, chip=args.chip,
                                                                          batch_size=args.batch)]
            prob = C.combine_levels(levels, e).compute()
            t1 = time.perf_counter()
            cat = C.extract_craters(levels)
            dens = C.crater_density(cat, e).compute()
            t2 = time.perf_counter()
            return (t1 - t0, t2 - t1, cat, prob, dens)

        runs = [run() for _ in range(args.repeats)]
        t_prob = statistics.median(r[0] for r in runs)
        t_ext = statistics.median(r[1] for r in runs)
        t_e2e = statistics.median(r[0] + r[1] for r in runs)
        cat = runs[-1][2]
        mpx = e.sizes["y"] * e.sizes["x"] / 1e6
        res[key] = {"shape": [e.sizes["y"], e.sizes["x"]], "megapixels": mpx, "chips": chips, "halo": halo,
                    "end_to_end_s": t_e2e, "end_to_end_x_ref": t_e2e / ref, "probability_s": t_prob,
                    "extraction_and_density_s": t_ext, "s_per_mpx": t_e2e / mpx,
                    "n_craters": int(len(cat))}
        print(key, json.dumps(res[key]), flush=True)

    # 3. seams: the same DEM in one block vs 256-px Dask chunks (the network's receptive field is
    #    wider than the halo, so chunking may change outputs slightly near chunk borders)
    if not args.skip_seams:
        e1 = open_dem(DEM_1600, chunks=None)
        e2 = open_dem(DEM_1600, chunks=256)
        p1 = C.crater_probability(e1, model=model, chip=args.chip, scales=(1,)).values
        p2 = C.crater_probability(e2, model=model, chip=args.chip, scales=(1,)).values
        diff = np.abs(p1 - p2)
        border = np.zeros(p1.shape, dtype=bool)
        for k in range(256, p1.shape[0], 256):
            border[max(0, k - 32): k + 32, :] = True
            border[:, max(0, k - 32): k + 32] = True
        c1 = C.extract_craters(C.crater_probability_levels(e1, model=model, chip=args.chip))
        c2 = C.extract_craters(C.crater_probability_levels(e2, model=model, chip=args.chip))
        res["seams_1600m_chunks256"] = {
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "mean_abs_diff_within_32px_of_chunk_borders": float(diff[border].mean()),
            "pixels_crossing_0.5": int(((p1 >= 0.5) != (p2 >= 0.5)).sum()), "pixels": int(p1.size),
            "craters_one_block": int(len(c1)), "craters_chunked": int(len(c2)),
        }
        print("seams", json.dumps(res["seams_1600m_chunks256"]), flush=True)
        # chip-placement sensitivity: a different chip lattice (stride 96 instead of the default)
        p3 = C.crater_probability(e1, model=model, chip=args.chip, scales=(1,), stride=96).values
        d3 = np.abs(p1 - p3)
        c3 = C.extract_craters(C.crater_probability_levels(e1, model=model, chip=args.chip, stride=96))
        res["chip_placement_1600m_stride96_vs_default"] = {
            "max_abs_diff": float(d3.max()), "mean_abs_diff": float(d3.mean()),
            "pixels_crossing_0.5": int(((p1 >= 0.5) != (p3 >= 0.5)).sum()),
            "craters_default": int(len(c1)), "craters_stride96": int(len(c3)),
        }
        print("placement", json.dumps(res["chip_placement_1600m_stride96_vs_default"]), flush=True)

    print(json.dumps(res, indent=1))
    print(markdown(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
