import numpy as np
import pytest

from lunarmap.errors import ChipSizeError
from lunarmap.io import elevation_from_array, open_dem
from lunarmap.terrain import aspect, hillshade, roughness, scale_factor, slope


def plane(angle_deg, downslope_az_deg, n=40, gsd=10.0):
    """A plane with a given slope whose downslope direction is the given grid azimuth."""
    yy, xx = np.mgrid[0:n, 0:n]
    x = xx * gsd
    y = -yy * gsd  # rows go south
    az = np.radians(downslope_az_deg)
    # height decreases along (sin az, cos az)
    z = -np.tan(np.radians(angle_deg)) * (x * np.sin(az) + y * np.cos(az))
    return elevation_from_array(z + 1000.0, gsd=gsd, x0=0.0, y0=0.0)


@pytest.mark.parametrize("angle,az", [(10.0, 270.0), (5.0, 0.0), (30.0, 135.0), (1.0, 200.0)])
def test_tilted_plane_slope_and_aspect(angle, az):
    e = plane(angle, az)
    s = slope(e).values
    a = aspect(e).values
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(s[inner], angle, atol=1e-3)
    np.testing.assert_allclose(a[inner], az, atol=1e-3)
    assert np.isnan(s[0]).all()  # the border has no full Horn stencil
    # float32 heights: residuals of a perfect plane are at the 1e-5 m level
    np.testing.assert_allclose(roughness(e).values[inner][2:-2, 2:-2], 0.0, atol=1e-3)


def test_hillshade_of_flat_ground_is_sin_elevation():
    e = elevation_from_array(np.zeros((10, 10)), gsd=20.0, x0=0, y0=0)
    h = hillshade(e, sun_elevation_deg=30.0).values
    np.testing.assert_allclose(h[1:-1, 1:-1], 0.5, atol=1e-6)


def test_hillshade_facing_the_sun_is_brightest():
    # slope dipping toward the sun's azimuth faces away from it
    toward = hillshade(plane(20.0, 90.0), sun_azimuth_deg=270.0, sun_elevation_deg=20.0).values[5, 5]
    away = hillshade(plane(20.0, 270.0), sun_azimuth_deg=270.0, sun_elevation_deg=20.0).values[5, 5]
    # a slope whose downslope direction is 270 faces the sun at azimuth 270
    assert away > toward


def test_roughness_of_noise_matches_its_rms():
    rng = np.random.default_rng(1)
    z = 0.3 * np.arange(60)[None, :] + rng.normal(0.0, 2.0, (60, 60))
    r = roughness(elevation_from_array(z, gsd=5.0, x0=0, y0=0), window_radius_m=10.0).values
    # residual RMS of a plane fit over 25 px with 3 parameters: 2 * sqrt(22/25)
    assert np.nanmedian(r) == pytest.approx(2.0 * np.sqrt(22 / 25), rel=0.08)


@pytest.mark.parametrize("func", [slope, aspect, roughness, hillshade])
def test_dask_equals_numpy_across_chunk_borders(func, shackleton_path):
    lazy = open_dem(shackleton_path, chunks=50)  # 256 px -> uneven chunks, many borders
    eager = open_dem(shackleton_path, chunks=None)
    a = func(lazy)
    assert a.chunks is not None  # stays lazy
    np.testing.assert_allclose(a.values, func(eager).values, atol=1e-4, equal_nan=True)


def test_slope_agrees_with_xarray_spatial_on_real_tile(shackleton_path):
    xrspatial = pytest.importorskip("xrspatial")
    dem = open_dem(shackleton_path, chunks=None)
    ours = slope(dem).values
    ref = xrspatial.slope(dem).values
    ok = np.isfinite(ours) & np.isfinite(ref)
    assert ok.sum() > 0.95 * ours.size
    # Tolerance 0.01 deg: both are Horn (1981); ours also corrects grid spacing by the polar
    # stereographic scale factor, which is < 1.0002 within 40 km of the pole.
    assert np.max(np.abs(ours[ok] - ref[ok])) < 0.01
    assert 10.0 < np.mean(ours[ok]) < 16.0  # tiles/README: mean slope 12.8 deg


def test_scale_factor_polar_stereographic():
    # at 70 deg S, k = 2 / (1 + sin 70 deg) (Snyder 1987, eq. 21-4 with k0 = 1)
    from lunarmap.crs import lonlat_to_xy

    x, y = lonlat_to_xy(30.0, -70.0, "IAU_2015:30135")
    e = elevation_from_array(np.zeros((3, 3)), gsd=10.0, x0=x - 15, y0=y + 15)
    k = scale_factor(e).values[1, 1]
    assert k == pytest.approx(2.0 / (1.0 + np.sin(np.radians(70.0))), rel=1e-6)


def test_chunks_smaller_than_halo_raise():
    e = elevation_from_array(np.random.default_rng(0).normal(size=(64, 64)), gsd=10.0, chunks=4)
    with pytest.raises(ChipSizeError, match="rechunk"):
        roughness(e, window_radius_m=60.0)


def test_nodata_propagates_without_spreading_far():
    z = np.tile(np.arange(30.0), (30, 1))
    z[15, 15] = np.nan
    s = slope(elevation_from_array(z, gsd=1.0, x0=0, y0=0)).values
    assert np.isnan(s[14:17, 14:17]).all()
    assert np.isfinite(s[10, 10]) and np.isfinite(s[15, 18])
