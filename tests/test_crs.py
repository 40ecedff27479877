import numpy as np
import pytest

from lunarmap.crs import (
    check_moon_crs,
    lonlat_to_xy,
    polar_hemisphere,
    standard_polar_crs,
    wrap_longitude,
    xy_to_lonlat,
)
from lunarmap.errors import CRSError


def test_polar_stereographic_matches_design_formula():
    # DESIGN.md: x = rho sin(lon), y = rho cos(lon), rho = 2R tan(pi/4 + lat/2) at the south pole
    R = 1737400.0
    lat, lon = -88.5, 37.0
    rho = 2 * R * np.tan(np.pi / 4 + np.radians(lat) / 2)
    x, y = lonlat_to_xy(lon, lat, "IAU_2015:30135")
    assert x == pytest.approx(rho * np.sin(np.radians(lon)), abs=1e-3)
    assert y == pytest.approx(rho * np.cos(np.radians(lon)), abs=1e-3)


@pytest.mark.parametrize("crs,lat", [("IAU_2015:30135", -87.0), ("IAU_2015:30130", 87.0)])
def test_round_trip_both_poles(crs, lat):
    lons = np.array([-179.0, -90.0, 0.0, 45.0, 179.5])
    x, y = lonlat_to_xy(lons, np.full(5, lat), crs)
    lon2, lat2 = xy_to_lonlat(x, y, crs)
    np.testing.assert_allclose(lon2, lons, atol=1e-9)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)


def test_longitudes_0_360_are_accepted_and_output_is_signed():
    assert wrap_longitude(223.0) == pytest.approx(-137.0)
    x1, y1 = lonlat_to_xy(223.0, -89.45, "IAU_2015:30135")
    x2, y2 = lonlat_to_xy(-137.0, -89.45, "IAU_2015:30135")
    assert (x1, y1) == pytest.approx((x2, y2))


def test_earth_crs_is_refused_with_a_fix():
    with pytest.raises(CRSError, match="Earth CRS.*write_crs"):
        check_moon_crs("EPSG:3031")
    with pytest.raises(CRSError, match="Earth"):
        check_moon_crs("EPSG:4326", projected=None)


def test_missing_and_geographic_crs():
    with pytest.raises(CRSError, match="no CRS"):
        check_moon_crs(None)
    with pytest.raises(CRSError, match="geographic"):
        check_moon_crs("IAU_2015:30100")


def test_unknown_datum_lola_file_is_recognised_and_normalised(shackleton_path):
    import rasterio

    with rasterio.open(shackleton_path) as ds:
        crs = ds.crs
    assert "unknown" in crs.to_wkt()  # the real file carries no Moon name
    c = check_moon_crs(crs)
    assert polar_hemisphere(c) == "south"
    assert standard_polar_crs(c).to_authority() == ("IAU_2015", "30135")
    assert polar_hemisphere("IAU_2015:30130") == "north"


def test_scale_factor_closed_form_matches_measured_distortion():
    from lunarmap.crs import MOON_RADIUS_M, scale_factor_at

    for crs, lat in (("IAU_2015:30135", -62.0), ("IAU_2015:30130", 75.0)):
        x, y = lonlat_to_xy(40.0, lat, crs)
        k = scale_factor_at(x, y, crs)
        assert k == pytest.approx(2.0 / (1.0 + np.sin(np.radians(abs(lat)))), rel=1e-9)
        # measured: a 100 m map step along x is 100/k m on the sphere
        lo1, la1 = xy_to_lonlat(x - 50.0, y, crs)
        lo2, la2 = xy_to_lonlat(x + 50.0, y, crs)
        p1, p2, dl = np.radians(la1), np.radians(la2), np.radians(lo2 - lo1)
        a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
        true = 2 * MOON_RADIUS_M * np.arcsin(np.sqrt(a))
        assert 100.0 / true == pytest.approx(k, rel=1e-6)
