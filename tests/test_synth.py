"""Synthetic crater chips: reproducibility, label geometry, morphometry (Pike 1977)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import pytest

from lunarmap import synth


def _one_crater(diameter_px, gsd, size=256, degradation=0.0, **kw):
    craters = pd.DataFrame({"x_px": [size / 2], "y_px": [size / 2], "diameter_px": [diameter_px],
                            "degradation": [degradation]})
    return synth.synth_crater_chip(size, gsd, seed=3, craters=craters, rms_slope_deg=0.0, noise_m=0.0,
                                   tilt_deg=0.0, **kw)


def _radial_profile(z, cx, cy, r_max):
    yy, xx = np.indices(z.shape)
    r = np.hypot(xx - cx, yy - cy)
    edges = np.arange(0, r_max + 1)
    idx = np.digitize(r.ravel(), edges) - 1
    prof = np.array([z.ravel()[idx == i].mean() for i in range(len(edges) - 1)])
    return edges[:-1] + 0.5, prof


def test_same_seed_identical_different_seed_differs():
    a = synth.synth_crater_chip(128, 50.0, seed=11)
    b = synth.synth_crater_chip(128, 50.0, seed=11)
    c = synth.synth_crater_chip(128, 50.0, seed=12)
    np.testing.assert_array_equal(a.elevation, b.elevation)
    np.testing.assert_array_equal(a.rim_mask, b.rim_mask)
    pd.testing.assert_frame_equal(a.craters, b.craters)
    assert not np.array_equal(a.elevation, c.elevation)
    assert a.elevation.dtype == np.float32 and a.elevation.shape == (128, 128)
    assert a.rim_mask.dtype == np.uint8 and set(np.unique(a.rim_mask)) <= {0, 1}


def test_dataset_chip_depends_only_on_seed_and_index():
    first = list(synth.synth_dataset(3, size=64, seed=5))
    third = next(synth.synth_dataset(1, size=64, seed=5, start=2))
    np.testing.assert_array_equal(first[2].elevation, third.elevation)
    assert first[2].gsd == third.gsd
    assert all(20.0 <= c.gsd <= 500.0 for c in first)
    e, m, g = synth.stack_chips(first)
    assert e.shape == (3, 64, 64) and m.shape == (3, 64, 64) and g.shape == (3,)
    other = next(synth.synth_dataset(1, size=64, seed=6, start=2))
    assert not np.array_equal(other.elevation, third.elevation)


def test_fractal_terrain_rms_slope_and_reproducible():
    z = synth.fractal_terrain(128, 10.0, seed=1, hurst=0.85, rms_slope_deg=5.0)
    gy, gx = np.gradient(z, 10.0)
    rms = np.degrees(np.arctan(np.sqrt(np.mean(gx**2 + gy**2))))
    assert rms == pytest.approx(5.0, rel=0.02)
    assert abs(z.mean()) < 1e-9
    np.testing.assert_array_equal(z, synth.fractal_terrain(128, 10.0, seed=1, hurst=0.85, rms_slope_deg=5.0))
    # lower Hurst = rougher at short scales relative to long: more power in high frequencies
    zr = synth.fractal_terrain(128, 10.0, seed=1, hurst=0.3, rms_slope_deg=5.0)
    assert np.std(zr) < np.std(z)


def test_rms_slope_falls_with_baseline():
    assert synth.lunar_rms_slope_deg(17.0) == pytest.approx(7.0)
    assert synth.lunar_rms_slope_deg(500.0) < synth.lunar_rms_slope_deg(20.0)


def test_pike_morphometry_known_values():
    d, h, f, cx = synth.crater_morphometry(np.array([1000.0, 50_000.0]))
    assert d[0] == pytest.approx(196.0, rel=1e-6) and h[0] == pytest.approx(36.0, rel=1e-6)
    assert not cx[0] and cx[1] and f[0] == 0
    assert d[1] == pytest.approx(1044.0 * 50**0.301, rel=1e-6)
    assert f[1] == pytest.approx(1000 * 0.187 * 50**1.249, rel=1e-6)


def test_rim_mask_pixels_lie_on_listed_rims():
    chip = synth.synth_crater_chip(192, 80.0, seed=21, n_craters=60, p_large=1.0)
    lab = chip.craters[chip.craters.labelled]
    assert len(lab) >= 3 and chip.rim_mask.sum() > 0
    yy, xx = np.nonzero(chip.rim_mask)
    d = np.hypot(xx[:, None] - lab.x_px.to_numpy(), yy[:, None] - lab.y_px.to_numpy())
    # rim radius is modulated by <= 3 % (harmonics), ring half width 1 px
    off = np.abs(d - lab.diameter_px.to_numpy() / 2) - (1.0 + 0.03 * lab.diameter_px.to_numpy() / 2)
    assert np.all(off.min(axis=1) <= 1e-6)
    # unlabelled craters are too small or too degraded
    unl = chip.craters[~chip.craters.labelled]
    assert np.all((unl.diameter_px < 5.0) | (unl.degradation > 0.15))


def test_fresh_simple_crater_depth_diameter_matches_pike():
    gsd, dpx = 100.0, 60.0  # D = 6 km: simple
    chip = _one_crater(dpx, gsd)
    row = chip.craters.iloc[0]
    assert row.kind == "simple"
    r, prof = _radial_profile(chip.elevation, 128, 128, 120)
    far = prof[(r > 3.2 * dpx / 2) & (r < 120)].mean()
    rim = prof.max()
    floor = chip.elevation.min()
    d_over_D = (rim - floor) / (dpx * gsd)
    assert d_over_D == pytest.approx(0.196 * 6.0**0.010, rel=0.1)  # Pike (1977) d = 0.196 D^1.010 km
    assert (rim - far) / (dpx * gsd) == pytest.approx(0.036 * 6.0**0.014, rel=0.2)  # h = 0.036 D^1.014
    assert r[np.argmax(prof)] == pytest.approx(dpx / 2, abs=2.0)  # rim crest at R
    # the rim label is exactly one ring at R
    yy, xx = np.nonzero(chip.rim_mask)
    rr = np.hypot(xx - 128, yy - 128)
    assert np.all(np.abs(rr - dpx / 2) <= 1.0 + 0.03 * dpx / 2)
    assert chip.craters.rim_visible_fraction.iloc[0] == 1.0


def test_ejecta_decay_inverse_cube():
    chip = _one_crater(40.0, 100.0)
    r, prof = _radial_profile(chip.elevation, 128, 128, 100)
    far = prof[r > 70].mean()
    h1 = np.interp(25.0, r, prof) - far   # r = 1.25 R
    h2 = np.interp(40.0, r, prof) - far   # r = 2.0 R
    e = 3.0**-3
    want = (2.0**-3 - e) / (1.25**-3 - e)  # McGetchin et al. (1973), tapered at 3R
    assert h2 / h1 == pytest.approx(want, rel=0.25)


def test_complex_crater_flat_floor_and_shallower():
    gsd, dpx = 400.0, 100.0  # D = 40 km: complex with central peak
    chip = _one_crater(dpx, gsd)
    assert chip.craters.kind.iloc[0] == "complex"
    r, prof = _radial_profile(chip.elevation, 128, 128, 120)
    rim = prof.max()
    # floor: annulus between peak and wall
    ring_floor = prof[(r > 0.3 * dpx / 2) & (r < 0.45 * dpx / 2)]
    depth = rim - ring_floor.mean()
    assert depth / (dpx * gsd) == pytest.approx(1.044 * 40**0.301 / 40, rel=0.15)
    assert np.ptp(ring_floor) < 0.05 * depth  # flat floor
    assert prof[0] > ring_floor.mean() + 0.05 * depth  # central peak


def test_degradation_makes_craters_shallower():
    fresh = _one_crater(40.0, 100.0)
    old = _one_crater(40.0, 100.0, degradation=0.1, label_max_degradation=0.15)
    assert np.ptp(old.elevation) < 0.8 * np.ptp(fresh.elevation)
    gone = _one_crater(40.0, 100.0, degradation=0.3)
    assert gone.rim_mask.sum() == 0 and not gone.craters.labelled.iloc[0]


def test_newer_crater_erases_older_rim_inside_it():
    craters = pd.DataFrame({"x_px": [100.0, 130.0], "y_px": [100.0, 100.0], "diameter_px": [60.0, 50.0]})
    chip = synth.synth_crater_chip(256, 100.0, seed=1, craters=craters, rms_slope_deg=0.0, noise_m=0.0, tilt_deg=0)
    yy, xx = np.nonzero(chip.rim_mask)
    inside_new = np.hypot(xx - 130, yy - 100) < 25 - 2.5
    assert not inside_new.any()
    vis = chip.craters.rim_visible_fraction.to_numpy()
    assert vis[1] == 1.0 and 0.2 < vis[0] < 0.9


def test_bad_arguments():
    with pytest.raises(ValueError):
        synth.synth_crater_chip(64, 0.0, seed=1)
    with pytest.raises(ValueError):
        synth.fractal_terrain(64, 10.0, seed=1, hurst=1.5)
    with pytest.raises(ValueError):
        next(synth.synth_dataset(1, gsd_range=(100.0, 10.0)))


def test_labelled_craters_have_rims_in_the_chip():
    craters = pd.DataFrame({"x_px": [-30.0, 60.0, -8.0], "y_px": [60.0, 60.0, 60.0], "diameter_px": [20.0, 20.0, 20.0]})
    chip = synth.synth_crater_chip(128, 100.0, seed=8, craters=craters, rms_slope_deg=0.0, noise_m=0.0, tilt_deg=0)
    # fully outside (rim 20 px beyond the edge): not labelled; inside and straddling the edge: labelled
    assert chip.craters.labelled.tolist() == [False, True, True]
    assert chip.craters.rim_visible_fraction.tolist()[1:] == [1.0, 1.0]
    # the outside crater's ejecta still reach into the chip (rendered, just not labelled)
    assert abs(chip.elevation[60, 0] - chip.elevation[0, 127]) > 1.0
