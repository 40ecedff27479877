"""Validate lunarmap's illumination engine on the real LOLA south-pole DEMs (issue #3).

1. PSRs computed on the 480 m LOLA DEM (``tiles/lola_ldem80s_480m_south_pole_250km.tif``, far field
   ``tiles/lola_ldem256_south_polarstereo_1600m.tif``, observer at the surface) against the LOLA PSR
   catalogue (``tiles/lola_psr_catalog_south_75S_ge1km2.csv``, 120/60 m product, PSRs >= 1 km²):
   share of catalogued PSRs whose centroid falls on (or within 1 px of) a computed PSR pixel, by
   area class, and total PSR area in the region the DEM covers.
2. Solar illumination (time-mean visible disk fraction, 2 m above ground) on the connecting ridge
   and the Shackleton rim against published values (Gläser et al. 2014: 92.27 % at 2 m on a 20 m
   DTM over 19 yr; Gläser et al. 2018: 88.0 % at 2 m, best south-pole site on the ridge; Bussey et
   al. 2010: 86 % at 88.74°S 124.5°E from Kaguya topography) at three DEM resolutions
   (40 m zoom tile, 200 m tile, 480 m DEM) with far fields stitched from the coarser DEMs.
3. Timing of the three default illumination layers on the 200 m Shackleton DEM with far field.

Writes ``docs/illumination_validation.json`` (all numbers) and prints the Markdown tables of
``docs/illumination.md`` (``--markdown FILE.json`` reprints them from a saved report).
Run (1 thread, ~10-15 min on an idle core)::

    NUMBA_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/validate_illumination.py
    # --quick: 24 h step, 180 azimuths (a smoke test, not the published numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lunarmap import illumination as I  # noqa: E402
from lunarmap.crs import lonlat_to_xy, xy_to_lonlat  # noqa: E402
from lunarmap.horizon import far_field_offset, horizon_map  # noqa: E402
from lunarmap.io import open_dem  # noqa: E402

TILES = ROOT / "tiles"
MAZARICO_2011_SOUTH_PSR_KM2 = 16055.0  # poleward of 80°S, Mazarico et al. (2011) Icarus 211


class Timer:
    def __init__(self):
        self.t = {}

    def __call__(self, name):
        timer = self

        class _C:
            def __enter__(self):
                self.w, self.c = time.perf_counter(), time.process_time()

            def __exit__(self, *a):
                timer.t[name] = {"wall_s": round(time.perf_counter() - self.w, 1),
                                 "cpu_s": round(time.process_time() - self.c, 1)}
                print(f"  [{name}] wall {timer.t[name]['wall_s']} s, cpu {timer.t[name]['cpu_s']} s", flush=True)

        return _C()


def stitch(fine: xr.DataArray, coarse: xr.DataArray, *, half_width_m: float | None = None) -> xr.DataArray:
    """A far-field DEM on ``fine``'s grid (pixel size and phase) extended over ``coarse``'s extent
    (or ±half_width_m): ``fine`` where it has data, ``coarse`` bilinearly interpolated elsewhere,
    levelled to ``fine`` first (``lunarmap.horizon.far_field_offset``; a tile on another datum
    would otherwise get a wall around it: the embedded tiles now agree with the LDEMs to < 1 m)."""
    coarse = coarse - far_field_offset(fine, coarse)
    g = float(abs(fine.x[1] - fine.x[0]))
    hw = half_width_m if half_width_m is not None else float(min(abs(coarse.x).max(), abs(coarse.y).max()))
    x0 = float(fine.x[0])
    kx = np.arange(np.ceil((-hw - x0) / g), np.floor((hw - x0) / g) + 1)
    xs = x0 + kx * g
    y0 = float(fine.y[0])
    ky = np.arange(np.ceil((y0 - hw) / g), np.floor((y0 + hw) / g) + 1)
    ys = y0 - ky * g
    out = coarse.interp(x=xs, y=ys, method="linear").values.astype("float32")
    ix = np.searchsorted(xs, fine.x.values)
    iy = np.searchsorted(-ys, -fine.y.values)
    f = fine.values
    sub = out[np.ix_(iy, ix)]
    out[np.ix_(iy, ix)] = np.where(np.isfinite(f), f, sub)
    da = xr.DataArray(out, dims=("y", "x"), coords={"y": ys, "x": xs}, name="elevation", attrs=dict(fine.attrs))
    return da.rio.write_crs(fine.rio.crs)


def window_stats(dem, far, box, *, obs, n_az, window, chunk=32):
    """Illumination statistics on the pixels of ``dem`` inside box=(xmin, xmax, ymin, ymax) only
    (Dask culls the other chunks; the whole DEM and far field remain the terrain)."""
    sel = (dem.x >= box[0]) & (dem.x <= box[1]) & (dem.y >= box[2]) & (dem.y <= box[3])
    ix = np.where(sel.any("y").values)[0]
    iy = np.where(sel.any("x").values)[0]
    hor = horizon_map(dem.chunk({"y": chunk, "x": chunk}), n_azimuths=n_az, far_field=far, observer_height_m=obs)
    hor = hor.isel(y=slice(iy[0], iy[-1] + 1), x=slice(ix[0], ix[-1] + 1))
    sub = dem.isel(y=slice(iy[0], iy[-1] + 1), x=slice(ix[0], ix[-1] + 1))
    return I.illumination_statistics(hor, sub, observer_height_m=obs, **window).compute(scheduler="synchronous")


def area_km2(mask: np.ndarray, x, y, gsd, crs) -> float:
    """Area on the sphere of mask pixels (polar stereographic scale k = 2/(1+sin|lat|))."""
    xx, yy = np.meshgrid(x, y)
    _, lat = xy_to_lonlat(xx[mask], yy[mask], crs)
    k = 2.0 / (1.0 + np.sin(np.radians(np.abs(lat))))
    return float(np.sum((gsd / k) ** 2) / 1e6)


def psr_validation(ds, dem, report):
    cat = pd.read_csv(TILES / "lola_psr_catalog_south_75S_ge1km2.csv")
    crs = dem.rio.crs
    x, y = lonlat_to_xy(cat.longitude.values, cat.latitude.values, crs)
    cat["x"], cat["y"] = x, y
    g = float(abs(dem.x[1] - dem.x[0]))
    xs, ys = dem.x.values, dem.y.values
    inside = (np.abs(x) <= xs.max()) & (np.abs(y) <= ys.max())
    cat = cat[inside].copy()
    col = np.rint((cat.x.values - xs[0]) / g).astype(int)
    row = np.rint((ys[0] - cat.y.values) / g).astype(int)
    psr = ds.psr.values
    valid = np.isfinite(ds.illumination_fraction.values)
    pad = np.pad(psr, 1)
    near = np.zeros_like(psr)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= pad[dy:dy + psr.shape[0], dx:dx + psr.shape[1]]
    cat["hit"] = psr[row, col]
    cat["hit1"] = near[row, col]
    cat["valid"] = valid[row, col]
    bins = [1, 2, 5, 10, 50, 1e9]
    labels = ["1-2", "2-5", "5-10", "10-50", ">=50"]
    cat["cls"] = pd.cut(cat.area, bins, right=False, labels=labels)
    rows = []
    for lab in labels:
        c = cat[(cat.cls == lab) & cat.valid]
        rows.append({"area_km2": lab, "n": int(len(c)), "centroid_in_psr_pct": round(100 * c.hit.mean(), 1) if len(c) else None,
                     "within_1px_pct": round(100 * c.hit1.mean(), 1) if len(c) else None,
                     "catalogue_area_km2": round(float(c.area.sum()), 1)})
    # control: the same test at random points of the DEM (how often would chance "find" a PSR?)
    rng = np.random.default_rng(0)
    rr_, cc_ = rng.integers(0, psr.shape[0], 20000), rng.integers(0, psr.shape[1], 20000)
    ok = valid[rr_, cc_]
    report["psr_control_random_points"] = {"n": int(ok.sum()), "in_psr_pct": round(100 * float(psr[rr_, cc_][ok].mean()), 1),
                                           "within_1px_pct": round(100 * float(near[rr_, cc_][ok].mean()), 1)}
    c = cat[cat.valid]
    rows.append({"area_km2": "all", "n": int(len(c)), "centroid_in_psr_pct": round(100 * c.hit.mean(), 1),
                 "within_1px_pct": round(100 * c.hit1.mean(), 1), "catalogue_area_km2": round(float(c.area.sum()), 1)})
    report["psr_by_class"] = rows
    # areas: inside the DEM square, and inside the inscribed disk (complete coverage, ~85.9°S)
    xx, yy = np.meshgrid(xs, ys)
    rho_max = float(xs.max())
    disk = np.hypot(xx, yy) <= rho_max
    comp_sq = area_km2(psr & valid, xs, ys, g, crs)
    comp_disk = area_km2(psr & valid & disk, xs, ys, g, crs)
    cat_disk = float(cat[np.hypot(cat.x, cat.y) <= rho_max].area.sum())
    lat_edge = float(xy_to_lonlat(rho_max, 0.0, crs)[1])
    report["psr_area"] = {
        "computed_km2_dem_square": round(comp_sq, 1),
        "catalogue_km2_centroids_in_square": round(float(cat.area.sum()), 1),
        "disk_edge_lat_deg": round(lat_edge, 2),
        "computed_km2_disk": round(comp_disk, 1),
        "catalogue_km2_centroids_in_disk": round(cat_disk, 1),
        "mazarico2011_km2_poleward_80S": MAZARICO_2011_SOUTH_PSR_KM2,
        "catalogue_km2_poleward_80S": round(float(pd.read_csv(TILES / "lola_psr_catalog_south_75S_ge1km2.csv")
                                                .query("latitude <= -80").area.sum()), 1),
    }


def point_value(ds, lat, lon, var="illumination_fraction", radius_m=0.0):
    """Value at the pixel containing (lat, lon), and the max within radius_m."""
    crs = ds.rio.crs
    x, y = lonlat_to_xy(lon, lat, crs)
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    d = np.hypot(xx - x, yy - y)
    v = ds[var].values
    j, i = np.unravel_index(np.argmin(d), d.shape)
    out = {"at_point": float(v[j, i]), "distance_to_pixel_m": float(d[j, i])}
    if radius_m > 0:
        m = (d <= radius_m) & np.isfinite(v)
        k = np.nanargmax(np.where(m, v, -1))
        jj, ii = np.unravel_index(k, v.shape)
        lo, la = xy_to_lonlat(float(ds.x[ii]), float(ds.y[jj]), crs)
        out.update({f"max_within_{radius_m:g}m": float(v[jj, ii]), "max_lat": round(float(la), 4), "max_lon": round(float(lo), 3)})
    return out


def figure(ds: xr.Dataset, path) -> None:
    """docs/illumination_480m.png: illumination fraction, computed PSR outline, catalogue centroids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cat = pd.read_csv(TILES / "lola_psr_catalog_south_75S_ge1km2.csv")
    x, y = lonlat_to_xy(cat.longitude.values, cat.latitude.values, "IAU_2015:30135")
    m = (np.abs(x) < float(ds.x.max())) & (np.abs(y) < float(ds.y.max()))
    g = float(abs(ds.x[1] - ds.x[0])) / 2e3
    fig, ax = plt.subplots(figsize=(7, 6.2))
    ext = [float(ds.x.min()) / 1e3 - g, float(ds.x.max()) / 1e3 + g, float(ds.y.min()) / 1e3 - g, float(ds.y.max()) / 1e3 + g]
    im = ax.imshow(ds.illumination_fraction.values, extent=ext, cmap="inferno", vmin=0, vmax=1)
    ax.contour(ds.x / 1e3, ds.y / 1e3, ds.psr.values.astype(float), levels=[0.5], colors="cyan", linewidths=0.4)
    ax.scatter(x[m] / 1e3, y[m] / 1e3, s=3, c="lime", label="LOLA PSR catalogue centroids (>=1 km²)")
    ax.set_xlabel("x (km, IAU_2015:30135)")
    ax.set_ylabel("y (km)")
    ax.set_title("lunarmap: illumination fraction (surface), 480 m LOLA DEM + 1600 m far field,\n"
                 "2025-2043 (6 h); cyan = computed PSR boundary", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    plt.colorbar(im, ax=ax, label="time-mean visible solar disk fraction")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(r: dict) -> str:
    """The Markdown tables of docs/illumination.md from a report dict."""
    L = ["| catalogue PSR area class (km²) | n in DEM | centroid on computed PSR | within 1 px | catalogued area (km²) |",
         "|---|---:|---:|---:|---:|"]
    for c in r["psr_by_class"]:
        L.append(f"| {c['area_km2']} | {c['n']} | {c['centroid_in_psr_pct']} % | {c['within_1px_pct']} % | {c['catalogue_area_km2']:,} |")
    if "psr_control_random_points" in r:
        c = r["psr_control_random_points"]
        L.append(f"| control: {c['n']:,} random DEM points | | {c['in_psr_pct']} % | {c['within_1px_pct']} % | |")
    a = r["psr_area"]
    L += ["", "| PSR area | computed (480 m, surface) | LOLA PSR catalogue (sum of PSRs ≥ 1 km² by centroid) |",
          "|---|---:|---:|",
          f"| DEM square (±124.8 km) | {a['computed_km2_dem_square']:,} km² | {a['catalogue_km2_centroids_in_square']:,} km² |",
          f"| inscribed disk (poleward of {abs(a['disk_edge_lat_deg'])}°S) | {a['computed_km2_disk']:,} km² | {a['catalogue_km2_centroids_in_disk']:,} km² |",
          f"| poleward of 80°S (not covered by the DEM) | — | {a['catalogue_km2_poleward_80S']:,} km² (Mazarico et al. 2011: {a['mazarico2011_km2_poleward_80S']:,.0f} km²) |"]
    rr = r["ridge_rim_2m"]
    L += ["", "| site (2 m above ground unless noted) | DEM (near / far field) | lunarmap | published |", "|---|---|---:|---|"]
    L.append(f"| connecting-ridge massif 89.45°S 137.3°W, best pixel ≤ 3 km | 480 m / 1600 m | "
             f"{100 * rr['ridge_massif_480m']['max_within_3000m']:.1f} % | Gläser et al. 2014: 92.27 % (20 m DTM, 2 m, 19 yr) |")
    L.append(f"| same | 200 m / 480+1600 m | {100 * rr['ridge_massif_200m']['max_within_3000m']:.1f} % | Gläser et al. 2018: 88.0 % (20 m, 2 m, 2017-2037) |")
    L.append(f"| same, far field 480 m only (no terrain beyond 85.9°S) | 200 m / 480 m | {100 * rr['ridge_massif_200m_far480_only']['max_within_3000m']:.1f} % | |")
    for k, lab in (("40m", "40 m / 200+480 m"), ("200m", "200 m / 480+1600 m"), ("480m", "480 m / 1600 m")):
        z = rr[f"zoom_footprint_{k}"]
        L.append(f"| 40 m zoom-tile footprint (89.39-89.82°S): max / p99 / mean | {lab} | "
                 f"{100 * z['max']:.1f} / {100 * z['p99']:.1f} / {100 * z['mean']:.1f} % | |")
    b = r["shackleton_rim_480m_surface"]["bussey2010_88.74S_124.5E"]
    L.append(f"| Shackleton rim 88.74°S 124.5°E, surface: pixel / best ≤ 2 km | 480 m / 1600 m | "
             f"{100 * b['at_point']:.1f} / {100 * b['max_within_2000m']:.1f} % | Bussey et al. 2010: 86 % (Kaguya DTM, year 2020) |")
    bp = rr["bussey_point_480m_2m"]
    L.append(f"| same pixel, 2 m | 480 m / 1600 m | {100 * bp['illumination_fraction']:.1f} % (longest night {bp['longest_night_h']:.0f} h) | |")
    L += ["", "| step | wall (s) | CPU (s) |", "|---|---:|---:|"]
    for k, v in r["timings"].items():
        L.append(f"| {k} | {v['wall_s']} | {v['cpu_s']} |")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="24 h step, 180 azimuths (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "illumination_validation.json"))
    ap.add_argument("--save-nc", default=None, help="also save the 480 m statistics (NetCDF) here")
    ap.add_argument("--figure", default=None, help="write the 480 m map figure (PNG) here")
    ap.add_argument("--figure-from", default=None, help="only draw --figure from a --save-nc NetCDF")
    ap.add_argument("--markdown", default=None, help="only print the tables of a saved report JSON")
    a = ap.parse_args(argv)
    if a.figure_from:
        figure(xr.open_dataset(a.figure_from), a.figure or str(ROOT / "docs" / "illumination_480m.png"))
        return None
    if a.markdown:
        print(markdown(json.loads(Path(a.markdown).read_text())))
        return None
    n_az = 180 if a.quick else 360
    window = {"step_hours": 24.0} if a.quick else {}
    T = Timer()
    report = {"n_azimuths": n_az, "window": {k: str(v) for k, v in window.items()} or "default (2025-01-01..2043-08-12, 6 h)"}
    print("loading DEMs", flush=True)
    d480 = open_dem(TILES / "lola_ldem80s_480m_south_pole_250km.tif", chunks=None)
    d1600 = open_dem(TILES / "lola_ldem256_south_polarstereo_1600m.tif", chunks=None)
    d200 = open_dem(TILES / "shackleton_ridge_lola10m_200m_51km.tif", chunks=None)
    d40 = open_dem(TILES / "shackleton_zoom_lola10m_40m_10km.tif", chunks=None)

    # ---- 1. PSRs on the 480 m DEM, observer at the surface (Mazarico et al. 2011 definition)
    print("1. 480 m DEM, surface observer: horizon + statistics (the long step)", flush=True)
    with T("480m_horizon"):
        hor = horizon_map(d480.chunk({"y": 128, "x": 128}), n_azimuths=n_az, far_field=d1600, observer_height_m=0.0)
        hor = hor.compute(scheduler="synchronous")
    with T("480m_statistics"):
        ds480 = I.illumination_statistics(hor, d480, observer_height_m=0.0, **window).compute(scheduler="synchronous")
    del hor
    if a.save_nc:
        ds480.drop_vars("spatial_ref", errors="ignore").to_netcdf(a.save_nc)
    if a.figure:
        figure(ds480, a.figure)
    psr_validation(ds480, d480, report)
    report["shackleton_rim_480m_surface"] = {
        "bussey2010_88.74S_124.5E": point_value(ds480, -88.74, 124.5, radius_m=2000.0),
        "peak_near_shackleton_88.89S_127.42E": point_value(ds480, -88.89, 127.42, radius_m=2000.0),
    }
    report["max_illumination_480m_surface"] = point_value(ds480, -89.45, -137.3, radius_m=1e7)

    # ---- 2. ridge / rim at 2 m above ground, three resolutions, the zoom tile's footprint
    print("2. connecting ridge and Shackleton rim, 2 m above ground", flush=True)
    f480 = stitch(d480, d1600)  # 480 m grid over ±609 km: 480 m data + 1600 m beyond ~86°S
    f200 = stitch(d200, d480, half_width_m=124_800.0)  # 200 m grid over ±125 km
    zoom_box = (float(d40.x.min()), float(d40.x.max()), float(d40.y.min()), float(d40.y.max()))
    ridge = (-89.45, -137.3)  # connecting-ridge massif (DESIGN.md example; ≈ the 200 m tile's highest point)
    rx, ry = lonlat_to_xy(ridge[1], ridge[0], d200.rio.crs)
    ridge_box = (rx - 3000, rx + 3000, ry - 3000, ry + 3000)
    res = {}
    with T("40m_zoom_tile_full"):
        s40 = window_stats(d40, f200, zoom_box, obs=2.0, n_az=n_az, window=window, chunk=64)
    with T("200m_zoom_and_ridge_windows"):
        s200z = window_stats(d200, f480, zoom_box, obs=2.0, n_az=n_az, window=window)
        s200r = window_stats(d200, f480, ridge_box, obs=2.0, n_az=n_az, window=window)
    with T("480m_windows_2m"):
        s480z = window_stats(d480, d1600, zoom_box, obs=2.0, n_az=n_az, window=window)
        s480r = window_stats(d480, d1600, ridge_box, obs=2.0, n_az=n_az, window=window)
    for name, s in (("40m", s40), ("200m", s200z), ("480m", s480z)):
        v = s.illumination_fraction.values
        res[f"zoom_footprint_{name}"] = {"max": float(np.nanmax(v)), "p99": float(np.nanpercentile(v, 99)),
                                         "mean": float(np.nanmean(v)), "psr_pct": float(100 * s.psr.values.mean()),
                                         "longest_night_h_at_max": float(s.longest_night.values.flat[np.nanargmax(v)]),
                                         "earth_at_max": float(s.earth_visibility_fraction.values.flat[np.nanargmax(v)])}
    for name, s in (("200m", s200r), ("480m", s480r)):
        res[f"ridge_massif_{name}"] = point_value(s, *ridge, radius_m=3000.0)
        v = s.illumination_fraction.values
        res[f"ridge_massif_{name}"]["longest_night_h_at_max"] = float(s.longest_night.values.flat[np.nanargmax(v)])
    # effect of the far field beyond the 480 m DEM (~86°S): 200 m ridge window with 480 m only
    with T("200m_ridge_far480_only"):
        s200r_near = window_stats(d200, d480, ridge_box, obs=2.0, n_az=n_az, window=window)
    res["ridge_massif_200m_far480_only"] = point_value(s200r_near, *ridge, radius_m=3000.0)
    # Shackleton rim (Bussey) at 2 m on the 480 m DEM (outside the 200 m tile)
    with T("480m_rim_timeline_2m"):
        tl = I.sun_timeline(d480, -88.74, 124.5, far_field=d1600, observer_height_m=2.0, n_azimuths=n_az, **window)
    res["bussey_point_480m_2m"] = tl.attrs["summary"]
    report["ridge_rim_2m"] = res

    # ---- 3. timing of the three default illumination layers on the Shackleton DEM + far field
    print("3. timing: illumination_fraction, psr, earth_visibility_fraction on the 200 m tile", flush=True)
    from lunarmap.layers import compute_layers

    with T("layers_200m_tile_far480"):
        lay = compute_layers(open_dem(TILES / "shackleton_ridge_lola10m_200m_51km.tif"),
                             ["illumination_fraction", "psr", "earth_visibility_fraction"], far_field=d480)
        out = lay[["illumination_fraction", "psr", "earth_visibility_fraction"]].compute()
    report["layers_200m"] = {"max_illumination": float(out.illumination_fraction.max()),
                             "psr_pct": float(100 * out.psr.mean()),
                             "mean_earth_visibility": float(out.earth_visibility_fraction.mean())}
    report["timings"] = T.t
    report["cpu_count"] = os.cpu_count()
    report["load_avg_at_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2, default=float))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
