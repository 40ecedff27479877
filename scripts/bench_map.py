"""Benchmark: time and page size of site_map + map_html on computed (numpy) layers.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/bench_map.py

Reference in the same process: folium's own route for the same arrays (folium.Map in
L.CRS.Simple + folium.raster_layers.ImageOverlay(ndarray, colormap) per layer, CDN page), so the
ratio is machine-independent. folium's PNG writer is slow (~40 s per 1024x1024 layer here), so
the comparison is made at max_overlay_px=256; the lunarmap rows at 1024 px stand alone.
Medians of 3 repeats (1 for the folium reference). Layers are a random-walk surface (worst case
for PNG compression) on a south-polar grid.
"""

from __future__ import annotations

import time

import numpy as np
import rioxarray  # noqa: F401
import xarray as xr

from lunarmap.io import elevation_from_array
from lunarmap.maps import map_html, site_map


def layers(n: int) -> xr.Dataset:
    rng = np.random.default_rng(0)
    z = np.cumsum(np.cumsum(rng.normal(size=(n, n)), 0), 1).astype("float32")
    e = elevation_from_array(z, gsd=20.0)
    hs = (z - z.min()) / (z.max() - z.min())
    ds = xr.Dataset(
        {
            "elevation": e,
            "hillshade": e.copy(data=hs),
            "slope": e.copy(data=np.abs(z) % 30),
            "illumination_fraction": e.copy(data=hs[::-1]),
            "psr": e.copy(data=z < np.percentile(z, 5)),
        }
    )
    return ds.rio.write_crs(e.rio.crs)


def folium_reference(ds: xr.Dataset, max_px: int) -> str:
    import folium
    from matplotlib import colormaps

    f = max(1, -(-ds.sizes["y"] // max_px))
    m = folium.Map(crs="Simple", tiles=None, location=[0, 0], zoom_start=0)
    half = ds.sizes["x"] * 20.0 / 2
    for name, da in ds.data_vars.items():
        a = np.asarray(da.values[::f, ::f], dtype="float64")
        a = (a - np.nanmin(a)) / max(np.nanmax(a) - np.nanmin(a), 1e-9)
        folium.raster_layers.ImageOverlay(a, [[-half, -half], [half, half]], colormap=colormaps["viridis"], name=name).add_to(m)
    return m.get_root().render()


def median_time(fn, repeats=3):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def main():
    print("| grid | layers | max_overlay_px | lunarmap site_map+map_html (s) | folium reference (s) | ratio | page (MB) |")
    print("|---|---|---|---|---|---|---|")
    for n in (1024, 4096):
        ds = layers(n)
        t1, page = median_time(lambda ds=ds: map_html(site_map(ds, None)))
        print(f"| {n}x{n} | {len(ds.data_vars)} | 1024 | {t1:.2f} | - | - | {len(page) / 1e6:.2f} |")
    ds = layers(1024)
    t1, page = median_time(lambda: map_html(site_map(ds, None, max_overlay_px=256)))
    t0, _ = median_time(lambda: folium_reference(ds, 256), repeats=1)
    print(f"| 1024x1024 | {len(ds.data_vars)} | 256 | {t1:.2f} | {t0:.2f} | {t1 / t0:.3f} | {len(page) / 1e6:.2f} |")


if __name__ == "__main__":
    main()
