#!/usr/bin/env python
"""Choose the ring-matching thresholds on SYNTHETIC held-out chips (never on the real evaluation data).

Generates ``--n`` chips with :func:`lunarmap.synth.synth_crater_chip` (seeds from 2 000 000 on,
disjoint from the training and validation seeds of ``scripts/train_craters.py``; GSD log-uniform
in the training range), runs the crater network (pyramid levels 1, 2), extracts craters for a grid
of (target_thresh, template_thresh) and scores them with the DeepMoon matching criteria
(``scripts/eval_craters.py``): recall over labelled craters (D >= 5 px, rim inside the chip),
precision over detections (a detection is correct if it matches any rendered crater >= 3 px);
``labelled`` is the generator's own label flag (fresh enough to show a rim).

Usage::

    PYTHONPATH=$PWD python scripts/tune_craters.py --n 48 [--weights W] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - .rio accessor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_craters import match  # noqa: E402

from lunarmap import craters as C  # noqa: E402
from lunarmap.io import elevation_from_array  # noqa: E402
from lunarmap.synth import synth_crater_chip  # noqa: E402

SEED0 = 2_000_000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--gsd-range", type=float, nargs=2, default=(20.0, 500.0))
    ap.add_argument("--target", type=lambda s: [float(v) for v in s.split(",")], default=[0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--template", type=lambda s: [float(v) for v in s.split(",")], default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.6])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import dask
    import torch

    dask.config.set(scheduler="synchronous")
    torch.set_num_threads(1)
    from lunarmap.models import load_crater_model

    model = load_crater_model(args.weights)
    rng = np.random.default_rng(0)
    chips = []
    for i in range(args.n):
        gsd = float(np.exp(rng.uniform(*np.log(args.gsd_range))))
        sc = synth_crater_chip(256, gsd, seed=SEED0 + i)
        elev = elevation_from_array(sc.elevation, gsd=gsd)
        levels = [lv.compute() for lv in C.crater_probability_levels(elev, model=model, chip=256, scales=(1, 2))]
        cr = sc.craters.copy()
        x0, y0 = float(elev.x[0]), float(elev.y[0])
        cr["x"] = x0 + cr.x_px * gsd
        cr["y"] = y0 - cr.y_px * gsd
        cr["r_map"] = cr.diameter_px * gsd / 2
        cr["diameter_m"] = cr.diameter_px * gsd
        r_px = cr.diameter_px / 2
        inside = (cr.x_px - r_px >= 0) & (cr.x_px + r_px <= 255) & (cr.y_px - r_px >= 0) & (cr.y_px + r_px <= 255)
        labelled = (cr.diameter_px >= 5) & inside
        if "labelled" in cr:  # the generator's own label rule (fresh enough to have a visible rim)
            labelled &= cr["labelled"].astype(bool)
        chips.append((levels, cr[cr.diameter_px >= 3].reset_index(drop=True), cr[labelled].reset_index(drop=True), gsd))
        print(f"chip {i}: gsd {gsd:.0f} m, {int(labelled.sum())} labelled craters", flush=True)
    rows = []
    for tt in args.target:
        for mt in args.template:
            n_lab = found = n_det = correct = 0
            for levels, allc, lab, gsd in chips:
                det = C.extract_craters(levels, target_thresh=tt, template_thresh=mt)
                d = pd.DataFrame(det.drop(columns="geometry"))
                d["r_map"] = d.diameter_m / 2
                d = d[d.diameter_m >= 5 * gsd].reset_index(drop=True)
                m_lab = match(d, lab)
                m_all = match(d, allc)
                n_lab += len(lab)
                found += int((m_lab >= 0).sum())
                n_det += len(d)
                correct += int((m_all >= 0).sum())
            p = correct / n_det if n_det else float("nan")
            r = found / n_lab if n_lab else float("nan")
            f1 = 2 * p * r / (p + r) if n_det and (p + r) > 0 else float("nan")
            rows.append({"target_thresh": tt, "template_thresh": mt, "precision": p, "recall": r, "f1": f1,
                         "n_labelled": n_lab, "n_det": n_det})
            print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: (r["f1"] if r["f1"] == r["f1"] else -1))
    print("best", json.dumps(best))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "best": best, "n_chips": args.n}, indent=1))


if __name__ == "__main__":
    main()
