"""Shared fixtures. Environment first: OpenMP busy-waiting and hub access (ENVIRONMENT.md)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TILES = ROOT / "tiles"


@pytest.fixture(scope="session")
def tiles() -> Path:
    return TILES


@pytest.fixture(scope="session")
def shackleton_path() -> Path:
    return TILES / "shackleton_ridge_lola10m_200m_51km.tif"


@pytest.fixture(scope="session")
def zoom_path() -> Path:
    return TILES / "shackleton_zoom_lola10m_40m_10km.tif"


def write_geotiff(path, values, *, crs="IAU_2015:30135", gsd=100.0, x0=-5000.0, y0=5000.0, nodata=None, dtype="float32"):
    """Write a small single-band GeoTIFF (test helper)."""
    import rasterio
    from rasterio.transform import from_origin

    values = np.asarray(values)
    profile = dict(driver="GTiff", width=values.shape[1], height=values.shape[0], count=1, dtype=dtype,
                   transform=from_origin(x0, y0, gsd, gsd))
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values.astype(dtype), 1)
    return Path(path)
