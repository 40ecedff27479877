"""Tiled inference: coverage, blending without seams, Dask == numpy across chunk borders, errors."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import rioxarray  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from lunarmap.errors import ChipSizeError, LunarmapError
from lunarmap.io import elevation_from_array
from lunarmap.tiling import TileGrid, check_chip, default_stride, n_chips, predict_tiled


def const_fn(batch):
    return np.full((batch.shape[0], *batch.shape[2:]), 0.7)


def identity_fn(batch):
    return batch[:, 0]


def box5_fn(batch):
    """A 'model' with a 5x5 receptive field (radius 2 <= halo): a box mean of channel 0."""
    return np.stack([ndimage.uniform_filter(c[0].astype("float64"), 5, mode="reflect") for c in batch])


def _ref_box5(a, halo):
    p = np.pad(a.astype("float64"), halo, mode="symmetric")
    return ndimage.uniform_filter(p, 5, mode="reflect")[halo:-halo, halo:-halo]


@pytest.fixture(scope="module")
def raster():
    rng = np.random.default_rng(1)
    return rng.normal(size=(203, 317)).astype("float32")


def test_default_stride_partition_of_unity():
    chip, halo = 64, 8
    g = TileGrid((500, 500), chip=chip, halo=halo)
    assert g.stride == default_stride(chip, halo) == chip - 3 * halo
    w = g.window()[chip // 2]  # 1-D profile
    assert w[:halo].max() == 0 and w[-halo:].max() == 0
    # overlapping ramps of neighbouring chips sum to 1 in the overlap
    s = np.zeros(chip + g.stride)
    s[:chip] += w
    s[g.stride:] += w
    assert np.allclose(s[halo + g.stride : chip - halo], 1.0)


def test_constant_model_gives_constant_output_everywhere(raster):
    g = TileGrid(raster.shape, chip=64, halo=8)
    out = g.predict(raster, const_fn, batch_size=5)
    assert out.shape == raster.shape
    assert np.allclose(out, 0.7)


def test_identity_model_reproduces_input_no_seams(raster):
    out = TileGrid(raster.shape, chip=64, halo=8, stride=20).predict(raster, identity_fn, batch_size=3)
    np.testing.assert_allclose(out, raster, atol=1e-5)


def test_local_model_matches_whole_raster_filter(raster):
    out = TileGrid(raster.shape, chip=64, halo=8).predict(raster, box5_fn)
    np.testing.assert_allclose(out, _ref_box5(raster, 8), atol=1e-5)


@pytest.mark.parametrize("chunks", [64, 100, {"y": 50, "x": 317}])
def test_dask_equals_numpy_across_chunk_borders(raster, chunks):
    ref = TileGrid(raster.shape, chip=64, halo=8).predict(raster, box5_fn)
    da = elevation_from_array(raster, gsd=100.0, chunks=chunks)
    out = predict_tiled(da, box5_fn, chip=64, halo=8)
    assert out.chunks is not None  # lazy
    v = out.values
    np.testing.assert_allclose(v, ref, atol=1e-5)
    # and no seam at chunk borders: same values as the whole-raster filter there
    np.testing.assert_allclose(v, _ref_box5(raster, 8), atol=1e-5)
    assert out.dims == ("y", "x") and out.rio.crs is not None
    np.testing.assert_array_equal(out.x.values, da.x.values)


def test_predict_tiled_is_lazy(raster):
    calls = []

    def fn(b):
        calls.append(len(b))
        return b[:, 0]

    da = elevation_from_array(raster, gsd=100.0, chunks=100)
    out = predict_tiled(da, fn, chip=64, halo=8, batch_size=4)
    assert calls == []
    out.compute()
    assert sum(calls) == n_chips(raster.shape, da.chunks, chip=64, halo=8)


def test_raster_smaller_than_chip_and_numpy_input():
    a = np.arange(30 * 20, dtype="float32").reshape(30, 20)
    da = elevation_from_array(a, gsd=10.0)  # numpy-backed
    out = predict_tiled(da, identity_fn, chip=64, halo=8)
    np.testing.assert_allclose(out.values, a, atol=1e-3)


def test_nan_input_is_nan_output_and_filled_for_the_model(raster):
    a = raster.copy()
    a[50:60, 70:90] = np.nan
    a[:, :5] = np.nan
    seen_nan = []

    def fn(b):
        seen_nan.append(np.isnan(b).any())
        return b[:, 0]

    out = TileGrid(a.shape, chip=64, halo=8).predict(a, fn)
    assert not any(seen_nan)  # the model never sees NaN
    assert np.isnan(out[50:60, 70:90]).all() and np.isnan(out[:, :5]).all()
    assert np.isfinite(out[np.isfinite(a)]).all()


def test_all_nan_chunk_is_skipped():
    a = np.full((128, 128), np.nan, dtype="float32")
    a[:, 64:] = 1.0
    calls = []

    def fn(b):
        calls.append(len(b))
        return b[:, 0]

    da = elevation_from_array(a, gsd=10.0, chunks=64)
    out = predict_tiled(da, fn, chip=32, halo=4).values
    assert np.isnan(out[:, :60]).all() and np.allclose(out[:, 68:], 1.0)


def test_chip_smaller_than_halo_raises_with_fix():
    with pytest.raises(ChipSizeError, match=r"chip >= 65"):
        TileGrid((100, 100), chip=64, halo=32, multiple=1)
    with pytest.raises(ChipSizeError, match="multiple of 32"):
        check_chip(100, 8, multiple=32)
    with pytest.raises(ChipSizeError, match="stride"):
        TileGrid((100, 100), chip=64, halo=8, stride=60)
    assert issubclass(ChipSizeError, LunarmapError)
    da = elevation_from_array(np.zeros((50, 50)), gsd=10.0)
    with pytest.raises(ChipSizeError):
        predict_tiled(da, identity_fn, chip=16, halo=8)


@settings(max_examples=12, deadline=None)
@given(
    ny=st.integers(20, 140), nx=st.integers(20, 140), cy=st.integers(16, 90), cx=st.integers(16, 90),
    stride=st.sampled_from([None, 8, 15]),
)
def test_property_identity_any_shape_chunks(ny, nx, cy, cx, stride):
    a = np.random.default_rng(ny * 1000 + nx).normal(size=(ny, nx)).astype("float32")
    da = elevation_from_array(a, gsd=5.0, chunks={"y": cy, "x": cx})
    out = predict_tiled(da, identity_fn, chip=32, halo=4, stride=stride).values
    np.testing.assert_allclose(out, a, atol=1e-5)


def _nonlocal_fn(batch):
    """A 'model' whose output depends on the whole chip (per-chip normalisation, like the U-Net)."""
    out = []
    for c in batch:
        z = c[0].astype("float64")
        out.append((z - z.mean()) / (z.std() + 1e-9) + ndimage.uniform_filter(z, 9, mode="reflect"))
    return np.stack(out)


@pytest.mark.parametrize("chunks", [100, {"y": 120, "x": 90}])
def test_exact_mode_chunking_invariant_for_a_nonlocal_model(raster, chunks):
    one = predict_tiled(elevation_from_array(raster, gsd=1.0), _nonlocal_fn, chip=64, halo=8).values
    da = elevation_from_array(raster, gsd=1.0, chunks=chunks)
    assert da.data.numblocks[0] > 1
    many = predict_tiled(da, _nonlocal_fn, chip=64, halo=8).values
    np.testing.assert_allclose(many, one, atol=1e-5)
    cheap = predict_tiled(da, _nonlocal_fn, chip=64, halo=8, exact=False).values
    assert np.abs(cheap - one).max() > 1e-3  # the halo-only overlap is not exact for such a model


def test_merge_small_chunks():
    from lunarmap.tiling import _merge_small

    assert _merge_small((100, 100, 10), 50) == (100, 110)
    assert _merge_small((10, 100, 100), 50) == (110, 100)
    assert _merge_small((100, 100), 50) == (100, 100)
