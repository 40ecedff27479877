"""End-to-end CLI runs on the real embedded tiles; outputs are checked for content."""

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from typer.testing import CliRunner

from conftest import write_geotiff
from lunarmap.cli import app

runner = CliRunner()

#: A short illumination window keeps the end-to-end runs to seconds; the physics is tested with
#: full windows in test_illumination.py and validated in scripts/validate_illumination.py.
FAST = ["--start", "2025-01-01", "--end", "2025-07-01", "--step", "12", "--n-azimuths", "72"]


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    out = tmp_path_factory.mktemp("rank")
    r = runner.invoke(app, ["rank", "--out", str(out), "--quiet", *FAST])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_rank_default_outputs_content(ranked):
    out, output = ranked
    assert str(out) in output
    t = pd.read_csv(out / "ranking.csv")
    ranked_rows = t[t["rank"].notna()]
    assert len(ranked_rows) > 100
    # ranks start at 1, are sorted, never skip more than ties allow
    r = ranked_rows["rank"].to_numpy()
    assert r[0] == 1 and np.all(np.diff(r) >= 0) and r.max() <= len(r)
    # names come from the Artemis III regions overlapping the Shackleton tile
    assert ranked_rows["region"].isin(["Connecting Ridge", "Connecting Ridge Extension", "Peak Near Shackleton"]).all()
    assert {"score", "label", "feasible", "pass_slope", "slope_mean", "slope_max_within_100m", "top_factors", "status"} <= set(t.columns)
    # Sun and Earth constraints are evaluated with computed layers (issue: far field auto)
    assert {"pass_illumination", "pass_earth_visibility", "illumination_fraction_mean", "earth_visibility_fraction_mean"} <= set(t.columns)
    assert ranked_rows["illumination_fraction_mean"].between(0, 1).all()
    assert ranked_rows["illumination_fraction_mean"].max() > 0.2  # ridge pads see the Sun
    # pass/fail agree with the features and thresholds
    ok = ranked_rows["slope_max_within_100m"] <= 8.0
    assert (ranked_rows["pass_slope"].astype(str).str.lower() == ok.astype(str).str.lower()).all()
    assert 0.0 <= ranked_rows["score"].min() and ranked_rows["score"].max() <= 1.0
    assert ranked_rows["top_factors"].str.contains("slope").any()
    # feasible = every evaluated constraint passes, and feasible sites rank first
    feas = ranked_rows["feasible"].astype(str).str.lower() == "true"
    passes = ranked_rows[["pass_slope", "pass_illumination", "pass_earth_visibility"]].astype(str).apply(lambda c: c.str.lower() == "true")
    assert (feas == passes.all(axis=1)).all()
    if feas.any() and (~feas).any():  # unconditional ordering check: test_features_ranking.py
        assert ranked_rows.loc[feas, "rank"].max() < ranked_rows.loc[~feas, "rank"].min()
    run = json.loads((out / "run.json").read_text())
    assert run["n_ranked"] == len(ranked_rows)
    assert not any("NOT evaluated" in n for n in run["notes"])
    assert any("Far field" in n for n in run["notes"])
    # the GeoJSON has the same sites, in lon/lat around the south pole
    gj = json.loads((out / "ranking.geojson").read_text())
    assert len(gj["features"]) == len(t)
    lon, lat = np.array(gj["features"][0]["geometry"]["coordinates"][0][0])
    assert -90 <= lat < -88.0


def test_rank_layers_are_moon_cogs(ranked):
    out, _ = ranked
    names = {p.stem for p in (out / "layers").glob("*.tif")}
    assert {"slope", "illumination_fraction", "psr", "earth_visibility_fraction"} <= names
    assert "horizon" not in names  # an intermediate: not materialised or written unless asked for
    with rasterio.open(out / "layers" / "slope.tif") as ds:
        assert "Moon" in ds.crs.to_wkt() and ds.units == ("deg",)
        s = ds.read(1)
        assert np.isnan(ds.nodata)
    assert 10 < float(np.nanmean(s)) < 16 and np.isnan(s[0, 0])  # tiles/README: mean slope 12.8 deg


