import numpy as np
import pandas as pd
import pytest

from lunarmap.errors import RankingError
from lunarmap.features import BufferedStat, feature_columns, site_features
from lunarmap.io import elevation_from_array
from lunarmap.layers import LAYERS, compute_layers, register_layer
from lunarmap.ranking import LanderConstraints, rank_sites
from lunarmap.sites import build_footprints


@pytest.fixture(scope="module")
def two_slopes():
    """Flat west of x = -60 m, a 20 deg plane east of it; 20 m pixels around the south pole.

    Pixel column 57 spans x = -60..-40 m and is the first with a (Horn) slope, so a pad centred
    at x = -200 m (radius 100 m) is flat while its 100 m clearance ring reaches steep ground.
    """
    n, gsd = 120, 20.0
    yy, xx = np.mgrid[0:n, 0:n]
    z = np.where(xx < 57, 0.0, (xx - 57) * gsd * np.tan(np.radians(20.0)))
    return elevation_from_array(z, gsd=gsd)


def grid_pads(dem, spacing=200.0):
    return build_footprints(None, dem, grid_spacing_m=spacing)


def test_features_know_the_terrain(two_slopes):
    ds = compute_layers(two_slopes, ["slope", "roughness"]).compute()
    f = grid_pads(two_slopes)
    F = site_features(ds, f, buffered=(BufferedStat("slope", "max", 100.0),))
    west = (f["x"] < -300).to_numpy()
    east = (f["x"] > 300).to_numpy()
    assert np.allclose(F.loc[west, "slope_mean"], 0.0, atol=1e-6)
    assert np.allclose(F.loc[east, "slope_mean"], 20.0, atol=1e-3)
    assert (F.loc[east, "slope_frac_gt_8"] == 1.0).all() and (F.loc[west, "slope_frac_gt_8"] == 0.0).all()
    # pads just west of the kink see the steep side within 100 m but not on the pad
    near = ((f["x"] > -250) & (f["x"] < -150)).to_numpy()  # pads centred 200 m west of the kink
    assert np.allclose(F.loc[near, "slope_max"], 0.0, atol=1e-6)
    assert near.any()
    assert (F.loc[near, "slope_max_within_100m"] > F.loc[near, "slope_max"]).all()
    assert (F["n_pixels"] > 0).all()


def test_a_new_layer_becomes_features_without_ranking_changes(two_slopes):
    @register_layer("test_east", units="m", long_name="x coordinate (test)", stats=("mean",), merit=(1000.0, -1000.0))
    def _east(ctx):
        return ctx.elevation * 0 + ctx.elevation.x

    try:
        assert "test_east_mean" in feature_columns(["slope", "test_east"])
        ds = compute_layers(two_slopes, ["slope", "test_east"]).compute()
        f = grid_pads(two_slopes)
        F = site_features(ds, f, buffered=LanderConstraints().buffered_stats())
        assert "test_east_mean" in F.columns
        res = rank_sites(f, F)
        assert "test_east_mean" in res.feature_names
    finally:
        LAYERS.pop("test_east", None)


def test_ranking_puts_flat_feasible_pads_first(two_slopes):
    ds = compute_layers(two_slopes, ["slope", "roughness"]).compute()
    f = grid_pads(two_slopes)
    c = LanderConstraints()
    F = site_features(ds, f, buffered=c.buffered_stats())
    res = rank_sites(f, F, constraints=c)
    t = res.table
    ranked = t[t["rank"].notna()]
    assert ranked["rank"].min() == 1
    best = ranked.sort_values("rank").iloc[0]
    assert best["x"] < 0 and bool(best["pass_slope"])
    # every feasible pad ranks before every infeasible one
    assert ranked.loc[ranked["feasible"], "rank"].max() < ranked.loc[~ranked["feasible"], "rank"].min()
    assert "pass_illumination" not in t.columns
    assert any("illumination constraint" in n and "NOT evaluated" in n for n in res.notes)


