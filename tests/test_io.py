import numpy as np
import pytest
import rasterio

from conftest import write_geotiff
from lunarmap.errors import CRSError, InputFileError, NoDataError, UnitsError
from lunarmap.io import atomic_path, elevation_from_array, open_dem, write_cog


def test_open_real_dem(shackleton_path):
    da = open_dem(shackleton_path, chunks=128)
    assert da.name == "elevation" and da.dims == ("y", "x")
    assert da.chunks is not None and da.chunks[0][0] == 128
    assert da.attrs["units"] == "m" and da.attrs["gsd"] == 200.0
    # rasterio's CRS may not report an authority: compare by name (ENVIRONMENT.md)
    assert "Moon (2015)" in da.rio.crs.to_wkt() and "South Polar" in da.rio.crs.to_wkt()
    v = da.values
    # shared data README: min -3550.3, max 1873.4 in the simulator's tangent-plane heights; on the
    # sphere (rho^2/2R added, tiles/README.md) min -2979.0, max 1956.5
    assert np.nanmin(v) == pytest.approx(-2979.0, abs=0.5)
    assert np.nanmax(v) == pytest.approx(1956.5, abs=0.5)
    # pixel-centre coordinates
    assert da.x.values[0] == pytest.approx(-30000 + 100)
    assert da.y.values[0] == pytest.approx(15000 - 100)


def test_nodata_becomes_nan(tmp_path):
    z = np.full((20, 20), 100.0)
    z[5, 5] = -32768
    p = write_geotiff(tmp_path / "nd.tif", z, nodata=-32768)
    da = open_dem(p)
    assert np.isnan(da.values[5, 5]) and np.isfinite(da.values[0, 0])


def test_all_nodata_is_an_error(tmp_path):
    p = write_geotiff(tmp_path / "empty.tif", np.full((10, 10), -32768.0), nodata=-32768)
    with pytest.raises(NoDataError, match="nodata"):
        open_dem(p)


def test_earth_crs_file_is_refused(tmp_path):
    p = write_geotiff(tmp_path / "earth.tif", np.zeros((10, 10)) + 5.0, crs="EPSG:3031")
    with pytest.raises(CRSError, match="Earth CRS"):
        open_dem(p)


def test_missing_crs_is_refused(tmp_path):
    p = write_geotiff(tmp_path / "nocrs.tif", np.zeros((10, 10)) + 5.0, crs=None)
    with pytest.raises(CRSError, match="no CRS"):
        open_dem(p)


def test_kilometres_are_detected_and_converted(tmp_path):
    km = np.linspace(-3.5, 1.8, 400).reshape(20, 20)
    p = write_geotiff(tmp_path / "km.tif", km)
    with pytest.raises(UnitsError, match="kilometres"):
        open_dem(p)
    da = open_dem(p, units="km")
    assert np.nanmax(da.values) == pytest.approx(1800.0, rel=1e-5)


def test_corrupt_and_missing_files(tmp_path, shackleton_path):
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(shackleton_path.read_bytes()[:3000])
    with pytest.raises(InputFileError, match="corrupt"):
        open_dem(bad).values  # noqa: B018
    with pytest.raises(InputFileError, match="does not exist"):
        open_dem(tmp_path / "nope.tif")


def test_cog_round_trip_keeps_moon_crs_units_description(tmp_path, shackleton_path):
    da = open_dem(shackleton_path, chunks=100)
    p = write_cog(da, tmp_path / "elevation.tif")
    with rasterio.open(p) as ds:
        assert ds.driver == "GTiff"
        assert ds.units == ("m",)
        assert "elevation" in ds.descriptions[0]
        assert ds.block_shapes[0][0] < ds.height or ds.height <= 512
        wkt = ds.crs.to_wkt()
        assert "Moon" in wkt and "1737400" in wkt
        layout = ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        assert layout == "COG"
    back = open_dem(p)
    np.testing.assert_array_equal(back.values, da.values)
    # compare CRS by transformed points, not ==
    from lunarmap.crs import lonlat_to_xy

    assert lonlat_to_xy(-137, -89.45, back.rio.crs) == pytest.approx(lonlat_to_xy(-137, -89.45, "IAU_2015:30135"))


def test_bool_layer_written_as_uint8(tmp_path):
    da = elevation_from_array(np.zeros((8, 8)), gsd=10.0)
    mask = (da > -1).rename("psr")
    mask.attrs = {"units": "1", "long_name": "test mask"}
    p = write_cog(mask.rio.write_crs(da.rio.crs), tmp_path / "psr.tif")
    with rasterio.open(p) as ds:
        assert ds.dtypes[0] == "uint8" and ds.read(1).min() == 1


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_three_d_layer_is_a_multiband_cog(tmp_path):
    import xarray as xr

    base = elevation_from_array(np.zeros((16, 16)), gsd=10.0)
    cube = xr.concat([base + i for i in range(4)], dim=xr.DataArray([0.0, 90.0, 180.0, 270.0], dims="azimuth", name="azimuth"))
    cube = cube.transpose("azimuth", "y", "x").rename("horizon").rio.write_crs(base.rio.crs)
    cube.attrs = {"units": "deg", "long_name": "horizon elevation"}
    p = write_cog(cube, tmp_path / "horizon.tif")
    with rasterio.open(p) as ds:
        assert ds.count == 4 and ds.units == ("deg",) * 4
        assert ds.descriptions[2] == "horizon elevation, azimuth=180"
        assert ds.read(4).max() == 3.0
