"""Build the offline demo map on the real Shackleton tile and (optionally) screenshot it headless.

    PYTHONPATH=$PWD python scripts/demo_map.py --out /tmp/lunarmap_demo.html [--png /tmp/map.png]

Layers: the real LOLA DEM (tiles/shackleton_ridge_lola10m_200m_51km.tif), a numpy Horn hillshade
and slope (sun azimuth 315 deg, elevation 45 deg: cartographic relief, not real polar lighting), and
a "low" mask (elevation below the 5th percentile) standing in for a PSR layer. Sites: Shackleton's
rim/floor and the connecting ridge at known selenographic positions, with FAKE ranks/scores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import xarray as xr
from shapely.geometry import Point

from lunarmap.crs import lonlat_to_xy
from lunarmap.io import open_dem
from lunarmap.maps import save_map, site_map

TILE = Path(__file__).resolve().parents[1] / "tiles" / "shackleton_ridge_lola10m_200m_51km.tif"

# (name, lon E, lat) - positions from the IAU/USGS gazetteer (Shackleton centre 89.67S 129.78E)
# and the Artemis III "connecting ridge" region; ranks and scores are made up.
DEMO_SITES = [
    ("Shackleton centre (floor)", 129.78, -89.67, None, None, "fails slope"),
    ("Shackleton rim A", 197.0, -89.45, 2, 0.71, "ok"),
    ("Connecting ridge", 222.7, -89.45, 1, 0.86, "ok"),
    ("de Gerlache rim", 272.0, -88.50, 3, 0.52, "ok"),
    ("Outside the DEM", 0.0, -85.0, None, None, "outside DEM"),
]


def hillshade_slope(z: np.ndarray, gsd: float, az_deg=315.0, el_deg=45.0):
    """Horn (1981) gradients -> Lambertian hillshade 0..1 and slope (deg). NaN at the border."""
    zp = np.pad(z, 1, mode="constant", constant_values=np.nan)
    a, b, c = zp[:-2, :-2], zp[:-2, 1:-1], zp[:-2, 2:]
    d, f = zp[1:-1, :-2], zp[1:-1, 2:]
    g, h, i = zp[2:, :-2], zp[2:, 1:-1], zp[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * gsd)
    dzdy = ((a + 2 * b + c) - (g + 2 * h + i)) / (8 * gsd)  # +y = north (row 0 is north)
    s = np.arctan(np.hypot(dzdx, dzdy))
    asp = np.arctan2(-dzdx, -dzdy)
    az, el = np.radians(az_deg), np.radians(el_deg)
    hs = np.clip(np.sin(el) * np.cos(s) + np.cos(el) * np.sin(s) * np.cos(az - asp), 0, 1)
    return hs.astype("float32"), np.degrees(s).astype("float32")


def demo_inputs():
    dem = open_dem(TILE, chunks=None)
    gsd = float(dem.attrs["gsd"])
    hs, sl = hillshade_slope(np.asarray(dem.values, dtype="float64"), gsd)
    low = dem < float(np.nanpercentile(dem.values, 5))
    layers = xr.Dataset(
        {
            "hillshade": (("y", "x"), hs, {"units": "1", "long_name": "hillshade"}),
            "elevation": dem,
            "slope": (("y", "x"), sl, {"units": "deg", "long_name": "slope"}),
            "psr": low.where(np.isfinite(dem), False).astype(bool).assign_attrs(
                units="1", long_name="stand-in PSR mask: elevation below its 5th percentile"
            ),
        },
        coords=dem.coords,
    )
    layers = layers.rio.write_crs(dem.rio.crs)
    crs = dem.rio.crs
    rows = []
    for k, (name, lon, lat, rank, score, status) in enumerate(DEMO_SITES):
        x, y = lonlat_to_xy(lon, lat, crs)
        rows.append(
            dict(
                site_id=f"S{k:02d}", name=name, rank=rank, score=score, status=status,
                pass_slope=status != "fails slope", pass_sun=rank is not None, pass_earth=True,
                top_factors="illumination_fraction_mean +0.21\nslope_p95 -0.08" if rank else None,
                slope_mean=float(k * 1.5 + 2),
                geometry=Point(float(x), float(y)).buffer(500.0) if k % 2 else Point(float(x), float(y)),
            )
        )
    sites = gpd.GeoDataFrame(rows, crs=crs)
    return layers, sites


def screenshot(html: Path, png: Path, size=(1200, 900)) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("no chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as prof:
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={prof}", "--virtual-time-budget=5000", f"--screenshot={png}",
            f"--window-size={size[0]},{size[1]}", html.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/lunarmap_demo.html")
    ap.add_argument("--png")
    args = ap.parse_args()
    layers, sites = demo_inputs()
    m = site_map(layers, sites, title="lunarmap demo: Shackleton (real LOLA 200 m DEM, fake ranks)")
    out = save_map(m, args.out)
    print(out, f"{out.stat().st_size / 1e6:.2f} MB")
    if args.png:
        screenshot(out, Path(args.png))
        print(args.png)


if __name__ == "__main__":
    main()
