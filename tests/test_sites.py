import json

import numpy as np
import pytest

from lunarmap.errors import CoordinateError, SitesError
from lunarmap.io import open_dem
from lunarmap.sites import artemis_regions, build_footprints, default_footprints, pad_at, read_sites


@pytest.fixture(scope="module")
def dem(shackleton_path):
    return open_dem(shackleton_path)


def test_artemis_regions_are_complete():
    r = artemis_regions()
    assert len(r) == 16  # 9 regions of 2024 (USGS polygons) + 7 regions only in the 2022 list
    assert {"Connecting Ridge", "Haworth", "Malapert Massif", "Slater Plain"} <= set(r["name"])
    usgs = r[r["geometry_source"].str.startswith("USGS")]
    assert len(usgs) == 9


def test_default_sites_on_shackleton_are_the_overlapping_regions(dem):
    f = default_footprints(dem)
    assert set(f["name"]) == {"Connecting Ridge", "Connecting Ridge Extension", "Peak Near Shackleton"}
    cr = f[f["name"] == "Connecting Ridge"].iloc[0]
    assert cr["status"] == "ok"  # fully inside the 51 km tile
    assert set(f.loc[f["name"] != "Connecting Ridge", "status"]) == {"partly outside DEM"}
    assert "Haworth" in f.attrs["regions_skipped"]


def test_grid_pads_keep_region_names_and_stay_inside(dem):
    f = default_footprints(dem, grid_spacing_m=2000.0)
    assert (f["kind"] == "pad").all()
    assert f["name"].str.startswith(("Connecting Ridge", "Peak Near Shackleton")).all()
    assert f["site_id"].is_unique
    left, bottom, right, top = dem.rio.bounds()
    assert (f["x"] - 100 >= left).all() and (f["x"] + 100 <= right).all()
    # pads of the fully covered 15 km region on a 2 km grid: 7x7 or 8x8 minus edge losses
    n_cr = (f["region"] == "Connecting Ridge").sum()
    assert 36 <= n_cr <= 64


def test_csv_points_with_0_360_longitudes_and_outside_sites(tmp_path, dem):
    p = tmp_path / "s.csv"
    p.write_text("name,lat,lon,label\nridge,-89.45,223.0,good\nfar away,-80.0,10.0,poor\n")
    s = read_sites(p)
    assert list(s["name"]) == ["ridge", "far away"]
    f = build_footprints(s, dem)
    assert f.loc[0, "lon"] == pytest.approx(-137.0)
    assert list(f["status"]) == ["ok", "outside DEM"]  # listed with the reason, not dropped
    assert f.loc[0, "label"] == "good"


def test_geojson_polygons_and_points_keep_names(tmp_path, dem):
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "my pad"}, "geometry": {"type": "Point", "coordinates": [-137.0, -89.45]}},
        {"type": "Feature", "properties": {"name": "my box"}, "geometry": {"type": "Polygon", "coordinates": [[
            [-150, -89.5], [-120, -89.5], [-120, -89.3], [-150, -89.3], [-150, -89.5]]]}},
    ]}
    p = tmp_path / "s.geojson"
    p.write_text(json.dumps(gj))
    f = build_footprints(read_sites(p), dem, grid_spacing_m=1000.0)
    assert "my pad" in set(f["name"])
    assert f["name"].str.startswith("my box #").sum() > 5


def test_bad_sites_files(tmp_path, dem):
    p = tmp_path / "bad.csv"
    p.write_text("name,lat,lon\nx,-95,0\n")
    with pytest.raises(SitesError, match="invalid lat/lon"):
        read_sites(p)
    p2 = tmp_path / "nocols.csv"
    p2.write_text("a,b\n1,2\n")
    with pytest.raises(SitesError, match="'lat' and 'lon'"):
        read_sites(p2)


def test_pad_at_validates_the_coordinate(dem):
    f = pad_at(-89.45, -137.0, dem)
    assert f.loc[0, "status"] == "ok" and f.loc[0, "radius_m"] == 100.0
    with pytest.raises(CoordinateError, match="outside the DEM"):
        pad_at(-85.0, 0.0, dem)
    with pytest.raises(CoordinateError, match="Invalid coordinate"):
        pad_at(-91.0, 0.0, dem)
