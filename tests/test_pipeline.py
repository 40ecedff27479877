import numpy as np
import pytest
import rasterio

from lunarmap.pipeline import auto_grid_spacing, resolve_far_field, run_layers
from lunarmap.io import open_dem


def test_layers_on_a_dask_distributed_cluster_match_threads(tmp_path, shackleton_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        run_layers(shackleton_path, ["slope"], tmp_path / "dist", scheduler=cluster.scheduler_address, quiet=True)
    run_layers(shackleton_path, ["slope"], tmp_path / "thr", scheduler="threads", quiet=True)
    with rasterio.open(tmp_path / "dist" / "slope.tif") as a, rasterio.open(tmp_path / "thr" / "slope.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_far_field_auto_picks_the_covering_regional_dem(shackleton_path, tiles):
    ff, note = resolve_far_field(open_dem(shackleton_path), "auto")
    assert ff is not None and "480m" in note and ff.attrs["gsd"] == 480.0
    # the 480 m DEM itself is covered only by the coarser 1600 m one
    ff2, note2 = resolve_far_field(open_dem(tiles / "lola_ldem80s_480m_south_pole_250km.tif"), "auto")
    assert ff2 is not None and ff2.attrs["gsd"] == 1600.0
    assert resolve_far_field(open_dem(shackleton_path), "none")[0] is None


def test_auto_grid_spacing_bounds():
    assert auto_grid_spacing(225e6, 100.0) == 450.0  # one 15 km region: ~1000 pads
    assert auto_grid_spacing(1e6, 100.0) == 200.0  # 1 km^2: pads may not overlap (2 radii)
    assert auto_grid_spacing(1e12, 100.0) == 2000.0
