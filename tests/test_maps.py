"""Tests of lunarmap.maps: self-contained HTML, overlays, popups, coordinate read-out."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import base64
import html as html_lib
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401 - .rio accessor (io.elevation_from_array needs it registered)
import xarray as xr
from shapely.geometry import Point

from lunarmap import maps
from lunarmap.crs import (
    MOON_GEOGRAPHIC,
    NORTH_POLAR_STEREO,
    SOUTH_POLAR_STEREO,
    lonlat_to_xy,
    wrap_longitude,
    xy_to_lonlat,
)
from lunarmap.errors import CRSError, SitesError
from lunarmap.io import elevation_from_array, open_dem
from lunarmap.maps import MapError, external_resources, map_html, polar_xy_to_lonlat, save_map, site_map

TILES = Path(__file__).resolve().parents[1] / "tiles"
GSD = 200.0
N = 64


# ---------------------------------------------------------------- fixtures


def _layers(crs=SOUTH_POLAR_STEREO):
    yy, xx = np.mgrid[0:N, 0:N]
    elev = elevation_from_array((N - yy) * 10.0 + xx, gsd=GSD, crs=crs)  # rises to the north
    slope = elev.copy(data=np.full((N, N), 5.0, dtype="float32"))
    slope[0, 0] = np.nan  # north-west corner pixel: transparent
    slope.attrs = {"units": "deg", "long_name": "slope"}
    psr = elev.copy(data=np.zeros((N, N), dtype=bool))
    psr[40, 20] = True
    hz = elev.copy(data=(xx // 22).astype("float32"))  # classes 0, 1, 2 in vertical bands
    hz.attrs = {"flag_values": [0, 1, 2], "flag_meanings": "safe caution hazardous"}
    hs = elev.copy(data=np.linspace(0, 1, N * N, dtype="float32").reshape(N, N))
    ds = xr.Dataset({"elevation": elev, "hillshade": hs, "slope": slope, "psr": psr, "hazard_class": hz})
    return ds.rio.write_crs(crs)


def _sites(crs=SOUTH_POLAR_STEREO):
    rows = [
        dict(site_id="A", name="Ridge <alpha>", rank=1, score=0.9, status="ok", pass_slope=True,
             pass_sun=True, top_factors="illumination_fraction_mean +0.3", slope_mean=2.5,
             geometry=Point(1000.0, -2000.0).buffer(100.0)),
        dict(site_id="B", name="Rim beta", rank=2, score=0.4, status="ok", pass_slope=True,
             pass_sun=False, top_factors="slope_p95 -0.2", slope_mean=7.0, geometry=Point(-3000.0, 2500.0)),
        dict(site_id="C", name="Far gamma", rank=np.nan, score=np.nan, status="outside DEM",
             pass_slope=None, pass_sun=None, top_factors=None, slope_mean=np.nan,
             geometry=Point(90000.0, 0.0)),
    ]
    return gpd.GeoDataFrame(rows, crs=crs)


def _png(uri):
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))


def _overlays(m):
    return {c.layer_name: c for c in m._children.values() if type(c).__name__ == "RasterOverlay"}


def _sites_json(m):
    layer = next(c for c in m._children.values() if type(c).__name__ == "SitesLayer")
    return json.loads(layer.features_js)


# ---------------------------------------------------------------- coordinates


@pytest.mark.parametrize("crs,hemi", [(SOUTH_POLAR_STEREO, "south"), (NORTH_POLAR_STEREO, "north")])
def test_polar_xy_to_lonlat_matches_proj(crs, hemi):
    rng = np.random.default_rng(0)
    x = rng.uniform(-600_000, 600_000, 500)
    y = rng.uniform(-600_000, 600_000, 500)
    lon, lat = polar_xy_to_lonlat(x, y, hemisphere=hemi)
    lon_ref, lat_ref = xy_to_lonlat(x, y, crs)
    np.testing.assert_allclose(lat, lat_ref, atol=1e-9)
    np.testing.assert_allclose(wrap_longitude(lon - lon_ref), 0.0, atol=1e-9)
    assert (np.sign(lat) == (-1 if hemi == "south" else 1)).all()


def test_polar_xy_to_lonlat_known_points():
    # 10 km due "north" on the south-polar map (+y) is longitude 0; +x is 90E (x = rho sin lon)
    lon, lat = polar_xy_to_lonlat(0.0, 10_000.0, hemisphere="south")
    assert lon == pytest.approx(0.0, abs=1e-12) and -90 < lat < -89.6
    lon, _ = polar_xy_to_lonlat(10_000.0, 0.0, hemisphere="south")
    assert lon == pytest.approx(90.0)
    lon, _ = polar_xy_to_lonlat(0.0, -10_000.0, hemisphere="north")  # north: y = -rho cos lon
    assert lon == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        polar_xy_to_lonlat(0.0, 0.0, hemisphere="east")


def test_polar_projection_detection():
    assert maps._polar_projection(SOUTH_POLAR_STEREO) == ("south", 1_737_400.0)
    assert maps._polar_projection(NORTH_POLAR_STEREO) == ("north", 1_737_400.0)
    # a polar stereographic CRS with another central meridian is NOT what the JS formula assumes
    assert maps._polar_projection("+proj=stere +lat_0=-90 +lat_ts=-90 +lon_0=90 +R=1737400 +units=m +no_defs") is None


@pytest.mark.skipif(shutil.which("node") is None, reason="node.js not installed")
@pytest.mark.parametrize("crs,hemi", [(SOUTH_POLAR_STEREO, "south"), (NORTH_POLAR_STEREO, "north")])
def test_js_xy_to_lonlat_matches_proj(crs, hemi):
    rng = np.random.default_rng(1)
    pts = rng.uniform(-300_000, 300_000, (50, 2)).tolist()
    code = maps.JS_XY_TO_LONLAT + (
        f"var pts = {json.dumps(pts)};"
        f"console.log(JSON.stringify(pts.map(function (p) {{ return lunarmapXYToLonLat(p[0], p[1], "
        f"'{hemi}', 1737400.0); }})));"
    )
    out = subprocess.run(["node", "-e", code], capture_output=True, text=True, timeout=60, check=True)
    got = np.array(json.loads(out.stdout))
    lon_ref, lat_ref = xy_to_lonlat(np.array(pts)[:, 0], np.array(pts)[:, 1], crs)
    np.testing.assert_allclose(got[:, 1], lat_ref, atol=1e-9)
    np.testing.assert_allclose(wrap_longitude(got[:, 0] - lon_ref), 0.0, atol=1e-9)


# ---------------------------------------------------------------- self-contained HTML


def test_external_resources_finds_fetches_not_links():
    page = (
        '<script src="https://cdn.example/x.js"></script><link rel="stylesheet" href="//cdn.example/y.css">'
        '<style>.a{background:url("http://img.example/z.png")}</style>'
        '<a href="https://leafletjs.com">Leaflet</a><script src="data:text/javascript,1"></script>'
        'L.tileLayer("https://tile.example/{z}/{x}/{y}.png")'
    )
    assert sorted(external_resources(page)) == sorted(
        ["https://cdn.example/x.js", "//cdn.example/y.css", "http://img.example/z.png", "https://tile.example/{z}/{x}/{y}.png"]
    )


def test_html_is_self_contained_and_has_leaflet():
    m = site_map(_layers(), _sites())
    page = map_html(m)
    assert external_resources(page) == []
    assert "cdn.jsdelivr" not in page and "code.jquery.com" not in page
    assert "Leaflet 1.9.4" in page and "L.CRS.Simple" in page
    assert "function lunarmapXYToLonLat" in page
    # the plain folium page does link the CDNs (what this module exists to avoid)
    import folium

    assert external_resources(folium.Map(tiles=None).get_root().render())


def test_jupyter_repr_is_self_contained():
    m = site_map(_layers(), None)
    rep = m._repr_html_()
    assert "<iframe" in rep
    inner = html_lib.unescape(rep)
    assert "Leaflet 1.9.4" in inner and "L.imageOverlay" in inner
    assert external_resources(inner) == []
    # what Jupyter itself asks for (IPython's display formatter) is that same page
    formatter = pytest.importorskip("IPython.core.formatters").DisplayFormatter()
    data, _ = formatter.format(m)
    assert "lunarmapXYToLonLat" in html_lib.unescape(data["text/html"])


def test_save_map_writes_atomically(tmp_path):
    m = site_map(_layers(), _sites())
    out = save_map(m, tmp_path / "sub" / "map.html")
    assert out == tmp_path / "sub" / "map.html" and out.exists()
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and external_resources(text) == []
    assert [p.name for p in out.parent.iterdir()] == ["map.html"]  # no temp files left


def test_save_map_refuses_network_resources(tmp_path):
    import folium

    m = folium.Map()  # OpenStreetMap tiles from the network
    with pytest.raises(MapError, match="tile.openstreetmap.org"):
        save_map(m, tmp_path / "osm.html")
    assert not (tmp_path / "osm.html").exists()
    # a plain folium map without tiles becomes self-contained
    out = save_map(folium.Map(tiles=None), tmp_path / "plain.html")
    assert external_resources(out.read_text()) == []


# ---------------------------------------------------------------- overlays


def test_overlays_for_requested_layers_only():
    m = site_map(_layers(), None, layer_names=["slope", "psr"])
    ov = _overlays(m)
    assert set(ov) == {"slope", "psr"}
    page = map_html(m)
    assert page.count("L.imageOverlay(") == 2
    assert "hillshade" not in ov


def test_default_layers_hillshade_is_base():
    m = site_map(_layers(), None)
    ov = _overlays(m)
    assert set(ov) == {"elevation", "hillshade", "slope", "psr", "hazard_class"}
    assert ov["hillshade"].overlay is False and ov["hillshade"].show
    assert all(o.overlay and not o.show for k, o in ov.items() if k != "hillshade")


def test_overlay_pixels_bounds_and_nan_transparency():
    ds = _layers()
    m = site_map(ds, None, layer_names=["slope", "psr", "hazard_class", "elevation"])
    ov = _overlays(m)
    # bounds are the pixel edges of the grid (grid centred on the pole)
    half = N * GSD / 2
    assert ov["slope"].bounds == [[-half, -half], [half, half]]
    slope = _png(ov["slope"].url)
    assert slope.shape == (N, N, 4)
    assert slope[0, 0, 3] == 0 and (slope[1:, 1:, 3] == 255).all()  # NaN transparent
    psr = _png(ov["psr"].url)
    assert psr[40, 20].tolist() == [30, 110, 255, 150]
    assert (psr[..., 3] > 0).sum() == 1
    hz = _png(ov["hazard_class"].url)
    assert len({tuple(hz[5, c]) for c in (0, 30, 60)}) == 3  # one colour per class
    elev = _png(ov["elevation"].url)[..., :3].astype(int).sum(axis=-1)
    assert elev[2, N // 2] != elev[N - 3, N // 2]


def test_overlay_is_north_up_for_ascending_y():
    ds = _layers()
    flipped = ds.isel(y=slice(None, None, -1))  # y ascending: row 0 is south
    a = _png(_overlays(site_map(ds, None, layer_names=["hillshade"]))["hillshade"].url)
    b = _png(_overlays(site_map(flipped, None, layer_names=["hillshade"]))["hillshade"].url)
    np.testing.assert_array_equal(a, b)


def test_overlay_decimation_keeps_mask_pixels():
    m = site_map(_layers(), None, layer_names=["psr", "slope"], max_overlay_px=16)
    ov = _overlays(m)
    psr = _png(ov["psr"].url)
    assert psr.shape[:2] == (16, 16)
    assert (psr[..., 3] > 0).sum() == 1  # block maximum: the single PSR pixel survives
    half = N * GSD / 2  # 64 px / 16 = exact factor 4: the decimated image keeps the full extent
    assert ov["psr"].bounds == [[-half, -half], [half, half]]


def test_legend_lists_layers_with_units():
    page = map_html(site_map(_layers(), _sites()))
    assert "slope [deg]" in page
    assert "hazardous" in page and "caution" in page  # flag_meanings
    assert "site score" in page


# ---------------------------------------------------------------- sites


def test_popups_have_names_ranks_constraints_and_latlon():
    sites = _sites()
    m = site_map(_layers(), sites)
    feats = _sites_json(m)
    assert len(feats) == 3
    by_tip = {f["tip"].split(" - ")[0]: f for f in feats}
    a = by_tip["#1 Ridge <alpha>"]
    assert "#1 Ridge &lt;alpha&gt;" in a["popup"] and "rank</td><td>1 of 2" in a["popup"]
    assert a["label"] == "#1" and a["rings"] is not None
    assert a["point"] == pytest.approx([-2000.0, 1000.0], abs=0.01)  # the pad's centre, not any inner point
    lon_a, lat_a = xy_to_lonlat(1000.0, -2000.0, SOUTH_POLAR_STEREO)
    assert f"lat {lat_a:.4f}°, lon {lon_a:.4f}°E" in a["popup"]
    b = by_tip["#2 Rim beta"]
    assert '<td>sun</td><td><span class="fail">FAIL</span>' in b["popup"]
    assert '<td>slope</td><td><span class="pass">pass</span>' in b["popup"]
    assert "slope_p95 -0.2" in b["popup"] and "slope_mean" in b["popup"]
    lon, lat = xy_to_lonlat(-3000.0, 2500.0, SOUTH_POLAR_STEREO)
    assert f"lat {lat:.4f}°, lon {lon:.4f}°E" in b["popup"]
    c = by_tip["Far gamma"]
    assert c["color"] == maps._UNRANKED and not c["ranked"] and "outside DEM" in c["popup"]
    # best score green, worse red-ish; the best site is drawn last (on top)
    assert feats[-1]["tip"].startswith("#1")
    ra, ga = int(a["color"][1:3], 16), int(a["color"][3:5], 16)
    rb, gb = int(b["color"][1:3], 16), int(b["color"][3:5], 16)
    assert ga > ra and rb > gb
    page = map_html(m)
    assert "Ridge <alpha>" not in page and "Ridge \\u003calpha\\u003e" in page  # escaped in the script


def test_site_text_is_never_run_as_template_or_html():
    # folium re-parses rendered blocks as Jinja templates; lunarmap's elements must not
    sites = _sites()
    sites.loc[0, "name"] = "{{ 7*7 }} {% if true %}x{% endif %} </script><b>"
    sites.loc[1, "top_factors"] = "{# c #}"
    page = map_html(site_map(_layers(), sites, title="<i>t</i> {{ 6*7 }}"))
    assert "{{ 7*7 }} {% if true %}x{% endif %}" in page and "{# c #}" in page
    assert "</script><b>" not in page
    assert "<title>&lt;i&gt;t&lt;/i&gt; {{ 6*7 }}</title>" in page


def test_sites_only_map():
    m = site_map(None, _sites())
    page = map_html(m)
    assert external_resources(page) == [] and "L.imageOverlay" not in page
    assert len(_sites_json(m)) == 3


def test_sites_in_geographic_crs_are_projected():
    lon, lat = 222.7, -89.45
    sites = gpd.GeoDataFrame(
        dict(site_id=["Q"], name=["q"], rank=[1], score=[1.0]), geometry=[Point(lon, lat)], crs=MOON_GEOGRAPHIC
    )
    feats = _sites_json(site_map(None, sites))
    y, x = feats[0]["point"]
    ex, ey = lonlat_to_xy(lon, lat, SOUTH_POLAR_STEREO)
    assert (x, y) == pytest.approx((float(ex), float(ey)), abs=0.01)
    assert "lat -89.4500°, lon -137.3000°E" in feats[0]["popup"]


def test_layers_only_map_has_readout_and_graticule():
    page = map_html(site_map(_layers(), None))
    assert "lunarmapXYToLonLat(x, y, hemi, R)" in page and 'var hemi = "south"' in page
    assert "lat/lon grid" in page and "L.control.scale" in page


def test_errors():
    with pytest.raises(MapError, match="Nothing to map"):
        site_map(None, None)
    with pytest.raises(MapError, match="not in the Dataset"):
        site_map(_layers(), None, layer_names=["nope"])
    ds = _layers()
    ds["horizon"] = xr.concat([ds["elevation"]] * 2, dim="azimuth")
    with pytest.raises(MapError, match="2-D"):
        site_map(ds, None, layer_names=["horizon"])
    assert "horizon" not in _overlays(site_map(ds, None))  # skipped by default
    nocrs = _sites().set_crs(None, allow_override=True)
    with pytest.raises(SitesError, match="no CRS"):
        site_map(_layers(), nocrs)
    with pytest.raises(CRSError, match="Earth"):
        site_map(_layers(), _sites().set_crs("EPSG:3031", allow_override=True))


# ---------------------------------------------------------------- real data


def test_real_tile_shackleton_site_lands_in_the_crater():
    dem = open_dem(TILES / "shackleton_ridge_lola10m_200m_51km.tif")
    ds = xr.Dataset({"elevation": dem}).rio.write_crs(dem.rio.crs)
    # Shackleton crater centre (IAU gazetteer): 89.67 S, 129.78 E; its floor is ~4 km below the rim
    x, y = lonlat_to_xy(129.78, -89.67, dem.rio.crs)
    sites = gpd.GeoDataFrame(
        dict(site_id=["shk"], name=["Shackleton"], rank=[1], score=[0.5]), geometry=[Point(float(x), float(y))],
        crs=dem.rio.crs,
    )
    m = site_map(ds, sites, max_overlay_px=128)
    f = _sites_json(m)[0]
    assert "lat -89.6700°, lon 129.7800°E" in f["popup"]
    (y0, x0), (y1, x1) = _overlays(m)["elevation"].bounds
    assert x0 < f["point"][1] < x1 and y0 < f["point"][0] < y1
    floor = float(dem.sel(x=x, y=y, method="nearest"))
    assert floor < float(dem.quantile(0.05))  # the marker sits at the bottom of the bowl (lowest 5 %)
    assert external_resources(map_html(m)) == []


def _chromium_dom(page_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as prof:
        r = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={prof}", "--virtual-time-budget=3000",
             "--dump-dom", Path(page_path).as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    return r.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="headless chromium not installed"
)
def test_renders_offline_in_headless_chromium(tmp_path):
    m = site_map(_layers(), _sites())
    out = save_map(m, tmp_path / "m.html")
    # after loading, move the "cursor" to x=3 km, y=-9 km and open the #1 site's popup
    probe = (
        "<script>setTimeout(function () { var map = %s;"
        " map.fire('mousemove', {latlng: L.latLng(-9000, 3000)});"
        " map.eachLayer(function (l) { if (l.getTooltip && l.getTooltip() && l.getTooltip().getContent() === '#1')"
        " { l.openPopup(); } }); }, 200);</script>" % m.get_name()
    )
    page = out.read_text(encoding="utf-8")
    out.write_text(page[: page.rindex("</html>")] + probe + "</html>", encoding="utf-8")
    dom = _chromium_dom(out)
    assert 'class="leaflet-image-layer' in dom  # Leaflet ran and placed the hillshade
    assert re.search(r'leaflet-tooltip lunarmap-rank[^>]*>#1<', dom)  # sites drawn, labelled
    assert "lunarmap-legend" in dom and "leaflet-control-layers" in dom
    lon, lat = xy_to_lonlat(3000.0, -9000.0, SOUTH_POLAR_STEREO)  # JS read-out == PROJ
    assert f"lat {lat:.4f}°, lon {lon:.4f}°E" in dom
    assert re.search(r'leaflet-popup-content[^>]*>.*#1 Ridge &lt;alpha&gt;', dom, re.S)  # popup opens


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="headless chromium not installed"
)
def test_plain_folium_popup_works_offline_with_jquery_standin(tmp_path):
    import folium

    m = folium.Map(tiles=None, crs="Simple", location=[0, 0], zoom_start=0)
    cm = folium.CircleMarker([0, 0], radius=10, popup=folium.Popup("hello <b>stand-in</b>"))
    cm.add_to(m)
    m.keep_in_front(cm)  # folium emits $(document).ready(...) for this
    out = save_map(m, tmp_path / "plain.html")
    page = out.read_text(encoding="utf-8")
    assert "$(`" in page  # folium's popup template really calls jQuery
    probe = "<script>setTimeout(function () { %s.openPopup(); }, 200);</script>" % cm.get_name()
    out.write_text(page[: page.rindex("</html>")] + probe + "</html>", encoding="utf-8")
    dom = _chromium_dom(out)
    assert re.search(r'<div class="leaflet-popup-content"[^>]*><div[^>]*>hello <b>stand-in</b>', dom)
