#!/usr/bin/env python
"""Evaluate lunarmap's crater detector on REAL LOLA DEMs against REAL crater catalogues.

Cases (Head et al. 2010 and the DEMs ship in tiles/; HKPolyU is read from /work/shared/data or
$LUNARMAP_SHARED_DATA; provenance in tiles/README.md and the data README):

* ``hkpolyu_1600m``: HKPolyU LU1319381 catalogue (Wang, Wu et al. 2021; D >= 1 km, 60-80 deg S)
  on the LOLA LDEM_256-derived 1600 m south polar DEM, in the 60-80 deg S annulus inside the DEM.
* ``head_1600m``: Head et al. 2010 (D >= 20 km, global) on the same DEM (whole DEM, ~62-90 deg S).
* ``head_480m``: Head et al. 2010 on the 480 m LDEM_80S-derived DEM (+-125 km, poleward of ~86 deg S).

Evaluated catalogue craters: the DEM resolves them (D >= ``--min-px`` pixels, default 5) and the
whole rim is inside the DEM (and inside the case's latitude band). Detections are restricted to the
same band and footprint; precision counts detections with D >= the same D_min.

Matching (Silburt et al. 2019, DeepMoon ``template_match_t2c``): a detection matches a catalogue
crater when ``((x1-x2)^2 + (y1-y2)^2) / min(R1,R2)^2 < 1.8`` and ``|R1-R2| / min(R1,R2) < 1.0``;
one-to-one, detections in descending score, the nearest eligible catalogue crater. A *strict*
criterion is also reported: centre distance < 0.25 min(D) and |D1-D2| / min(D) < 0.25.
Errors: median |centre offset| / R_cat (DeepMoon's fractional position error uses the same
normalisation per coordinate) and median |D_det - D_cat| / D_cat over DeepMoon matches.

Pixel metrics (LunarSite-style): rim pixels = crater_probability >= 0.5 vs the catalogue's rims
rasterised 2 px wide, IoU and recall inside the evaluated footprint.

Usage::

    PYTHONPATH=$PWD python scripts/eval_craters.py --json docs/eval_craters.json
    PYTHONPATH=$PWD python scripts/eval_craters.py --baseline curvature   # no network: LoG-ridge baseline
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lunarmap import catalog_chips, craters as C  # noqa: E402
from lunarmap.crs import lonlat_to_xy  # noqa: E402
from lunarmap.io import open_dem  # noqa: E402

DATA = Path(os.environ.get("LUNARMAP_SHARED_DATA", "/work/shared/data"))
DEM_1600 = ROOT / "tiles" / "lola_ldem256_south_polarstereo_1600m.tif"
DEM_480 = ROOT / "tiles" / "lola_ldem80s_480m_south_pole_250km.tif"
HKPOLYU = DATA / "craters" / "hkpolyu_LU1319381_craters_60S_80S.csv"
HEAD = ROOT / "tiles" / "head2010_craters_ge20km_global.csv"  # shipped copy of DATA/craters/...

DM_XY2, DM_R = 1.8, 1.0  # DeepMoon criteria
CATALOGUE_COMPLETE_M = {"hkpolyu": 1000.0, "head": 20000.0}
STRICT = 0.25


class CurvatureBaseline:
    """No-network baseline: rim probability from negative Laplacian-of-Gaussian curvature (ridges)."""

    receptive_field_px = 9
    card = {"effective_receptive_field_px": 9}
    chip_multiple = 32

    def inputs(self, chip, gsd):
        return chip[None].astype("float32")

    def predict(self, chips):
        from scipy.ndimage import gaussian_laplace

        out = []
        for c in chips:
            z = c[0].astype("float64")
            z = (z - z.mean()) / (z.std() + 1e-9)
            k = -gaussian_laplace(z, 1.5)
            k = k / (np.std(k) + 1e-9)
            out.append(1.0 / (1.0 + np.exp(-(k - 1.5) * 3)))
        return np.stack(out).astype("float32")


def load_catalogue(name: str) -> pd.DataFrame:
    """``lon, lat, diameter_m`` of the named catalogue (``hkpolyu`` or ``head``)."""
    return catalog_chips.load_catalogue(HKPOLYU if name == "hkpolyu" else HEAD)


def _inside(x, y, r, bounds):
    x0, y0, x1, y1 = bounds
    return (x - r >= x0) & (x + r <= x1) & (y - r >= y0) & (y + r <= y1)


def match(det: pd.DataFrame, cat: pd.DataFrame, *, xy2=DM_XY2, rr=DM_R, strict=False) -> np.ndarray:
    """One-to-one matching; returns for each detection the matched catalogue index or -1."""
    from scipy.spatial import cKDTree

    out = np.full(len(det), -1, dtype=int)
    if len(cat) == 0 or len(det) == 0:
        return out
    cx, cy, cr = cat.x.values, cat.y.values, cat.r_map.values
    tree = cKDTree(np.column_stack([cx, cy]))
    used = np.zeros(len(cat), dtype=bool)
    order = np.argsort(-det.score.values)
    for i in order:
        x, y, r = det.x.values[i], det.y.values[i], det.r_map.values[i]
        nb = np.asarray(tree.query_ball_point([x, y], 3.0 * r + 1.0), dtype=int)
        if nb.size == 0:
            continue
        nb = nb[~used[nb]]
        if nb.size == 0:
            continue
        mr = np.minimum(cr[nb], r)
        d2 = (cx[nb] - x) ** 2 + (cy[nb] - y) ** 2
        if strict:
            ok = (np.sqrt(d2) < STRICT * 2 * mr) & (np.abs(cr[nb] - r) / mr < STRICT)
        else:
            ok = (d2 / mr**2 < xy2) & (np.abs(cr[nb] - r) / mr < rr)
        if not ok.any():
            continue
        cand = nb[ok]
        cost = ((cx[cand] - x) ** 2 + (cy[cand] - y) ** 2) / np.minimum(cr[cand], r) ** 2 + (
            (cr[cand] - r) / np.minimum(cr[cand], r)) ** 2
        j = cand[int(np.argmin(cost))]
        used[j] = True
        out[i] = j
    return out


def scores(det, cat, m, d_min):
    det_ok = det.diameter_m.values >= d_min
    tp_det = int(((m >= 0) & det_ok).sum())
    n_det = int(det_ok.sum())
    tp = int((m >= 0).sum())
    n_cat = len(cat)
    p = tp_det / n_det if n_det else float("nan")
    r = tp / n_cat if n_cat else float("nan")
    f1 = 2 * p * r / (p + r) if n_det and n_cat and (p + r) > 0 else float("nan")
    return {"n_cat": n_cat, "n_det": n_det, "tp": tp, "tp_det": tp_det, "precision": p, "recall": r, "f1": f1}


def errors(det, cat, m):
    i = np.nonzero(m >= 0)[0]
    if i.size == 0:
        return {"med_pos_err": float("nan"), "med_diam_err": float("nan")}
    j = m[i]
    d = np.hypot(det.x.values[i] - cat.x.values[j], det.y.values[i] - cat.y.values[j]) / cat.r_map.values[j]
    dd = np.abs(det.diameter_m.values[i] - cat.diameter_m.values[j]) / cat.diameter_m.values[j]
    return {"med_pos_err": float(np.median(d)), "med_diam_err": float(np.median(dd))}


def rim_raster(cat, grid, width_px=1.0):
    xs, ys = grid.x.values, grid.y.values
    gsd = abs(xs[1] - xs[0])
    out = np.zeros((ys.size, xs.size), dtype=bool)
    for x, y, r in zip(cat.x.values, cat.y.values, cat.r_map.values):
        c0, c1 = np.searchsorted(xs, [x - r - 2 * gsd, x + r + 2 * gsd])
        r1, r0 = np.searchsorted(-ys, [-(y - r - 2 * gsd), -(y + r + 2 * gsd)])
        X, Y = np.meshgrid(xs[c0:c1], ys[r0:r1])
        out[r0:r1, c0:c1] |= np.abs(np.hypot(X - x, Y - y) - r) <= width_px * gsd
    return out


def run_case(name, dem_path, cat_name, lat_band, model, args):
    elev = open_dem(dem_path, chunks=None)
    gsd = float(elev.attrs["gsd"])
    crs = elev.rio.crs
    xs, ys = elev.x.values, elev.y.values
    bounds = (xs.min() - gsd / 2, ys.min() - gsd / 2, xs.max() + gsd / 2, ys.max() + gsd / 2)
    # evaluate where the DEM resolves craters AND the catalogue is complete (HKPolyU D >= 1 km, Head D >= 20 km)
    d_min = max(args.min_px * gsd, CATALOGUE_COMPLETE_M[cat_name])
    t0 = time.perf_counter()
    kw = {k: getattr(args, k) for k in ("r_min_px", "r_max_px", "coarse_r_min_px", "template_thresh", "target_thresh")
          if getattr(args, k) is not None}
    det = C.detect_craters(elev, model=model, chip=args.chip, scales=args.scales, batch_size=args.batch,
                           tta=args.tta, **kw)
    t_run = time.perf_counter() - t0
    cat = load_catalogue(cat_name)
    cat = cat[(cat.lat >= lat_band[0]) & (cat.lat <= lat_band[1])].copy()
    cat["x"], cat["y"] = lonlat_to_xy(cat.lon.values, cat.lat.values, crs)
    cat["r_map"] = cat.diameter_m / 2 * C.map_scale_factor(cat.x.values, cat.y.values, crs)
    cat = cat[_inside(cat.x, cat.y, cat.r_map, bounds) & (cat.diameter_m >= d_min)].reset_index(drop=True)
    d = pd.DataFrame(det.catalogue.drop(columns="geometry"))
    d["r_map"] = d.diameter_m / 2 * C.map_scale_factor(d.x.values, d.y.values, crs)
    d = d[(d.lat >= lat_band[0]) & (d.lat <= lat_band[1]) & _inside(d.x, d.y, d.r_map, bounds)
          & (d.diameter_m >= 0.5 * d_min)].reset_index(drop=True)
    m = match(d, cat)
    ms = match(d, cat, strict=True)
    res = {"case": name, "dem": dem_path.name, "gsd_m": gsd, "catalogue": cat_name, "lat_band": list(lat_band),
           "d_min_m": d_min, "runtime_s": round(t_run, 1), "n_det_all": int(len(det.catalogue)),
           **scores(d, cat, m, d_min), **errors(d, cat, m)}
    st = scores(d, cat, ms, d_min)
    res.update({f"strict_{k}": v for k, v in st.items() if k in ("tp", "precision", "recall", "f1")})
    res.update({f"strict_{k}": v for k, v in errors(d, cat, ms).items()})
    # per diameter bin (catalogue D for recall, detection D for precision)
    edges = [d_min * 2**k for k in range(0, 7)] + [np.inf]
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        ci = (cat.diameter_m >= lo) & (cat.diameter_m < hi)
        di = (d.diameter_m >= lo) & (d.diameter_m < hi)
        if ci.sum() == 0 and di.sum() == 0:
            continue
        rec = float((np.isin(np.nonzero(ci.values)[0], m[m >= 0])).mean()) if ci.sum() else float("nan")
        prec = float((m[di.values] >= 0).mean()) if di.sum() else float("nan")
        bins.append({"d_lo_km": lo / 1000, "d_hi_km": hi / 1000, "n_cat": int(ci.sum()), "n_det": int(di.sum()),
                     "recall": rec, "precision": prec})
    res["bins"] = bins
    # pixel metrics inside the footprint/band
    prob = det.probability.values
    lon_g, lat_g = None, None
    X, Y = np.meshgrid(xs, ys)
    from lunarmap.crs import xy_to_lonlat

    lon_g, lat_g = xy_to_lonlat(X, Y, crs)
    region = (lat_g >= lat_band[0]) & (lat_g <= lat_band[1]) & np.isfinite(prob)
    truth = rim_raster(cat, elev) & region
    pred = (prob >= 0.5) & region
    inter = (truth & pred).sum()
    union = (truth | pred).sum()
    res["pixel_iou"] = float(inter / union) if union else float("nan")
    res["pixel_recall"] = float(inter / truth.sum()) if truth.sum() else float("nan")
    return res


def fmt(v, pct=True):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{100 * v:.0f} %" if pct else f"{v}"


def markdown(results, label):
    lines = [
        f"Detector: {label}. found = catalogue craters matched (recall = found / n cat); n det = detections "
        "with D >= D_min in the same footprint; correct = those matched (precision = correct / n det).",
        "",
        "| case | DEM (GSD) | catalogue, D ≥ D_min, band | n cat | found | n det | correct | precision | recall | F1 | med. pos. err / R | med. \\|ΔD\\|/D | strict P / R | pixel IoU / recall | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['dem']} ({r['gsd_m']:.0f} m) | {r['catalogue']} {r['d_min_m'] / 1000:.1f} km, "
            f"{r['lat_band'][0]:.0f}..{r['lat_band'][1]:.0f}° | {r['n_cat']} | {r['tp']} | {r['n_det']} | {r.get('tp_det', '–')} | {fmt(r['precision'])} | "
            f"{fmt(r['recall'])} | {fmt(r['f1'])} | {fmt(r['med_pos_err'])} | {fmt(r['med_diam_err'])} | "
            f"{fmt(r['strict_precision'])} / {fmt(r['strict_recall'])} | {r['pixel_iou']:.2f} / {r['pixel_recall']:.2f} | {r['runtime_s']} |"
        )
    lines += ["", "Per diameter bin (recall over catalogue D, precision over detected D):", "",
              "| case | D bin (km) | n cat | recall | n det | precision |", "|---|---|---|---|---|---|"]
    for r in results:
        for b in r["bins"]:
            hi = "∞" if not np.isfinite(b["d_hi_km"]) else f"{b['d_hi_km']:.0f}"
            lines.append(f"| {r['case']} | {b['d_lo_km']:.0f}–{hi} | {b['n_cat']} | {fmt(b['recall'])} | {b['n_det']} | {fmt(b['precision'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="crater model weights (default: shipped)")
    ap.add_argument("--baseline", choices=["curvature"], default=None, help="evaluate a no-network baseline instead")
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--scales", type=lambda s: tuple(int(v) for v in s.split(",")), default=C.DEFAULT_SCALES)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--min-px", type=float, default=5.0, help="evaluate catalogue craters >= this many px across")
    ap.add_argument("--cases", default="hkpolyu_1600m,head_1600m,head_480m")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tta", action="store_true", help="test-time augmentation (4 flips)")
    ap.add_argument("--r-min-px", type=int, default=None)
    ap.add_argument("--r-max-px", type=int, default=None)
    ap.add_argument("--coarse-r-min-px", type=int, default=None)
    ap.add_argument("--template-thresh", type=float, default=None)
    ap.add_argument("--target-thresh", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import dask

    dask.config.set(scheduler="synchronous" if args.threads == 1 else "threads")
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover
        pass
    if args.baseline:
        model, label = CurvatureBaseline(), "curvature baseline (no network)"
    else:
        from lunarmap.models import load_crater_model

        model = load_crater_model(args.weights)
        label = f"crater U-Net {getattr(model, 'card', {}).get('weights_sha256', '')[:12]}" + (" + TTA" if args.tta else "")
    cases = {
        "hkpolyu_1600m": (DEM_1600, "hkpolyu", (-80.0, -60.0)),
        "head_1600m": (DEM_1600, "head", (-90.0, -60.0)),
        "head_480m": (DEM_480, "head", (-90.0, -80.0)),
    }
    results = []
    for name in args.cases.split(","):
        dem, cat, band = cases[name]
        r = run_case(name, dem, cat, band, model, args)
        print(json.dumps({k: v for k, v in r.items() if k != "bins"}), flush=True)
        results.append(r)
    md = markdown(results, label)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"detector": label, "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
