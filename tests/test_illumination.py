"""Known-answer tests of the ephemeris and the illumination engine (issue #3).

Small rasters and short windows only; the 18.6-yr default window is exercised by
scripts/validate_illumination.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from lunarmap import ephemeris as E
from lunarmap import illumination as I
from lunarmap.crs import lonlat_to_xy, xy_to_lonlat
from lunarmap.errors import CoordinateError, EphemerisError
from lunarmap.io import elevation_from_array
from lunarmap.layers import compute_layers

TILES = os.path.join(os.path.dirname(__file__), "..", "tiles")
WINDOW = {"start": "2025-01-01", "end": "2026-01-01", "step_hours": 12.0}


# ----------------------------------------------------------------------------- ephemeris


@pytest.fixture(scope="module")
def eph():
    return E.ephemeris(**WINDOW)


def test_sun_elevation_at_pole_bounded_by_obliquity(eph):
    lat = eph.subsolar_latitude_deg
    # lunar equator inclined 1.54 deg to the ecliptic: sub-solar latitude within ~±1.6 and
    # reaching close to both extremes within a year
    assert np.abs(lat).max() < 1.62
    assert lat.max() > 1.4 and lat.min() < -1.4


def test_earth_libration_in_latitude(eph):
    lat = eph.subearth_latitude_deg
    assert np.abs(lat).max() < 7.0
    assert np.abs(lat).max() > 6.0  # optical libration in latitude reaches ~6.7-6.9 deg each month
    lon = eph.subearth_longitude_deg
    assert np.abs(lon).max() < 8.5 and np.abs(lon).max() > 4.0


def test_sun_distance_about_one_au_and_disk_radius(eph):
    au = eph.sun_distance_m / E.AU_M
    assert 0.97 < au.min() and au.max() < 1.03
    assert np.all((eph.sun_radius_deg > 0.255) & (eph.sun_radius_deg < 0.28))


def test_earth_distance_is_lunar_orbit(eph):
    d = np.linalg.norm(eph.earth_position_m, axis=1)
    assert 3.5e8 < d.min() and d.max() < 4.1e8


def test_sun_longitude_drifts_one_synodic_day(eph):
    # sub-solar longitude decreases by 360 deg per synodic month (29.53 d)
    lon = np.unwrap(np.radians(eph.subsolar_longitude_deg))
    rate = (lon[-1] - lon[0]) / np.radians(360.0) / ((eph.times[-1] - eph.times[0]).days)
    assert rate == pytest.approx(-1 / 29.53, rel=0.01)


def test_ephemeris_is_cached_and_read_only(eph):
    assert E.ephemeris(**WINDOW) is eph
    with pytest.raises(ValueError):
        eph.sun_direction[0, 0] = 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"start": "2049-06-01", "end": "2051-06-01"},
        {"start": "1890-01-01", "end": "1901-01-01"},
        {"start": "2026-01-01", "end": "2025-01-01"},
        {"start": "2025-01-01", "end": "2025-02-01", "step_hours": 0},
    ],
)
def test_ephemeris_errors(kw):
    with pytest.raises(EphemerisError):
        E.ephemeris(**kw)


def test_default_window_is_a_nodal_cycle():
    t = E.time_grid()
    years = (t[-1] - t[0]).days / 365.25
    assert 18.5 < years < 18.7
    assert (t[1] - t[0]) == pd.Timedelta(hours=E.DEFAULT_STEP_HOURS)


# ----------------------------------------------------------------------------- geometry


def test_disk_fraction_known_values():
    r = 0.27
    f = I.solar_disk_visible_fraction(np.array([0.0, r, -r, 2 * r, -5.0, 0.1]), 0.0, r)
    assert f[0] == pytest.approx(0.5)
    assert f[1] == pytest.approx(1.0) and f[3] == pytest.approx(1.0)
    assert f[2] == pytest.approx(0.0) and f[4] == pytest.approx(0.0)
    # symmetry f(x) + f(-x) = 1
    x = np.linspace(-1.2, 1.2, 25)
    assert np.allclose(I.solar_disk_visible_fraction(x, 0, 1) + I.solar_disk_visible_fraction(-x, 0, 1), 1.0)


def test_disk_fraction_matches_pixel_count():
    g = np.linspace(-1, 1, 1601)
    xx, yy = np.meshgrid(g, g)
    inside = xx**2 + yy**2 <= 1
    for h in (-0.7, -0.2, 0.0, 0.35, 0.9):  # horizon line at y = h disk radii, centre at 0
        expected = (inside & (yy > h)).sum() / inside.sum()
        assert I.solar_disk_visible_fraction(0.0, h, 1.0) == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("hemi,crs,lat", [("south", "IAU_2015:30135", -87.0), ("north", "IAU_2015:30130", 86.0)])
def test_meridian_convergence_polar_stereographic(hemi, crs, lat):
    lons = np.array([-170.0, -90.0, -33.0, 0.0, 45.0, 90.0, 135.0, 179.0])
    num = I.meridian_convergence(lons, np.full(lons.shape, lat), crs)
    ana = I.polar_stereographic_convergence(lons, hemi)
    d = (num - ana + 180) % 360 - 180
    assert np.abs(d).max() < 1e-3


def test_local_north_on_the_grid_by_hand():
    # south pole, lon 90E: x = rho > 0, y = 0; local north points away from the pole -> +x (90 deg)
    assert I.meridian_convergence(90.0, -88.0, "IAU_2015:30135") == pytest.approx(90.0, abs=1e-4)
    # north pole, lon 90E: x > 0, y = 0; local north points to the pole -> -x (270 deg)
    assert I.meridian_convergence(90.0, 88.0, "IAU_2015:30130") == pytest.approx(270.0, abs=1e-4)


def test_grid_topocentric_azimuth_round_trip_and_direction():
    lon, lat, crs = 30.0, -88.5, "IAU_2015:30135"
    for a in (0.0, 37.0, 90.0, 200.0, 359.0):
        g = I.topocentric_to_grid_azimuth(a, lon, lat, crs)
        assert I.grid_to_topocentric_azimuth(g, lon, lat, crs) == pytest.approx(a, abs=1e-6)
    # independent check: step 1 m along topocentric azimuth 60 deg on the sphere, project, measure
    from lunarmap.crs import MOON_RADIUS_M

    a = np.radians(60.0)
    dlat = np.degrees(1.0 * np.cos(a) / MOON_RADIUS_M)
    dlon = np.degrees(1.0 * np.sin(a) / (MOON_RADIUS_M * np.cos(np.radians(lat))))
    x0, y0 = lonlat_to_xy(lon, lat, crs)
    x1, y1 = lonlat_to_xy(lon + dlon, lat + dlat, crs)
    grid = np.degrees(np.arctan2(x1 - x0, y1 - y0)) % 360
    assert I.topocentric_to_grid_azimuth(60.0, lon, lat, crs) == pytest.approx(grid, abs=0.01)


def test_fast_atan_azimuth_matches_atan2():
    _, pos = I._get_kernel()
    rng = np.random.default_rng(1)
    v = rng.normal(size=(2000, 2))
    v[:4] = [[0, 1], [1, 0], [0, -1], [-1, 0]]
    ref = np.degrees(np.arctan2(v[:, 0], v[:, 1])) % 360
    got = np.array([pos(a, b, 1.0) for a, b in v])
    d = (got - ref + 180) % 360 - 180
    assert np.abs(d).max() < 1e-3


# ----------------------------------------------------------------------------- kernel vs reference


def _grid_dem(n=6, gsd=2000.0, crs="IAU_2015:30135", center=(0.0, -60000.0)):
    z = np.random.default_rng(0).normal(0, 50, (n, n)).astype("float32")
    return elevation_from_array(z, gsd=gsd, crs=crs, x0=center[0] - n * gsd / 2, y0=center[1] + n * gsd / 2)


def _reference(hprof, x, y, z, crs, eph, hobs):
    """Plain numpy: exact asin/atan2 per epoch, horizon interpolated in degrees."""
    up, ge, gn, rp = I._local_frames(np.array([x]), np.array([y]), np.array([z]), crs, hobs)
    up, ge, gn, rp = up[0], ge[0], gn[0], rp[0]
    s = eph.sun_direction
    el = np.degrees(np.arcsin(s @ up))
    az = np.degrees(np.arctan2(s @ ge, s @ gn)) % 360
    frac = I.solar_disk_visible_fraction(el, I._interp_profile(hprof, az), eph.sun_radius_deg)
    d = eph.earth_position_m - rp * up
    eel = np.degrees(np.arcsin((d @ up) / np.linalg.norm(d, axis=1)))
    eaz = np.degrees(np.arctan2(d @ ge, d @ gn)) % 360
    vis = eel > I._interp_profile(hprof, eaz)
    dark = frac <= 0
    best = run = 0
    for v in dark:
        run = run + 1 if v else 0
        best = max(best, run)
    return frac.mean(), best * eph.step_hours, not (frac > 0).any(), vis.mean(), (vis & (frac > 0)).mean()


@pytest.mark.parametrize("crs", ["IAU_2015:30135", "IAU_2015:30130"])
def test_kernel_matches_numpy_reference(crs, eph):
    dem = _grid_dem(crs=crs)
    n = 72
    az = np.arange(n) * 360.0 / n
    rng = np.random.default_rng(3)
    ny, nx = dem.shape
    phase = rng.uniform(0, 2 * np.pi, (ny, nx))
    amp = rng.uniform(0.5, 3.0, (ny, nx))
    base = rng.uniform(-1.0, 1.5, (ny, nx))
    h = base[None] + amp[None] * np.sin(np.radians(az)[:, None, None] * 2 + phase[None])
    hor = xr.DataArray(h.astype("float32"), dims=("azimuth", "y", "x"), coords={"azimuth": az, "y": dem.y, "x": dem.x})
    ds = I.illumination_statistics(hor, dem, observer_height_m=2.0, **WINDOW).compute()
    for j, i in [(0, 0), (2, 3), (5, 5), (4, 1)]:
        ref = _reference(h[:, j, i].astype("float64"), float(dem.x[i]), float(dem.y[j]), float(dem.values[j, i]),
                         dem.rio.crs, eph, 2.0)
        assert float(ds.illumination_fraction[j, i]) == pytest.approx(ref[0], abs=2e-3)
        assert float(ds.longest_night[j, i]) == pytest.approx(ref[1], abs=2 * eph.step_hours)
        assert bool(ds.psr[j, i]) == ref[2]
        assert float(ds.earth_visibility_fraction[j, i]) == pytest.approx(ref[3], abs=3e-3)
        assert float(ds.sun_earth_fraction[j, i]) == pytest.approx(ref[4], abs=3e-3)


def _const_horizon(dem, value, n=36):
    az = np.arange(n) * 360.0 / n
    return xr.DataArray(np.full((n,) + dem.shape, value, "float32"), dims=("azimuth", "y", "x"),
                        coords={"azimuth": az, "y": dem.y, "x": dem.x})


def test_constant_horizons_known_answers():
    dem = elevation_from_array(np.zeros((4, 4), "float32"), gsd=500.0)  # at the south pole
    high = I.illumination_statistics(_const_horizon(dem, 2.0), dem, **WINDOW).compute()
    # max Sun elevation near the pole 1.54 + colatitude (< 0.01) + radius 0.27 < 2 deg
    assert bool(high.psr.all()) and float(high.illumination_fraction.max()) == 0.0
    assert float(high.longest_night.min()) == pytest.approx(365 * 24, abs=12)
    low = I.illumination_statistics(_const_horizon(dem, -3.0), dem, **WINDOW).compute()
    assert float(low.illumination_fraction.min()) == pytest.approx(1.0)
    assert not bool(low.psr.any()) and float(low.longest_night.max()) == 0.0
    # Earth is within ~6.9 deg of the horizon at the pole: a -8 deg horizon always shows it
    assert float(I.illumination_statistics(_const_horizon(dem, -8.0), dem, **WINDOW).earth_visibility_fraction.min()) == 1.0


def test_nan_horizon_gives_nan_and_not_psr():
    dem = elevation_from_array(np.zeros((3, 3), "float32"), gsd=500.0)
    hor = _const_horizon(dem, 0.0)
    hor[5, 1, 1] = np.nan
    ds = I.illumination_statistics(hor, dem, **WINDOW).compute()
    assert np.isnan(float(ds.illumination_fraction[1, 1])) and not bool(ds.psr[1, 1])
    assert np.isfinite(float(ds.illumination_fraction[0, 0]))


# ----------------------------------------------------------------------------- with horizon maps


def _bowl(crs, n=60, gsd=100.0, radius=2000.0, depth=800.0):
    c = (np.arange(n) - (n - 1) / 2) * gsd
    xx, yy = np.meshgrid(c, c)
    r = np.hypot(xx, yy)
    z = np.where(r < radius, -depth * (1 - (r / radius) ** 2), 0.0).astype("float32")
    return elevation_from_array(z, gsd=gsd, crs=crs), r


@pytest.mark.parametrize("crs", ["IAU_2015:30135", "IAU_2015:30130"])
def test_bowl_crater_floor_is_psr_rim_is_not(crs):
    dem, r = _bowl(crs)
    ds = compute_layers(dem, ["illumination_fraction", "psr", "longest_night", "earth_visibility_fraction"],
                        n_azimuths=72, observer_height_m=0.0, **WINDOW).compute()
    psr = ds.psr.values
    # floor within 1 km of the centre: every direction has the rim >= 1 km away and >= 600 m
    # higher (> 30 deg) >> max Sun elevation + disk radius (< 1.9 deg)
    floor = r <= 1000
    assert psr[floor].all()
    assert float(ds.illumination_fraction.values[floor].max()) == 0.0
    rim = (r >= 2000) & (r <= 2300)
    assert not psr[rim].any()
    assert 0.1 < float(np.nanmean(ds.illumination_fraction.values[rim])) < 0.6
    # flat plain between rim and edge (horizon ~ curvature dip) at the pole: ~half lit
    plain = (r > 2600) & (r < 2900)
    assert 0.35 < float(np.nanmean(ds.illumination_fraction.values[plain])) < 0.65
    assert ds.psr.dtype == bool
    assert set(ds.data_vars) >= {"illumination_fraction", "psr", "longest_night"}
    assert "horizon" in ds.attrs["layers_computed"] and "horizon" not in ds.data_vars  # intermediate
    assert ds.illumination_fraction.attrs["units"] == "1" and ds.longest_night.attrs["units"] == "h"


def test_flat_sphere_half_lit_at_both_poles():
    for crs in ("IAU_2015:30135", "IAU_2015:30130"):
        dem = elevation_from_array(np.zeros((12, 12), "float32"), gsd=200.0, crs=crs)
        ds = compute_layers(dem, ["illumination_fraction", "psr", "earth_visibility_fraction"], n_azimuths=36,
                            **WINDOW).compute()
        inner = ds.illumination_fraction.values[2:-2, 2:-2]
        assert np.all((inner > 0.45) & (inner < 0.58)), crs
        assert not bool(ds.psr.values[2:-2, 2:-2].any())
        e = ds.earth_visibility_fraction.values[2:-2, 2:-2]
        assert np.all((e > 0.4) & (e < 0.6)), crs


def test_distance_to_psr_known_answer():
    psr = xr.DataArray(np.zeros((5, 7), bool), dims=("y", "x"), coords={"y": np.arange(5)[::-1] * 100.0, "x": np.arange(7) * 100.0})
    psr[2, 1] = True
    d = I.distance_to_psr(psr).values
    assert d[2, 1] == 0 and d[2, 4] == pytest.approx(300.0) and d[0, 1] == pytest.approx(200.0)
    assert d[0, 3] == pytest.approx(np.hypot(200, 200))
    assert np.isnan(I.distance_to_psr(psr & False).values).all()


# ----------------------------------------------------------------------------- products


def _write_product(path, dn, crs="IAU_2015:30135", gsd=1000.0):
    n = dn.shape[0]
    da = xr.DataArray(dn, dims=("y", "x"), coords={"y": (np.arange(n)[::-1] - n / 2 + 0.5) * gsd,
                                                   "x": (np.arange(n) - n / 2 + 0.5) * gsd})
    da.rio.write_crs(crs, inplace=True)
    da.rio.to_raster(path)
    return path


def test_product_reader_scaling_and_alignment(tmp_path):
    from lunarmap.io import open_illumination_product

    dn = np.full((8, 8), 12500, "int16")  # 12500 * 0.00004 = 0.5
    dn[:, 4:] = 25000  # -> 1.0
    p = _write_product(tmp_path / "AVGVISIB.tif", dn)
    raw = open_illumination_product(p, kind="avgvisib")
    assert float(raw.min()) == pytest.approx(0.5) and float(raw.max()) == pytest.approx(1.0)
    dem = elevation_from_array(np.zeros((8, 8), "float32"), gsd=500.0)  # finer grid, centre 4 x 4 km
    al = open_illumination_product(p, kind="avgvisib", like=dem)
    assert al.shape == dem.shape and np.allclose(al.x, dem.x)
    assert float(al[0, 0]) == pytest.approx(0.5) and float(al[-1, -1]) == pytest.approx(1.0)
    lp = _write_product(tmp_path / "LPSR.tif", np.array([[20000, -20000], [0, 20000]], "int16").repeat(4, 0).repeat(4, 1))
    v = open_illumination_product(lp, kind="lpsr")
    assert sorted(np.unique(v.values).tolist()) == pytest.approx([0.0, 0.5, 1.0])


def test_products_replace_computation(tmp_path):
    dn = np.full((8, 8), 10000, "int16")  # 0.4
    p = _write_product(tmp_path / "AVGVISIB.tif", dn)
    lp = _write_product(tmp_path / "LPSR.tif", np.full((8, 8), 20000, "int16"))
    dem = elevation_from_array(np.zeros((8, 8), "float32"), gsd=500.0)
    ds = compute_layers(dem, ["illumination_fraction", "psr"],
                        illumination_products={"illumination_fraction": p, "psr": lp})
    assert "horizon" not in ds.attrs["layers_computed"]  # nothing was ray traced
    assert np.allclose(ds.illumination_fraction.values, 0.4, atol=1e-6)
    assert ds.psr.dtype == bool and bool(ds.psr.all())


def test_product_errors(tmp_path):
    from lunarmap.errors import InputFileError
    from lunarmap.io import open_illumination_product

    with pytest.raises(InputFileError):
        open_illumination_product(tmp_path / "missing.tif", kind="avgvisib")
    p = _write_product(tmp_path / "x.tif", np.zeros((4, 4), "int16"))
    with pytest.raises(InputFileError):
        open_illumination_product(p, kind="nope")


# ----------------------------------------------------------------------------- timeline


def test_sun_timeline_bowl_and_errors(tmp_path):
    dem, _ = _bowl("IAU_2015:30135")
    lon, lat = xy_to_lonlat(0.0, 0.0, dem.rio.crs)
    df = I.sun_timeline(dem, lat, lon, observer_height_m=0.0, n_azimuths=72, **WINDOW)
    assert list(df.columns) == ["sun_elevation_deg", "sun_azimuth_deg", "sun_horizon_deg", "sun_visible_fraction",
                                "earth_elevation_deg", "earth_azimuth_deg", "earth_horizon_deg", "earth_visible"]
    s = df.attrs["summary"]
    assert s["psr"] and s["illumination_fraction"] == 0.0 and s["earth_visibility_fraction"] == 0.0
    assert df["sun_horizon_deg"].min() > 20  # rim 800 m above, 2 km away: ~21.8 deg
    lon2, lat2 = xy_to_lonlat(2150.0, 0.0, dem.rio.crs)  # on the rim
    s2 = I.sun_timeline(dem, lat2, lon2, observer_height_m=0.0, n_azimuths=72, **WINDOW).attrs["summary"]
    assert not s2["psr"] and s2["illumination_fraction"] > 0.1
    png = I.plot_sun_timeline(df, tmp_path / "t.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CoordinateError):
        I.sun_timeline(dem, -80.0, 0.0, **WINDOW)
    with pytest.raises(CoordinateError):
        I.sun_timeline(dem, -95.0, 0.0, **WINDOW)


def test_sun_cli(tmp_path):
    from typer.testing import CliRunner

    from lunarmap.cli import app

    dem, _ = _bowl("IAU_2015:30135", n=30, gsd=200.0)
    p = tmp_path / "dem.tif"
    dem.rio.to_raster(p)
    res = CliRunner().invoke(app, ["sun", "--lat", "-89.9", "--lon", "0", "--dem", str(p), "--start", "2025-01-01",
                                   "--end", "2025-03-01", "--step", "24", "--out", str(tmp_path / "o")])
    # -89.9 deg, 0E is (x, y) = (0, 3032 m): just outside this DEM's 3000 m half-width -> exit 2
    assert res.exit_code == 2 and "outside the DEM" in res.output
    lon, lat = xy_to_lonlat(500.0, 500.0, "IAU_2015:30135")
    res = CliRunner().invoke(app, ["sun", "--lat", str(lat), "--lon", str(lon), "--dem", str(p), "--start",
                                   "2025-01-01", "--end", "2025-03-01", "--step", "24", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "sun_timeline.csv").exists() and (tmp_path / "o" / "sun_timeline.png").exists()
    assert "Sun visible" in res.output


# ----------------------------------------------------------------------------- real data


def test_real_shackleton_floor_psr_and_pole_lit():
    from lunarmap.io import open_dem

    dem = open_dem(os.path.join(TILES, "shackleton_ridge_lola10m_200m_51km.tif"), chunks=None)
    floor = I.sun_timeline(dem, -89.67, 129.8, **WINDOW).attrs["summary"]  # Shackleton floor
    assert floor["psr"] and floor["elevation_m"] < -2500
    ridge = I.sun_timeline(dem, -89.534, -150.05, **WINDOW).attrs["summary"]  # connecting ridge
    assert not ridge["psr"] and ridge["illumination_fraction"] > 0.3