def test_overridable_threshold_changes_the_verdict(two_slopes):
    ds = compute_layers(two_slopes, ["slope", "roughness"]).compute()
    f = grid_pads(two_slopes)
    lax = LanderConstraints(slope_max_deg=25.0)
    res = rank_sites(f, site_features(ds, f, buffered=lax.buffered_stats()), constraints=lax)
    assert res.table.loc[res.table["rank"].notna(), "pass_slope"].all()


def test_user_labels_replace_rules_and_deterministic(two_slopes):
    ds = compute_layers(two_slopes, ["slope", "roughness"]).compute()
    f = grid_pads(two_slopes)
    F = site_features(ds, f, buffered=LanderConstraints().buffered_stats())
    # user prefers the EAST (steep) side: the model must follow the user's labels
    labels = pd.Series(np.where(f["x"] > 0, "good", "poor"), index=f.index)
    r1 = rank_sites(f, F, labels=labels, constraints=LanderConstraints(slope_max_deg=90))
    r2 = rank_sites(f, F, labels=labels, constraints=LanderConstraints(slope_max_deg=90))
    assert r1.label_source == "user"
    top = r1.table[r1.table["rank"].notna()].sort_values("rank").head(5)
    assert (top["x"] > 0).all()
    pd.testing.assert_series_equal(r1.table["score"], r2.table["score"])
    with pytest.raises(RankingError, match="Unrecognised label"):
        rank_sites(f, F, labels=pd.Series("excellent-ish", index=f.index))


def test_unevaluable_sites_are_listed_without_rank(two_slopes, tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    ds = compute_layers(two_slopes, ["slope"]).compute()
    pads = grid_pads(two_slopes)
    far = build_footprints(gpd.GeoDataFrame({"name": ["far"], "site_id": ["far"]}, geometry=[Point(1e6, 1e6)], crs=two_slopes.rio.crs), two_slopes)
    f = pd.concat([pads, far], ignore_index=True)
    f = gpd.GeoDataFrame(f, geometry="geometry", crs=two_slopes.rio.crs)
    res = rank_sites(f, site_features(ds, f, buffered=LanderConstraints().buffered_stats()))
    row = res.table[res.table["name"] == "far"].iloc[0]
    assert pd.isna(row["rank"]) and row["status"] == "outside DEM"
    assert any("could not be evaluated" in n for n in res.notes)


def test_no_evaluable_site_is_an_error(two_slopes):
    import geopandas as gpd
    from shapely.geometry import Point

    ds = compute_layers(two_slopes, ["slope"]).compute()
    far = build_footprints(gpd.GeoDataFrame({"name": ["far"], "site_id": ["far"]}, geometry=[Point(1e6, 1e6)], crs=two_slopes.rio.crs), two_slopes)
    with pytest.raises(RankingError, match="No site can be evaluated"):
        rank_sites(far, site_features(ds, far))


def test_intermediate_layers_stay_out_of_the_dataset(two_slopes):
    """A dependency without site statistics (like ``horizon``) is computed inside its consumer's
    graph but not put in the Dataset, so it is neither materialised nor written."""
    @register_layer("test_cube", units="m", long_name="intermediate (test)", stats=(), default=False)
    def _cube(ctx):
        return ctx.elevation * 2.0

    @register_layer("test_uses_cube", units="m", long_name="consumer (test)", requires=("test_cube",), stats=("mean",), default=False)
    def _user(ctx):
        return ctx.get("test_cube") + 1.0

    try:
        ds = compute_layers(two_slopes, ["test_uses_cube", "slope"])
        assert "test_cube" not in ds.data_vars and "test_uses_cube" in ds.data_vars
        assert "test_cube" in ds.attrs["layers_computed"]
        np.testing.assert_allclose(ds["test_uses_cube"].values, two_slopes.values * 2.0 + 1.0)
        asked = compute_layers(two_slopes, ["test_cube"])
        assert "test_cube" in asked.data_vars  # asked for explicitly: kept
    finally:
        LAYERS.pop("test_cube", None)
        LAYERS.pop("test_uses_cube", None)
