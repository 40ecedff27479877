"""Real-DEM training chips with catalogue rim labels (lunarmap.catalog_chips)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from lunarmap import catalog_chips as cc
from lunarmap.crs import MOON_RADIUS_M

TILES = Path(__file__).resolve().parents[1] / "tiles"
GLOBAL_DEM = TILES / "lola_ldem256_global_eqc_0p25deg.tif"
HEAD = TILES / "head2010_craters_ge20km_global.csv"


def _bowl_world(lon_c=30.0, lat_c=10.0, diameter_m=200e3, depth_m=2000.0, step=0.1):
    """A global lon/lat DEM, flat except one parabolic bowl, and a one-crater catalogue."""
    lons = -180 + step / 2 + step * np.arange(int(360 / step))
    lats = 90 - step / 2 - step * np.arange(int(180 / step))
    lo, la = np.meshgrid(np.radians(lons), np.radians(lats))
    b0, l0 = np.radians(lat_c), np.radians(lon_c)
    cosd = np.sin(b0) * np.sin(la) + np.cos(b0) * np.cos(la) * np.cos(lo - l0)
    d = MOON_RADIUS_M * np.arccos(np.clip(cosd, -1, 1))
    r = diameter_m / 2
    z = np.where(d < r, -depth_m * (1 - (d / r) ** 2), 0.0).astype(np.float32)
    dem = cc.GlobalDEM(z, lon0=lons[0], lat0=lats[0], dlon=step, dlat=-step)
    cat = pd.DataFrame({"lon": [lon_c], "lat": [lat_c], "diameter_m": [diameter_m]})
    return dem, cat


@pytest.mark.parametrize("rotation", [0.0, 37.0, 90.0])
def test_label_ring_sits_on_the_rendered_crater(rotation):
    dem, cat = _bowl_world()
    gsd = 10e3
    ch = cc.catalog_chip(dem, cat, lon=33.0, lat=12.0, gsd=gsd, size=96, rotation_deg=rotation)
    row = ch.craters.iloc[0]
    assert row.labelled and row.diameter_px == pytest.approx(20.0)
    # the bowl's deepest pixel is the catalogue centre, wherever the rotation puts it
    i, j = np.unravel_index(np.argmin(ch.elevation), ch.elevation.shape)
    assert np.hypot(j - row.x_px, i - row.y_px) <= 1.0
    # every label pixel is on the rim ring (+-1 px) and the rim circle is where the bowl ends
    ii, jj = np.nonzero(ch.rim_mask)
    dist = np.hypot(jj - row.x_px, ii - row.y_px)
    assert dist.min() >= 10 - 1.01 and dist.max() <= 10 + 1.01
    yy, xx = np.mgrid[0:96, 0:96]
    rr = np.hypot(xx - row.x_px, yy - row.y_px)
    assert np.all(ch.elevation[rr < 8] < -300) and np.all(ch.elevation[rr > 11.5] == 0)


def test_rotation_turns_the_chip():
    dem, cat = _bowl_world()
    a = cc.catalog_chip(dem, cat, lon=35.0, lat=10.0, gsd=10e3, size=64, rotation_deg=0.0).craters.iloc[0]
    b = cc.catalog_chip(dem, cat, lon=35.0, lat=10.0, gsd=10e3, size=64, rotation_deg=90.0).craters.iloc[0]
    c = (64 - 1) / 2
    # the crater lies ~5 deg west of the centre: left of it unrotated; with the chip's x axis turned
    # to north its up axis points west, so the crater is above the centre
    assert a.x_px < c - 10 and abs(a.y_px - c) < 3
    assert b.y_px < c - 10 and abs(b.x_px - c) < 3


def test_incomplete_labels_are_refused():
    dem, cat = _bowl_world()
    with pytest.raises(ValueError, match="incomplete"):
        cc.catalog_chip(dem, cat, lon=30.0, lat=10.0, gsd=2000.0, complete_diameter_m=20e3)


def test_dataset_is_reproducible_and_keeps_out_of_the_excluded_band():
    dem, cat = _bowl_world(step=0.5)
    a = list(cc.catalog_dataset(6, dem, cat, size=32, gsd_range=(20e3, 40e3), seed=3, exclude_lat_below=-20.0))
    b = list(cc.catalog_dataset(3, dem, cat, size=32, gsd_range=(20e3, 40e3), seed=3, start=3,
                                exclude_lat_below=-20.0))
    for x, y in zip(a[3:], b):
        np.testing.assert_array_equal(x.elevation, y.elevation)
        assert (x.lon, x.lat, x.gsd, x.rotation_deg) == (y.lon, y.lat, y.gsd, y.rotation_deg)
    assert min(c.min_lat for c in a) >= -20.0
    assert len({c.lon for c in a}) == 6


def test_loader_rejects_projected_and_gappy_rasters(tmp_path):
    z = np.zeros((4, 8), np.int16)
    p = tmp_path / "proj.tif"
    with rasterio.open(p, "w", driver="GTiff", width=8, height=4, count=1, dtype="int16",
                       crs="+proj=stere +lat_0=-90 +R=1737400 +units=m", transform=from_origin(0, 400, 100, 100)) as d:
        d.write(z, 1)
    with pytest.raises(ValueError, match="geographic"):
        cc.load_global_dem(p)
    q = tmp_path / "gap.tif"
    z[1, 1] = -32768
    with rasterio.open(q, "w", driver="GTiff", width=8, height=4, count=1, dtype="int16", nodata=-32768,
                       crs="+proj=longlat +R=1737400", transform=from_origin(-180, 90, 45, 45)) as d:
        d.write(z, 1)
    with pytest.raises(ValueError, match="nodata"):
        cc.load_global_dem(q)


def test_real_chip_on_copernicus():
    """LOLA LDEM_256 at 0.25 deg + Head et al. 2010: Copernicus' labelled rim stands ~3 km above its floor."""
    dem = cc.load_global_dem(GLOBAL_DEM)
    cat = cc.load_catalogue(HEAD)
    ch = cc.catalog_chip(dem, cat, lon=-20.08, lat=9.62, gsd=6000.0, size=64, complete_diameter_m=20e3)
    t = ch.craters
    cop = t.iloc[np.argmin(np.hypot(t.lon + 20.08, t.lat - 9.62))]
    assert cop.labelled and 80e3 < cop.diameter_m < 100e3
    yy, xx = np.mgrid[0:64, 0:64]
    rr = np.hypot(xx - cop.x_px, yy - cop.y_px)
    rim = ch.elevation[np.abs(rr - cop.diameter_px / 2) <= 1].mean()
    floor = ch.elevation[rr <= 2].mean()
    assert rim - floor > 2500.0
