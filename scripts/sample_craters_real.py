#!/usr/bin/env python
"""Quick check of the shipped crater model on REAL LOLA DEMs against published crater catalogues.

This is a sanity sample for the model card, not the project's evaluation (that is
``scripts/eval_craters.py`` on the crater-inference branch). For each DEM tile the model runs on
256-px chips (stride 192, tent-weighted blending), and for every catalogued crater fully inside the
tile with 5-110 px diameter we measure the share of its rim ring (|r - R| <= 1.5 px) that has a
rim probability >= 0.5 within 1 px ("ring recall"), and the share of predicted rim pixels lying
within 2 px of some catalogued rim ("catalogue precision"; catalogues miss small/degraded craters,
so this is a lower bound).

    PYTHONPATH=$PWD python scripts/sample_craters_real.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.ndimage import binary_dilation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lunarmap.crs import lonlat_to_xy  # noqa: E402
from lunarmap.io import open_dem  # noqa: E402
from lunarmap.models import crater_inputs, load_crater_model  # noqa: E402

DATA = Path(os.environ.get("LUNARMAP_SHARED_DATA", ROOT.parent / "shared" / "data"))
CASES = [
    # (tile, catalogue, catalogue description, lat limits of catalogue completeness)
    ("tiles/lola_ldem256_south_polarstereo_1600m.tif", "craters/hkpolyu_LU1319381_craters_60S_80S.csv",
     "HKPolyU LU1319381 (Wang et al. 2021), 60-80S", (-80.0, -60.0)),
    ("tiles/lola_ldem80s_480m_south_pole_250km.tif", "craters/head2010_craters_ge20km_global.csv",
     "Head et al. 2010, D >= 20 km", (-90.0, 90.0)),
]


def predict_tiled(model, z, gsd, chip=256, stride=192):
    h, w = z.shape
    ph, pw = max(chip - h, 0), max(chip - w, 0)
    zp = np.pad(z, ((0, ph), (0, pw)), mode="reflect")
    H, W = zp.shape
    acc = np.zeros((H, W)); wsum = np.zeros((H, W))
    t = np.minimum(np.arange(chip) + 1, chip - np.arange(chip)).astype(float)
    tent = np.outer(t, t)
    rows = sorted(set(list(range(0, H - chip + 1, stride)) + [H - chip]))
    cols = sorted(set(list(range(0, W - chip + 1, stride)) + [W - chip]))
    for r in rows:
        batch = np.stack([crater_inputs(zp[r:r + chip, c:c + chip], gsd) for c in cols])
        p = model.predict(batch)
        for c, pc in zip(cols, p):
            acc[r:r + chip, c:c + chip] += pc * tent
            wsum[r:r + chip, c:c + chip] += tent
    return (acc / wsum)[:h, :w]


def sample(model, tile, cat, desc, lat_lim):
    """Run the model on one tile: ((elevation, probability, catalogue x, y, D in px) for the figure, results)."""
    da = open_dem(ROOT / tile).compute()
    z = da.values.astype(np.float64)
    gsd = float(da.attrs.get("gsd", abs(float(da.x[1] - da.x[0]))))
    prob = predict_tiled(model, z, gsd)
    df = pd.read_csv(DATA / cat)
    dcol = "diam_m" if "diam_m" in df else None
    diam_m = df["diam_m"].to_numpy() if dcol else df["diam_km"].to_numpy() * 1000.0
    x, y = lonlat_to_xy(df["lon"].to_numpy(), df["lat"].to_numpy(), da.rio.crs)
    x0, y0 = float(da.x[0]), float(da.y[0])
    col = (np.asarray(x) - x0) / gsd
    row = (y0 - np.asarray(y)) / gsd
    dpx = diam_m / gsd
    h, w = z.shape
    inside = (col - dpx / 2 >= 0) & (row - dpx / 2 >= 0) & (col + dpx / 2 <= w - 1) & (row + dpx / 2 <= h - 1)
    sel = inside & (dpx >= 5) & (dpx <= 110)
    hit = binary_dilation(prob >= 0.5, iterations=1)
    yy, xx = np.indices(z.shape)
    recalls, sizes = [], []
    near = np.zeros(z.shape, bool)
    for c, r, d in zip(col[inside & (dpx >= 5)], row[inside & (dpx >= 5)], dpx[inside & (dpx >= 5)]):
        ring2 = np.abs(np.hypot(xx - c, yy - r) - d / 2) <= 2.0
        near |= ring2
    for c, r, d in zip(col[sel], row[sel], dpx[sel]):
        ring = np.abs(np.hypot(xx - c, yy - r) - d / 2) <= 1.5
        recalls.append(float(hit[ring].mean())); sizes.append(d)
    recalls, sizes = np.array(recalls), np.array(sizes)
    # catalogue precision only where the catalogue is complete (its latitude band)
    from lunarmap.crs import xy_to_lonlat
    _, lat = xy_to_lonlat(*np.meshgrid(da.x.values, da.y.values), da.rio.crs)
    band = (lat >= lat_lim[0]) & (lat <= lat_lim[1])
    pred = (prob >= 0.5) & band
    bins = [5, 10, 20, 40, 80, 110]
    by = {}
    for a, b in zip(bins[:-1], bins[1:]):
        m = (sizes >= a) & (sizes < b)
        by[f"{a}-{b}px"] = {"n": int(m.sum()), "mean_ring_recall": round(float(recalls[m].mean()), 3) if m.any() else None}
    panel = (z, prob, col[sel], row[sel], dpx[sel])
    return panel, {
        "tile": tile, "gsd_m": gsd, "catalogue": desc, "n_craters_5_110px": int(sel.sum()),
        "mean_ring_recall": round(float(recalls.mean()), 3) if recalls.size else None,
        "share_craters_ring_recall_ge_0.5": round(float((recalls >= 0.5).mean()), 3) if recalls.size else None,
        "ring_recall_by_diameter": by,
        "catalogue_precision": round(float(near[pred].mean()), 3) if pred.any() else None,
        "predicted_rim_fraction": round(float((prob >= 0.5).mean()), 4),
    }


def figure(panels, path: Path) -> None:
    """Elevation with rim probability >= 0.5 (red) and the catalogue's rims (cyan) for each tile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from lunarmap.io import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 8))
    for ax, (title, (z, prob, cx, cy, d)) in zip(np.atleast_1d(axes), panels):
        ax.imshow(z, cmap="gray")
        ax.imshow(np.ma.masked_less(prob, 0.5), cmap="autumn", alpha=0.8, vmin=0.5, vmax=1)
        for x, y, dd in zip(cx, cy, d):
            ax.add_patch(Circle((x, y), dd / 2, fill=False, color="cyan", lw=0.6, alpha=0.7))
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=70, format="png")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--figure", type=Path, help="PNG: each tile, p >= 0.5 in red, catalogue rims 5-110 px in cyan")
    ap.add_argument("--update-card", action="store_true",
                    help="store the results in the model card under 'sample_real_data' (the card is not hashed)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(int(os.environ.get("LUNARMAP_THREADS", "1")))
    model = load_crater_model(args.weights)
    res, panels = [], []
    for case in CASES:
        panel, r = sample(model, *case)
        res.append(r)
        panels.append((f"{Path(case[0]).name}: rim p >= 0.5 (red), {case[2]} (cyan)", panel))
    if args.figure:
        figure(panels, args.figure)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.update_card:
        from lunarmap.io import atomic_path
        from lunarmap.models import WEIGHTS_PATH

        cpath = (args.weights or WEIGHTS_PATH).with_suffix(".json")
        card = json.loads(cpath.read_text())
        card["sample_real_data"] = {
            "method": ("scripts/sample_craters_real.py: 256-px chips, stride 192, tent blending; ring recall = share "
                       "of a catalogued rim ring (|r-R| <= 1.5 px) with p >= 0.5 within 1 px; catalogue precision = "
                       "share of p >= 0.5 pixels within 2 px of a catalogued rim, inside the catalogue's latitude band"),
            "results": res,
        }
        with atomic_path(cpath) as tmp:
            Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