def test_explain_a_coordinate_json(ranked, tmp_path):
    out, _ = ranked
    png = tmp_path / "w.png"
    r = runner.invoke(app, ["explain", "--lat", "-89.45", "--lon", "-137", "--out", str(out), "--json", "--png", str(png)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["lat"] == -89.45 and 0.0 <= d["score"] <= 1.0
    assert {c["feature"] for c in d["contributions"]} >= {"slope_mean", "slope_p95"}
    # SHAP additivity: base + contributions = logit(score)
    logit = np.log(d["score"] / (1 - d["score"]))
    assert d["base_value"] + sum(c["shap"] for c in d["contributions"]) == pytest.approx(logit, abs=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["constraints"]["slope"] in (True, False)


def test_explain_table_output(ranked):
    out, _ = ranked
    r = runner.invoke(app, ["explain", "--lat", "-89.45", "--lon", "223", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "SHAP contributions" in r.output and "slope" in r.output


def test_explain_off_the_raster_is_a_clean_error(ranked):
    out, _ = ranked
    r = runner.invoke(app, ["explain", "--lat", "-80", "--lon", "0", "--out", str(out)])
    assert r.exit_code == 2
    assert "outside the DEM" in r.output and "Traceback" not in r.output


def test_layers_command_writes_named_cogs(tmp_path, shackleton_path):
    r = runner.invoke(app, ["layers", "--dem", str(shackleton_path), "--layers", "slope,roughness", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roughness.tif", "slope.tif"]
    with rasterio.open(tmp_path / "roughness.tif") as ds:
        assert ds.units == ("m",) and "Moon" in ds.crs.to_wkt()


def test_bad_inputs_exit_2_with_a_message(tmp_path):
    earth = write_geotiff(tmp_path / "earth.tif", np.ones((20, 20)), crs="EPSG:3031")
    r = runner.invoke(app, ["layers", "--dem", str(earth), "--layers", "slope", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Earth CRS" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["rank", "--dem", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["layers", "--layers", "nonsense", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Unknown layer" in r.output
    assert not (tmp_path / "o" / "nonsense.tif").exists()


def test_user_sites_with_labels(tmp_path, shackleton_path):
    p = tmp_path / "sites.csv"
    rows = ["name,lat,lon,label"]
    rng = np.random.default_rng(0)
    for i in range(30):
        rows.append(f"s{i},{-89.3 - 0.3 * rng.random():.4f},{-180 + 360 * rng.random():.3f},{i % 3}")
    rows.append("offmap,-80.0,0.0,1")
    p.write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["rank", "--dem", str(shackleton_path), "--sites", str(p), "--out", str(tmp_path / "o"), "-q", "--no-map", "--no-layers", "--layers", "slope,roughness"])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "o" / "ranking.csv")
    assert set(t["name"]) == {f"s{i}" for i in range(30)} | {"offmap"}
    off = t[t["name"] == "offmap"].iloc[0]
    assert off["status"] == "outside DEM" and pd.isna(off["rank"])
    assert json.loads((tmp_path / "o" / "run.json").read_text())["label_source"] == "user"


def test_rank_writes_an_offline_map_with_the_sites(ranked):
    from lunarmap.maps import external_resources

    out, _ = ranked
    html = (out / "map.html").read_text()
    assert external_resources(html) == []  # works with no network
    assert "L.CRS.Simple" in html  # polar plane in map metres, not Web Mercator
    t = pd.read_csv(out / "ranking.csv")
    assert str(t.loc[t["rank"] == 1, "name"].iloc[0]) in html
    assert "slope" in html
    # outputs are readable by others (atomic writes must not leave mkstemp's 0600)
    assert (out / "map.html").stat().st_mode & 0o044 == 0o044


def test_layers_from_a_nasa_illumination_product(tmp_path, zoom_path):
    """A GDRVIS-style AVGVISIB raster (DN x 0.00004) replaces the computed layer (no horizons)."""
    with rasterio.open(zoom_path) as src:
        profile = src.profile
        shape = (src.height, src.width)
    dn = np.full(shape, 15000, dtype="uint16")  # 0.6 of the time
    dn[:10, :10] = 5000  # 0.2
    profile.update(dtype="uint16", nodata=None)
    prod = tmp_path / "AVGVISIB_TEST.TIF"
    with rasterio.open(prod, "w", **profile) as dst:
        dst.write(dn, 1)
    r = runner.invoke(app, ["layers", "--dem", str(zoom_path), "--layers", "illumination_fraction", "--out", str(tmp_path / "o"),
                            "-q", "--illumination-product", f"illumination_fraction={prod}"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "o" / "illumination_fraction.tif") as ds:
        v = ds.read(1)
    assert np.nanmedian(v) == pytest.approx(0.6, abs=1e-6)
    assert v[2, 2] == pytest.approx(0.2, abs=1e-6)
    r = runner.invoke(app, ["layers", "--dem", str(zoom_path), "--layers", "illumination_fraction", "--out", str(tmp_path / "o2"),
                            "--illumination-product", "no-equals-sign"])
    assert r.exit_code == 2 and "LAYER=PATH" in r.output


def test_rank_whole_dem_on_a_5m_landing_scale_dem(tmp_path, tiles):
    dem = tiles / "NPB_final_adj_5mpp_surf_piece_1km_2_12.tif"
    r = runner.invoke(app, ["rank", "--dem", str(dem), "--sites", "dem", "--layers", "slope,roughness", "--out", str(tmp_path), "-q", "--no-map", "--no-layers"])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "ranking.csv")
    assert len(t) >= 9 and (t["kind"] == "pad").all()
    # at 5 m a 100 m pad covers hundreds of pixels: pad-scale slopes, not regional ones
    assert t["n_pixels"].min() > 500
