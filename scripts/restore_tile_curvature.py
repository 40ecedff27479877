"""Put the embedded Shackleton tiles on the Moon sphere: add back the curvature drop rho^2 / 2R.

The 200 m and 40 m Shackleton tiles come from a robot simulator's terrain (tiles/README.md). It
stores heights above the plane tangent to the Moon at the south pole, not above the 1 737 400 m
sphere. Measured against the 480 m LOLA LDEM (heights above the sphere), the difference
(LDEM - tile) is ``c0 + c1 rho + c2 rho^2`` with rho the distance from the pole:

* 200 m tile: c2 = 2.885e-7 / m, residual std 7.3 m;
* 40 m tile: c2 = 2.686e-7 / m over its narrower rho range (6-18 km), residual std 11.3 m;

against ``1 / 2R = 2.878e-7 / m`` for a sphere seen from its tangent plane at the pole. Left
uncorrected, the tiles sank 133 m (median; 260 m at 30 km from the pole) below the regional DEMs,
and every slope was tilted by rho / R toward the pole (1 deg at 30 km).

This script adds ``rho^2 / (2 R)`` (the second-order height of a sphere above its polar tangent
plane; the fourth-order term is < 0.01 m at 50 km) to each valid pixel, writes the file
atomically and tags it (``LUNARMAP_HEIGHT_REFERENCE``) so that running it twice changes nothing.
It prints (LDEM - tile) before and after.

    PYTHONPATH=$PWD python scripts/restore_tile_curvature.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from scipy.ndimage import map_coordinates

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lunarmap.crs import MOON_RADIUS_M  # noqa: E402
from lunarmap.io import atomic_path  # noqa: E402

TILES = ROOT / "tiles"
FILES = ["shackleton_ridge_lola10m_200m_51km.tif", "shackleton_zoom_lola10m_40m_10km.tif"]
REFERENCE = "lola_ldem80s_480m_south_pole_250km.tif"
TAG = "LUNARMAP_HEIGHT_REFERENCE"
DONE = "sphere R=1737400 m (simulator tangent-plane heights + rho^2/2R)"


def _rho(src) -> np.ndarray:
    """Distance (m) of each pixel centre from the pole in the polar stereographic plane."""
    rows, cols = np.mgrid[0:src.height, 0:src.width]
    xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel(), offset="center")
    return np.hypot(np.asarray(xs), np.asarray(ys)).reshape(src.height, src.width)


def _vs_reference(z, src, ref) -> tuple[float, float]:
    """Median and std (m) of (reference - z) with the reference interpolated bilinearly."""
    rows, cols = np.mgrid[0:src.height, 0:src.width]
    xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel(), offset="center")
    inv = ~ref.transform
    c, r = inv * (np.asarray(xs), np.asarray(ys))
    zr = map_coordinates(ref.read(1).astype("float64"), [np.asarray(r) - 0.5, np.asarray(c) - 0.5], order=1,
                         mode="constant", cval=np.nan, prefilter=False).reshape(z.shape)
    d = zr - z
    d = d[np.isfinite(d)]
    return float(np.median(d)), float(np.std(d))


def main() -> int:
    with rasterio.open(TILES / REFERENCE) as ref:
        for name in FILES:
            path = TILES / name
            with rasterio.open(path) as src:
                tags = src.tags()
                profile = src.profile.copy()
                z = src.read(1).astype("float64")
                nodata = src.nodata
                valid = np.isfinite(z) if nodata is None or np.isnan(nodata) else (z != nodata)
                before = _vs_reference(np.where(valid, z, np.nan), src, ref)
                if tags.get(TAG) == DONE:
                    print(f"{name}: already on the sphere (LDEM - tile: median {before[0]:.1f} m, std {before[1]:.1f} m)")
                    continue
                rho = _rho(src)
                z2 = np.where(valid, z + rho**2 / (2.0 * MOON_RADIUS_M), z)
                after = _vs_reference(np.where(valid, z2, np.nan), src, ref)
                out = z2.astype(profile["dtype"])
            with atomic_path(path) as tmp:
                with rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(out, 1)
                    dst.update_tags(**tags)
                    dst.update_tags(**{TAG: DONE})
            print(f"{name}: LDEM - tile median {before[0]:.1f} m (std {before[1]:.1f}) -> {after[0]:.1f} m "
                  f"(std {after[1]:.1f}); added up to {np.nanmax(np.where(valid, rho, np.nan))**2 / 2 / MOON_RADIUS_M:.0f} m")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
