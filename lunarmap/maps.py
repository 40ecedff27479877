"""Interactive maps of layers and ranked sites: folium, self-contained, in polar map units.

:func:`site_map` builds a :class:`folium.Map` that shows raster layers (``hillshade``,
``slope``, ``illumination_fraction``, ``psr``, ...) as toggleable image overlays and the ranked
sites as coloured footprints with popups; :func:`save_map` writes it as ONE HTML file that works
with no network. In Jupyter the returned map displays itself (``m`` or ``display(m)``), also
without network.

How it works (see ``docs/maps.md``):

* **Offline.** folium's page template loads Leaflet, jQuery, Bootstrap, Font Awesome and
  awesome-markers from CDNs, so offline a browser shows a blank page. The map returned here has
  those links removed and carries instead the Leaflet 1.9.4 JS/CSS vendored from the npm package
  ``leaflet`` (``lunarmap/static/``, BSD-2-Clause, ``LEAFLET_LICENSE``) inline in the page, plus
  a 20-line stand-in for the two jQuery calls folium's own templates make (``$(html)[0]`` in
  popups, ``$(document).ready``). Raster overlays are PNG ``data:`` URIs. :func:`save_map`
  refuses to write a page that still loads a script, stylesheet or image from a URL.
* **Polar map units.** Web Mercator cannot show a pole, so the map uses Leaflet's
  ``L.CRS.Simple`` with the raster's own projected coordinates in metres: Leaflet "lat" := map
  y (m), "lng" := map x (m). Distances on the map (and the scale bar) are therefore projected
  metres; on the polar stereographic projection (true scale at the pole) the scale factor is
  ``k = 2 / (1 + sin|lat|)``: +0.2 % at 85 deg, +0.8 % at 80 deg, +3.1 % at 70 deg.
* **Selenographic read-out.** The cursor position and a clicked point are shown as
  planetocentric latitude/longitude (east-positive, -180..180) by inverting the spherical polar
  stereographic projection in JavaScript (:data:`JS_XY_TO_LONLAT`, ported to Python as
  :func:`polar_xy_to_lonlat`, both checked against PROJ). For a projected CRS that is not
  spherical polar stereographic the read-out shows map x/y only.

folium (and matplotlib, Pillow) are imported inside the functions, so ``import lunarmap`` stays
light.
"""

from __future__ import annotations

import base64
import html as _html
import io as _io
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .crs import (
    MOON_RADIUS_M,
    NORTH_POLAR_STEREO,
    SOUTH_POLAR_STEREO,
    as_crs,
    check_moon_crs,
    lonlat_to_xy,
    polar_hemisphere,
    wrap_longitude,
    xy_to_lonlat,
)
from .errors import LunarmapError, SitesError

__all__ = [
    "JS_XY_TO_LONLAT",
    "MapError",
    "external_resources",
    "make_offline",
    "map_html",
    "polar_xy_to_lonlat",
    "save_map",
    "site_map",
]


class MapError(LunarmapError):
    """A map cannot be built or saved as asked (unknown layer, wrong dims, external resources)."""


# --------------------------------------------------------------------------------------------
# Coordinates: inverse spherical polar stereographic (Snyder 1987, "Map Projections - A Working
# Manual", USGS PP 1395, eqs. 20-14..20-16 and 21-15, with k0 = 1 at the pole).
#   south pole:  x = rho sin(lon), y =  rho cos(lon), rho = 2R tan(pi/4 + lat/2)
#   north pole:  x = rho sin(lon), y = -rho cos(lon), rho = 2R tan(pi/4 - lat/2)
# hence, with c = 2 atan(rho / 2R) the angular distance from the pole:
#   south: lat = c - 90 deg, lon = atan2(x,  y);  north: lat = 90 deg - c, lon = atan2(x, -y).
# --------------------------------------------------------------------------------------------

#: JavaScript twin of :func:`polar_xy_to_lonlat` (embedded in every map page).
JS_XY_TO_LONLAT = """\
function lunarmapXYToLonLat(x, y, hemisphere, radius) {
  /* map x/y (m, polar stereographic, sphere of `radius` m, true scale at the pole)
     -> [lon, lat] planetocentric degrees, lon east-positive in -180..180 */
  var d = 180 / Math.PI;
  var c = 2 * Math.atan(Math.sqrt(x * x + y * y) / (2 * radius)) * d;
  if (hemisphere === "south") { return [Math.atan2(x, y) * d, c - 90]; }
  return [Math.atan2(x, -y) * d, 90 - c];
}
"""


def polar_xy_to_lonlat(x, y, *, hemisphere: str = "south", radius: float = MOON_RADIUS_M):
    """Inverse spherical polar stereographic projection, the formula the map's JavaScript uses.

    Parameters
    ----------
    x, y : float or array-like
        Map coordinates (m) in a polar stereographic CRS centred on the pole with true scale at
        the pole (``+proj=stere +lat_0=-90 +lat_ts=-90 +lon_0=0 +k=1 +x_0=0 +y_0=0 +R=radius``,
        i.e. ``IAU_2015:30135``; north: ``lat_0=lat_ts=90``, ``IAU_2015:30130``).
    hemisphere : {"south", "north"}
    radius : float
        Sphere radius (m); the Moon's 1 737 400 m by default.

    Returns
    -------
    lon, lat : float or ndarray
        Planetocentric degrees; longitude east-positive in -180..180 (0 at the pole itself).

    Notes
    -----
    Snyder (1987), USGS Professional Paper 1395, polar aspect of the stereographic projection:
    south ``x = rho sin(lon)``, ``y = rho cos(lon)``, ``rho = 2R tan(pi/4 + lat/2)``; north
    ``y = -rho cos(lon)``, ``rho = 2R tan(pi/4 - lat/2)``. Inverting, with
    ``c = 2 atan(rho / 2R)``: south ``lat = c - 90``, ``lon = atan2(x, y)``; north
    ``lat = 90 - c``, ``lon = atan2(x, -y)``.
    """
    if hemisphere not in ("south", "north"):
        raise ValueError(f"hemisphere must be 'south' or 'north', got {hemisphere!r}")
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    c = np.degrees(2.0 * np.arctan(np.hypot(x, y) / (2.0 * radius)))
    if hemisphere == "south":
        lat, lon = c - 90.0, np.degrees(np.arctan2(x, y))
    else:
        lat, lon = 90.0 - c, np.degrees(np.arctan2(x, -y))
    lon = wrap_longitude(lon)
    return (lon, lat) if np.ndim(lat) else (float(lon), float(lat))


def _polar_projection(crs) -> tuple[str, float] | None:
    """``(hemisphere, radius_m)`` when ``crs`` is spherical polar stereographic, true scale at the pole.

    Decided by comparing :func:`polar_xy_to_lonlat` with PROJ at test points (a CRS read back
    from a file rarely compares ``==``); ``None`` when the JavaScript read-out would be wrong.
    """
    c = as_crs(crs)
    hemi = polar_hemisphere(c)
    if hemi is None or not c.is_projected or c.ellipsoid is None:
        return None
    radius = float(c.ellipsoid.semi_major_metre)
    sign = -1.0 if hemi == "south" else 1.0
    lons = np.array([-170.0, -90.0, -30.0, 0.0, 45.0, 120.0, 179.0])
    lats = sign * np.array([89.99, 89.5, 88.0, 85.0, 80.0, 75.0, 65.0])
    try:
        x, y = lonlat_to_xy(lons, lats, c)
        lon2, lat2 = polar_xy_to_lonlat(x, y, hemisphere=hemi, radius=radius)
    except Exception:  # pragma: no cover - PROJ failure means no read-out
        return None
    dlon = np.abs(wrap_longitude(np.asarray(lon2) - lons))
    if np.all(np.abs(np.asarray(lat2) - lats) < 1e-7) and np.all(dlon < 1e-6):
        return hemi, radius
    return None


def _lonlat(x, y, crs, polar):
    if polar is not None:
        return polar_xy_to_lonlat(x, y, hemisphere=polar[0], radius=polar[1])
    return xy_to_lonlat(x, y, crs)


def _fmt_lonlat(lon: float, lat: float) -> str:
    return f"lat {lat:.4f}°, lon {lon:.4f}°E"


# --------------------------------------------------------------------------------------------
# Self-contained page: vendored Leaflet + jQuery stand-in, external-resource check
# --------------------------------------------------------------------------------------------

# folium's default head links (folium 0.17-0.20) that the offline page replaces or drops.
_JQUERY_STANDIN = """\
/* lunarmap: stand-in for the two jQuery calls folium's templates make (no jQuery offline):
   $(htmlString)[0] (popups) and $(document).ready(fn) / $(fn). */
if (typeof window.$ === "undefined") {
  window.$ = function (arg) {
    if (typeof arg === "function") { return window.$(document).ready(arg); }
    if (arg === document || arg === window) {
      return { ready: function (fn) {
        if (document.readyState !== "loading") { fn(); }
        else { document.addEventListener("DOMContentLoaded", fn); } } };
    }
    var t = document.createElement("template");
    t.innerHTML = String(arg).trim();
    return Array.prototype.slice.call(t.content.childNodes);
  };
}
"""

_PAGE_CSS = """\
.leaflet-container { background: #0b0b0f; }
.lunarmap-box { background: rgba(255,255,255,0.92); padding: 6px 8px; border-radius: 4px;
  font: 12px/1.35 system-ui, sans-serif; color: #111; box-shadow: 0 1px 4px rgba(0,0,0,0.4); }
.lunarmap-legend .lm-entry { margin: 2px 0 6px 0; }
.lunarmap-legend .lm-title { font-weight: 600; }
.lunarmap-legend .lm-bar { width: 180px; height: 10px; border: 1px solid #555; }
.lunarmap-legend .lm-ticks { display: flex; justify-content: space-between; width: 182px; }
.lunarmap-legend .lm-sw { display: inline-block; width: 12px; height: 12px; border: 1px solid #555;
  vertical-align: middle; margin-right: 4px; }
.lunarmap-coords { min-width: 220px; }
.lunarmap-popup table { border-collapse: collapse; }
.lunarmap-popup td { padding: 0 6px 0 0; vertical-align: top; }
.lunarmap-popup .pass { color: #11772b; font-weight: 600; }
.lunarmap-popup .fail { color: #b3191e; font-weight: 600; }
.lunarmap-raster { image-rendering: pixelated; image-rendering: crisp-edges; }
.lunarmap-rank { background: rgba(255,255,255,0.85); border: 0; box-shadow: none; padding: 0 3px;
  font: bold 11px system-ui, sans-serif; }
"""


def _static_bytes(name: str) -> bytes:
    # next to this module (lunarmap may be a namespace package, where importlib.resources is awkward)
    return (Path(__file__).resolve().parent / "static" / name).read_bytes()


@lru_cache(maxsize=1)
def _inline_assets() -> str:
    """``<style>``/``<script>`` blocks with Leaflet 1.9.4 inlined (read once from package data)."""
    try:
        js = _static_bytes("leaflet.js").decode("utf-8")
        css = _static_bytes("leaflet.css").decode("utf-8")
        png1 = _static_bytes("leaflet-layers.png")
        png2 = _static_bytes("leaflet-layers-2x.png")
    except FileNotFoundError as exc:  # pragma: no cover - broken install
        raise MapError(
            f"lunarmap's vendored Leaflet files are missing ({exc}); reinstall lunarmap "
            f"(package data lunarmap/static/leaflet.js, leaflet.css)."
        ) from exc
    for name, png in (("layers-2x.png", png2), ("layers.png", png1)):
        css = css.replace(f"url(images/{name})", "url(data:image/png;base64," + base64.b64encode(png).decode() + ")")
    if "</script" in js.lower() or "</style" in css.lower():  # pragma: no cover - vendored file check
        raise MapError("vendored Leaflet contains a closing tag and cannot be inlined")
    return (
        "<!-- Leaflet 1.9.4 (BSD-2-Clause, (c) 2010-2023 Vladimir Agafonkin, (c) 2010-2011 CloudMade), "
        "inlined by lunarmap from the npm package 'leaflet' -->\n"
        f"<style>\n{css}\n</style>\n<style>\n{_PAGE_CSS}</style>\n"
        f"<script>\n{js}\n</script>\n<script>\n{_JQUERY_STANDIN}{JS_XY_TO_LONLAT}</script>\n"
    )


_URL_ATTR = re.compile(
    r"<(script|link|img|iframe|source|embed|audio|video)\b[^>]*?\b(src|href)\s*=\s*[\"']?\s*((?:https?:)?//[^\"'\s>]+)",
    re.IGNORECASE,
)
_URL_CSS = re.compile(r"(?:url\(\s*[\"']?|@import\s+[\"'])\s*((?:https?:)?//[^\"')\s]+)", re.IGNORECASE)
_URL_TILES = re.compile(r"L\.tileLayer(?:\.wms)?\(\s*[\"']((?:https?:)?//[^\"']+)", re.IGNORECASE)


def external_resources(html: str) -> list[str]:
    """URLs that a page would FETCH from the network.

    Looks at ``src``/``href`` of ``<script>``, ``<link>``, ``<img>``, ``<iframe>``, media tags,
    CSS ``url(...)``/``@import`` and ``L.tileLayer(...)`` templates with ``http:``, ``https:``
    or protocol-relative ``//`` addresses. Plain ``<a href>`` links (e.g. Leaflet's attribution)
    are not resources and are not reported.
    """
    out = [m.group(3) for m in _URL_ATTR.finditer(html)]
    out += [m.group(1) for m in _URL_CSS.finditer(html)]
    out += [m.group(1) for m in _URL_TILES.finditer(html)]
    return out


@lru_cache(maxsize=1)
def _folium_classes() -> SimpleNamespace:
    """folium element classes used here, defined on first use (folium is imported lazily).

    Every lunarmap element puts its finished text into the page through :class:`Raw`, never
    through folium's ``MacroElement.render``: that one re-parses each rendered block as a Jinja
    template, so a site named ``{{ ... }}`` would be EXECUTED as template code (and parsing the
    inlined Leaflet and megabyte ``data:`` URIs as templates costs seconds).
    """
    import folium
    from branca.element import Element
    from folium.elements import ElementAddToElement
    from folium.map import Layer
    from folium.template import Template

    class Raw(Element):
        """Text put into the page verbatim (no template parsing)."""

        _template = Template("{{ this.text }}")

        def __init__(self, text: str):
            super().__init__()
            self._name = "Raw"
            self.text = text

    def render_raw(el, kwargs, *, header: str | None = None, script: str | None = None):
        figure = el.get_root()
        if header is not None:
            figure.header.add_child(Raw(header), name=el.get_name())
        if script is not None:
            figure.script.add_child(Raw(script), name=el.get_name())
        for child in el._children.values():
            child.render(**kwargs)

    class InlineAssets(folium.MacroElement):
        """Puts the inlined Leaflet CSS/JS in the page head."""

        def __init__(self):
            super().__init__()
            self._name = "LunarmapInlineAssets"

        def render(self, **kwargs):
            render_raw(self, kwargs, header=_inline_assets())

    class Script(folium.MacroElement):
        """A script run after the map exists; ``{map}`` in ``code`` is the map's JS name."""

        def __init__(self, code: str, name: str = "LunarmapScript"):
            super().__init__()
            self._name = name
            self.code = code

        def render(self, **kwargs):
            render_raw(self, kwargs, script=self.code.replace("{map}", self._parent.get_name()))

    class RawLayer(Layer):
        """A Leaflet layer defined by ``self.js()`` (which must create ``var <name>``)."""

        def render(self, **kwargs):
            if self.show:
                self.add_child(
                    ElementAddToElement(element_name=self.get_name(), element_parent_name=self._parent.get_name()),
                    name=self.get_name() + "_add",
                )
            render_raw(self, kwargs, script=self.js())

    class RasterOverlay(RawLayer):
        """``L.imageOverlay`` of a PNG ``data:`` URI with bounds in map units."""

        def __init__(self, url: str, bounds, *, name: str, opacity: float, overlay: bool, show: bool):
            super().__init__(name=name, overlay=overlay, control=True, show=show)
            self._name = "RasterOverlay"
            self.url, self.bounds, self.opacity = url, bounds, opacity

        def js(self):
            opts = {"opacity": self.opacity, "interactive": False, "className": "lunarmap-raster"}
            return f"var {self.get_name()} = L.imageOverlay({_js(self.url)}, {_js(self.bounds)}, {_js(opts)});\n"

    class SitesLayer(RawLayer):
        """Sites as a Leaflet feature group: footprints + always-visible markers with popups."""

        def __init__(self, features_js: str, name: str = "sites", show: bool = True):
            super().__init__(name=name, overlay=True, control=True, show=show)
            self._name = "SitesLayer"
            self.features_js = features_js

        def js(self):
            return f"var {self.get_name()} = L.featureGroup();\n({_SITES_JS})({self.get_name()}, {self.features_js});\n"

    class LinesLayer(RawLayer):
        """Polylines with hover labels (the graticule)."""

        def __init__(self, lines_js: str, name: str = "graticule", show: bool = True):
            super().__init__(name=name, overlay=True, control=True, show=show)
            self._name = "LinesLayer"
            self.lines_js = lines_js

        def js(self):
            return f"var {self.get_name()} = L.featureGroup();\n({_LINES_JS})({self.get_name()}, {self.lines_js});\n"

    class Legend(folium.MacroElement):
        """One control listing the legend of every layer that is currently on."""

        def __init__(self, entries):
            super().__init__()
            self._name = "LunarmapLegend"
            self.entries = entries  # list of (folium Layer, JS string literal of the HTML)

        def render(self, **kwargs):
            items = ",\n".join(f"  {{layer: {layer.get_name()}, html: {h}}}" for layer, h in self.entries)
            render_raw(self, kwargs, script=f"({_LEGEND_JS})({self._parent.get_name()}, [\n{items}\n]);\n")

    return SimpleNamespace(
        Raw=Raw, InlineAssets=InlineAssets, Script=Script, RasterOverlay=RasterOverlay,
        SitesLayer=SitesLayer, LinesLayer=LinesLayer, Legend=Legend,
    )


_SITES_JS = """function (group, feats) {
  feats.forEach(function (f) {
    if (f.rings) {
      var poly = L.polygon(f.rings, {color: f.color, weight: 2, fillColor: f.color,
        fillOpacity: 0.3, bubblingMouseEvents: false});
      poly.bindPopup(f.popup, {maxWidth: 400});
      poly.bindTooltip(f.tip, {sticky: true});
      poly.addTo(group);
    }
    var mk = L.circleMarker(f.point, {radius: f.radius, color: "#000", weight: f.radius > 4 ? 1 : 0.5,
      fillColor: f.color, fillOpacity: 0.95, bubblingMouseEvents: false});
    mk.bindPopup(f.popup, {maxWidth: 400});
    if (f.label) {
      mk.bindTooltip(f.label, {permanent: true, direction: "right", offset: [6, 0], className: "lunarmap-rank"});
    } else {
      mk.bindTooltip(f.tip);
    }
    mk.addTo(group);
  });
}"""

_LINES_JS = """function (group, lines) {
  lines.forEach(function (l) {
    L.polyline(l.coords, {color: "#7fd3ff", weight: 1, opacity: 0.7, interactive: true})
      .bindTooltip(l.label, {sticky: true}).addTo(group);
  });
}"""

_LEGEND_JS = """function (map, entries) {
  var ctl = L.control({position: "bottomright"});
  ctl.onAdd = function () {
    var d = L.DomUtil.create("div", "lunarmap-box lunarmap-legend");
    L.DomEvent.disableClickPropagation(d);
    return d;
  };
  ctl.addTo(map);
  function update() {
    var h = "";
    entries.forEach(function (e) { if (map.hasLayer(e.layer)) { h += e.html; } });
    ctl.getContainer().innerHTML = h;
    ctl.getContainer().style.display = h ? "" : "none";
  }
  map.on("overlayadd overlayremove baselayerchange", update);
  update();
}"""


#: names of folium's default head resources (folium 0.17-0.20) replaced by the inlined copies.
_FOLIUM_DEFAULT_RESOURCES = frozenset(
    {
        "leaflet", "jquery", "bootstrap", "awesome_markers",
        "leaflet_css", "bootstrap_css", "glyphicons_css", "awesome_markers_font_css",
        "awesome_markers_css", "awesome_rotate_css",
    }
)


def make_offline(m):
    """Make a :class:`folium.Map` render as a self-contained page (in place; returns ``m``).

    folium's CDN links to Leaflet, jQuery, Bootstrap, Font Awesome and awesome-markers are
    removed from this map (not from folium's class); Leaflet 1.9.4 is inlined instead, with a
    stand-in for the jQuery calls folium's popups make. Elements that need Bootstrap or
    awesome-markers (``folium.Icon`` markers) or plugins that link their own JavaScript do not
    work offline; :func:`save_map` reports such links.
    """
    cls = _folium_classes()
    m.default_js = [(n, u) for n, u in m.default_js if n not in _FOLIUM_DEFAULT_RESOURCES]
    m.default_css = [(n, u) for n, u in m.default_css if n not in _FOLIUM_DEFAULT_RESOURCES]
    if not any(isinstance(c, cls.InlineAssets) for c in m._children.values()):
        m.add_child(cls.InlineAssets(), name="lunarmap_inline_assets", index=0)
    return m


def map_html(m) -> str:
    """The complete HTML page of map ``m`` (made self-contained with :func:`make_offline`)."""
    make_offline(m)
    return m.get_root().render()


def save_map(m, path) -> Path:
    """Write map ``m`` as one self-contained HTML file (atomically) and return its path.

    Parameters
    ----------
    m : folium.Map
        Usually from :func:`site_map`; any folium map is made offline with :func:`make_offline`.
    path : path-like
        Output ``.html`` file; parent directories are created. Written to a temporary file and
        renamed on success (:func:`lunarmap.io.atomic_path`).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    MapError
        The page would still load a script, stylesheet or image from the network (e.g. a folium
        plugin that links its own JavaScript); nothing is written.
    """
    from .io import atomic_path

    page = map_html(m)
    bad = external_resources(page)
    if bad:
        raise MapError(
            "The map page would load resources from the network, so it would not work offline: "
            + ", ".join(sorted(set(bad)))
            + ". Remove the folium element or plugin that adds them (lunarmap maps use only "
            "Leaflet itself), or embed those files yourself."
        )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Raster layers -> PNG overlays with legends
# --------------------------------------------------------------------------------------------

# Styles per layer name (DESIGN.md layer catalogue). vmin/vmax None = 2nd/98th percentile.
_STYLES: dict[str, dict] = {
    "hillshade": dict(cmap="gray", vmin=0.0, vmax=1.0, opacity=1.0),
    "elevation": dict(cmap="terrain", opacity=0.65),
    "slope": dict(cmap="YlOrRd", vmin=0.0, vmax=30.0, opacity=0.65),
    "aspect": dict(cmap="twilight", vmin=0.0, vmax=360.0, opacity=0.6),
    "roughness": dict(cmap="magma", vmin=0.0, opacity=0.65),
    "illumination_fraction": dict(cmap="inferno", vmin=0.0, vmax=1.0, opacity=0.7),
    "earth_visibility_fraction": dict(cmap="viridis", vmin=0.0, vmax=1.0, opacity=0.7),
    "sun_earth_fraction": dict(cmap="viridis", vmin=0.0, vmax=1.0, opacity=0.7),
    "longest_night": dict(cmap="cividis_r", vmin=0.0, opacity=0.7),
    "psr": dict(kind="mask", color=(30, 110, 255), alpha=150),
    "crater_probability": dict(cmap="magma", vmin=0.0, vmax=1.0, opacity=0.65),
    "crater_density": dict(cmap="magma", vmin=0.0, opacity=0.65),
    "hazard_class": dict(kind="categorical", cmap="RdYlGn_r", opacity=0.6),
    "hazard_probability": dict(cmap="RdYlGn_r", vmin=0.0, vmax=1.0, opacity=0.6),
    "hazard_uncertainty": dict(cmap="viridis", vmin=0.0, vmax=1.0, opacity=0.6),
    "distance_to_psr": dict(cmap="viridis_r", vmin=0.0, opacity=0.6),
    "image_enhanced": dict(cmap="gray", opacity=1.0),
}
_DEFAULT_STYLE = dict(cmap="viridis", opacity=0.65)
_MAX_CATEGORIES = 20


def _grid_crs(layers):
    import rioxarray  # noqa: F401 - registers the .rio accessor

    crs = None
    try:
        crs = layers.rio.crs
    except Exception:  # pragma: no cover - rioxarray missing
        crs = None
    if crs is None:
        for v in layers.data_vars.values():
            try:
                crs = v.rio.crs
            except Exception:  # pragma: no cover
                crs = None
            if crs is not None:
                break
    return check_moon_crs(crs, what="layers Dataset", projected=True)


def _as_yx(da, name):
    if set(da.dims) != {"y", "x"}:
        raise MapError(
            f"Layer {name!r} has dims {da.dims}; a map overlay needs a 2-D (y, x) raster. Select one "
            f"slice first (e.g. layers['{name}'].isel(azimuth=0)) or leave it out of layer_names."
        )
    return da.transpose("y", "x")


def _coarsen(da, max_px: int, categorical: bool):
    f = int(math.ceil(max(da.sizes["y"], da.sizes["x"]) / max(int(max_px), 1)))
    if f <= 1:
        return da
    c = da.coarsen(y=f, x=f, boundary="trim")
    # categorical / mask: the highest code in the block (a PSR or hazard is never averaged away)
    return c.max() if categorical else c.mean()


def _bounds(da):
    """Leaflet bounds [[ymin, xmin], [ymax, xmax]] (m) of the pixel edges, and (dy, dx)."""
    x = np.asarray(da["x"].values, dtype="float64")
    y = np.asarray(da["y"].values, dtype="float64")
    dx = abs(x[1] - x[0]) if x.size > 1 else float(da.attrs.get("gsd", 1.0))
    dy = abs(y[1] - y[0]) if y.size > 1 else dx
    return [[float(y.min() - dy / 2), float(x.min() - dx / 2)], [float(y.max() + dy / 2), float(x.max() + dx / 2)]]


def _north_up(da, values):
    y = np.asarray(da["y"].values)
    x = np.asarray(da["x"].values)
    if y.size > 1 and y[1] > y[0]:
        values = values[::-1]
    if x.size > 1 and x[1] < x[0]:
        values = values[:, ::-1]
    return values


def _png_data_uri(rgba: np.ndarray) -> str:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hex(rgba) -> str:
    """'#rrggbb' of a matplotlib colour (floats 0..1)."""
    r, g, b = (int(round(float(v) * 255)) for v in tuple(rgba)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _fmt_num(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3g}"
    return f"{v:.3g}" if a < 1 else f"{v:.4g}" if a < 10 else f"{v:.1f}" if a < 1000 else f"{v:.0f}"


def _legend_title(name, da):
    units = da.attrs.get("units")
    title = _html.escape(str(name))
    if units and units not in ("1", ""):
        title += f" [{_html.escape(str(units))}]"
    return title


def _render_layer(name: str, da, max_px: int):
    """Render one (y, x) DataArray -> (data URI, bounds, legend HTML, opacity)."""
    import matplotlib

    style = {**_DEFAULT_STYLE, **_STYLES.get(name, {})}
    kind = style.get("kind", "continuous")
    if kind == "continuous" and (da.dtype == bool or "flag_values" in da.attrs):
        kind = "mask" if da.dtype == bool else "categorical"
    da = _coarsen(_as_yx(da, name), max_px, categorical=kind != "continuous")
    values = _north_up(da, np.asarray(da.values))
    bounds = _bounds(da)
    title = _legend_title(name, da)
    finite = np.isfinite(values.astype("float64", copy=False))
    rgba = np.zeros(values.shape + (4,), dtype="uint8")

    if kind == "mask":
        on = finite & (values.astype("float64") > 0.5)
        rgba[on, :3] = style["color"]
        rgba[on, 3] = style["alpha"]
        sw = "rgba({},{},{},{:.2f})".format(*style["color"], style["alpha"] / 255)
        legend = (  # a mask has no unit: name only
            f'<div class="lm-entry"><span class="lm-sw" style="background:{sw}"></span>'
            f'<span class="lm-title">{_html.escape(str(name))}</span></div>'
        )
        return _png_data_uri(rgba), bounds, legend, 1.0

    if kind == "categorical":
        codes = da.attrs.get("flag_values")
        meanings = str(da.attrs.get("flag_meanings", "")).split()
        if codes is None:
            codes = np.unique(values[finite])
            if codes.size > _MAX_CATEGORIES:
                raise MapError(
                    f"Layer {name!r} has {codes.size} distinct values; a categorical map shows at most "
                    f"{_MAX_CATEGORIES}. Give it CF attrs flag_values/flag_meanings or cast it to float."
                )
        codes = [float(c) for c in np.atleast_1d(codes)]
        cmap = matplotlib.colormaps[style["cmap"]].resampled(max(len(codes), 2))
        rows = []
        for i, code in enumerate(codes):
            col = np.asarray(cmap(i if len(codes) > 1 else 0), dtype="float64")
            sel = finite & (values == code)
            rgba[sel, :3] = np.round(col[:3] * 255).astype("uint8")
            rgba[sel, 3] = 255
            label = meanings[i] if i < len(meanings) else _fmt_num(code)
            rows.append(f'<div><span class="lm-sw" style="background:{_hex(col)}"></span>{_html.escape(label)}</div>')
        legend = f'<div class="lm-entry"><div class="lm-title">{title}</div>{"".join(rows)}</div>'
        return _png_data_uri(rgba), bounds, legend, float(style["opacity"])

    v = values.astype("float64", copy=False)
    vmin, vmax = style.get("vmin"), style.get("vmax")
    if finite.any():
        lo, hi = np.percentile(v[finite], [2, 98])
        vmin = float(lo) if vmin is None else float(vmin)
        vmax = float(hi) if vmax is None else float(vmax)
    else:
        vmin, vmax = (vmin or 0.0), (vmax if vmax is not None else 1.0)
    if not vmax > vmin:
        vmax = vmin + 1.0
    cmap = matplotlib.colormaps[style["cmap"]]
    norm = np.clip((np.where(finite, v, vmin) - vmin) / (vmax - vmin), 0.0, 1.0)
    rgba[:] = cmap(norm, bytes=True)
    rgba[~finite, 3] = 0
    stops = ",".join(_hex(cmap(t)) for t in np.linspace(0, 1, 11))
    legend = (
        f'<div class="lm-entry"><div class="lm-title">{title}</div>'
        f'<div class="lm-bar" style="background:linear-gradient(to right,{stops})"></div>'
        f'<div class="lm-ticks"><span>{_fmt_num(vmin)}</span><span>{_fmt_num((vmin + vmax) / 2)}</span>'
        f"<span>{_fmt_num(vmax)}</span></div></div>"
    )
    return _png_data_uri(rgba), bounds, legend, float(style["opacity"])


# --------------------------------------------------------------------------------------------
# Sites -> features for the SitesLayer
# --------------------------------------------------------------------------------------------

_SCORE_CMAP = "RdYlGn"  # best score green, worst red
_UNRANKED = "#8c8c8c"


def _is_missing(v) -> bool:
    try:
        return v is None or (isinstance(v, float) and math.isnan(v)) or bool(np.isnan(v))
    except (TypeError, ValueError):
        return False


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _fmt_num(float(v))
    return _html.escape(str(v))


def _rings(geom):
    """Leaflet [[lat=y, lng=x], ...] rings of a (Multi)Polygon, or None."""
    def ring(coords):
        return [[round(float(y), 2), round(float(x), 2)] for x, y, *_ in coords]

    if geom.geom_type == "Polygon":
        return [ring(geom.exterior.coords)] + [ring(r.coords) for r in geom.interiors]
    if geom.geom_type == "MultiPolygon":
        return [[ring(p.exterior.coords)] + [ring(r.coords) for r in p.interiors] for p in geom.geoms]
    return None


_CORE_COLUMNS = {"site_id", "name", "rank", "score", "status", "top_factors", "geometry"}
#: shown in the popup's main table when present (the ranking table's verdict columns)
_VERDICT_COLUMNS = ("label", "feasible", "tie", "region")
#: not repeated under "features" (the popup already gives the position)
_POSITION_COLUMNS = {"lat", "lon", "x", "y"}
_MAX_FEATURES = 30
_MANY_SITES = 30


def _site_features(sites, crs, polar):
    import matplotlib

    cmap = matplotlib.colormaps[_SCORE_CMAP]
    n = len(sites)
    rank = sites["rank"] if "rank" in sites else [np.nan] * n
    score = sites["score"] if "score" in sites else [np.nan] * n
    rank = np.array([np.nan if _is_missing(r) else float(r) for r in rank])
    score = np.array([np.nan if _is_missing(s) else float(s) for s in score])
    ranked = np.isfinite(rank)
    sc = score[ranked & np.isfinite(score)]
    smin, smax = (float(sc.min()), float(sc.max())) if sc.size else (0.0, 1.0)
    pass_cols = [c for c in sites.columns if str(c).startswith("pass_")]
    verdict = [c for c in _VERDICT_COLUMNS if c in sites.columns]
    extra = [
        c for c in sites.columns
        if c not in _CORE_COLUMNS and c not in pass_cols and c not in verdict and c not in _POSITION_COLUMNS
        and np.issubdtype(np.asarray(sites[c]).dtype, np.number)
    ][:_MAX_FEATURES]
    many = n > _MANY_SITES  # many pads: small markers except the top 10, so the terrain stays visible

    feats = []
    order = sorted(range(n), key=lambda i: (ranked[i], -rank[i] if ranked[i] else 0.0))  # best drawn last
    for i in order:
        row = sites.iloc[i]
        geom = row.geometry
        if geom is None or geom.is_empty:
            continue
        pt = geom if geom.geom_type == "Point" else geom.centroid  # a pad's centre
        if not pt.within(geom) and geom.geom_type != "Point":  # e.g. a crescent: use an inner point
            pt = geom.representative_point()
        lon, lat = _lonlat(pt.x, pt.y, crs, polar)
        sid = row["site_id"] if "site_id" in sites else sites.index[i]
        name = row["name"] if "name" in sites and not _is_missing(row["name"]) else sid
        status = row["status"] if "status" in sites and not _is_missing(row["status"]) else None
        if ranked[i]:
            t = 0.5 if smax == smin or not np.isfinite(score[i]) else (score[i] - smin) / (smax - smin)
            color = _hex(cmap(float(t)))
            head = f"#{int(rank[i])} {_html.escape(str(name))}"
            tip = f"#{int(rank[i])} {name} - score {_fmt_num(score[i])}"
        else:
            color = _UNRANKED
            head = f"{_html.escape(str(name))} (not ranked)"
            tip = f"{name} - {status or 'not ranked'}"
        rows = [f"<tr><td>site</td><td>{_cell(sid)}</td></tr>"]
        if ranked[i]:
            rows.append(f"<tr><td>rank</td><td>{int(rank[i])} of {int(ranked.sum())}</td></tr>")
        if np.isfinite(score[i]):
            rows.append(f"<tr><td>score</td><td>{_fmt_num(score[i])}</td></tr>")
        if status is not None:
            rows.append(f"<tr><td>status</td><td>{_cell(status)}</td></tr>")
        for c in verdict:
            if not _is_missing(row[c]):
                rows.append(f"<tr><td>{_html.escape(str(c))}</td><td>{_cell(row[c])}</td></tr>")
        rows.append(f"<tr><td>position</td><td>{_fmt_lonlat(lon, lat)}</td></tr>")
        for c in pass_cols:
            v = row[c]
            mark = (
                '<span class="pass">pass</span>' if (not _is_missing(v) and bool(v))
                else '<span class="fail">FAIL</span>' if not _is_missing(v) else "n/a"
            )
            rows.append(f"<tr><td>{_html.escape(str(c)[5:])}</td><td>{mark}</td></tr>")
        body = f'<table>{"".join(rows)}</table>'
        if "top_factors" in sites and not _is_missing(row["top_factors"]) and str(row["top_factors"]).strip():
            body += (
                '<div style="margin-top:4px"><b>Top factors (SHAP)</b><div style="white-space:pre-line">'
                f'{_html.escape(str(row["top_factors"]).replace("; ", chr(10)))}</div></div>'
            )
        if extra:
            vals = "".join(f"<tr><td>{_html.escape(str(c))}</td><td>{_cell(row[c])}</td></tr>" for c in extra)
            body += f'<details><summary>features</summary><table>{vals}</table></details>'
        popup = f'<div class="lunarmap-popup"><b>{head}</b>{body}</div>'
        feats.append(
            dict(
                point=[round(float(pt.y), 2), round(float(pt.x), 2)],
                rings=_rings(geom),
                color=color,
                ranked=bool(ranked[i]),
                radius=(7 if not many or (ranked[i] and rank[i] <= 10) else 4) if ranked[i] else (5 if not many else 3),
                label=f"#{int(rank[i])}" if ranked[i] and rank[i] <= 10 else None,
                tip=tip,
                popup=popup,
            )
        )
    stops = ",".join(_hex(cmap(t)) for t in np.linspace(0, 1, 11))
    legend = (
        '<div class="lm-entry"><div class="lm-title">site score (rank #1 = best)</div>'
        f'<div class="lm-bar" style="background:linear-gradient(to right,{stops})"></div>'
        f'<div class="lm-ticks"><span>{_fmt_num(smin)}</span><span>{_fmt_num(smax)}</span></div>'
        f'<div><span class="lm-sw" style="background:{_UNRANKED}"></span>not ranked (see status)</div></div>'
    )
    return feats, legend


def _sites_in_crs(sites, crs):
    """``sites`` in ``crs`` (reprojected if they are in another Moon CRS)."""
    if sites.crs is None:
        raise SitesError(
            "The sites GeoDataFrame has no CRS. Set the Moon CRS it is in, e.g. "
            f"`sites.set_crs('{SOUTH_POLAR_STEREO}')` (map metres) or `set_crs('IAU_2015:30100')` (lon/lat)."
        )
    scrs = check_moon_crs(sites.crs, what="sites", projected=None)
    if crs is None:
        if scrs.is_projected:
            return sites, scrs
        lat = float(np.nanmean(sites.geometry.representative_point().y))
        crs = as_crs(SOUTH_POLAR_STEREO if lat < 0 else NORTH_POLAR_STEREO)
    if scrs == crs or scrs.equals(crs, ignore_axis_order=True):
        return sites, crs
    return sites.to_crs(crs), crs


# --------------------------------------------------------------------------------------------
# Graticule
# --------------------------------------------------------------------------------------------

_NICE_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0)


def _nice_step(span: float, n: int = 6) -> float:
    want = max(span, 1e-9) / n
    for s in _NICE_STEPS:
        if s >= want:
            return s
    return _NICE_STEPS[-1]


def _deg_label(v: float, pos: str, neg: str, step: float) -> str:
    nd = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
    return f"{abs(v):.{nd}f}°{pos if v >= 0 else neg}"


def _graticule(crs, bounds, polar):
    """Parallels and meridians clipped to ``bounds`` [[ymin, xmin], [ymax, xmax]] (m)."""
    (ymin, xmin), (ymax, xmax) = bounds
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, 41), np.linspace(ymin, ymax, 41))
    lon, lat = _lonlat(gx.ravel(), gy.ravel(), crs, polar)
    lon, lat = np.asarray(lon), np.asarray(lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        return []
    lon, lat = lon[ok], lat[ok]
    pole = None
    for plat in (-90.0, 90.0):
        try:
            px, py = lonlat_to_xy(0.0, plat, crs)
        except Exception:  # pragma: no cover
            continue
        if np.isfinite(px) and xmin <= px <= xmax and ymin <= py <= ymax:
            pole = plat
    latmin, latmax = float(lat.min()), float(lat.max())
    if pole is not None:
        latmin, latmax = (-90.0, latmax) if pole < 0 else (latmin, 90.0)
        lon0, lon1, lon_step = -180.0, 180.0, 30.0
    else:
        lc = float(lon[len(lon) // 2])
        ul = lc + wrap_longitude(lon - lc)
        lon0, lon1 = float(ul.min()), float(ul.max())
        lon_step = _nice_step(lon1 - lon0)
    lat_step = _nice_step(latmax - latmin)
    pad_x, pad_y = 0.02 * (xmax - xmin), 0.02 * (ymax - ymin)

    def runs(xs, ys):
        inside = (xs >= xmin - pad_x) & (xs <= xmax + pad_x) & (ys >= ymin - pad_y) & (ys <= ymax + pad_y)
        inside &= np.isfinite(xs) & np.isfinite(ys)
        out, cur = [], []
        for xv, yv, k in zip(xs, ys, inside):
            if k:
                cur.append([round(float(yv), 1), round(float(xv), 1)])
            elif cur:
                out.append(cur)
                cur = []
        if cur:
            out.append(cur)
        return [r for r in out if len(r) > 1]

    lines = []
    for la in np.arange(math.ceil(latmin / lat_step) * lat_step, latmax + 1e-9, lat_step):
        if abs(abs(la) - 90.0) < 1e-9:
            continue
        lo = np.linspace(lon0, lon1, 721)
        xs, ys = lonlat_to_xy(lo, np.full_like(lo, la), crs)
        label = _deg_label(la, "N", "S", lat_step)
        lines += [dict(coords=r, label=label) for r in runs(np.asarray(xs), np.asarray(ys))]
    for lo in np.arange(math.ceil(lon0 / lon_step) * lon_step, lon1 + 1e-9, lon_step):
        if pole is not None and lo >= 180.0:
            continue
        la = np.linspace(latmin, latmax, 400)
        xs, ys = lonlat_to_xy(np.full_like(la, lo), la, crs)
        label = _deg_label(float(wrap_longitude(lo)), "E", "W", lon_step)
        lines += [dict(coords=r, label=label) for r in runs(np.asarray(xs), np.asarray(ys))]
    return lines


_JS_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _js(obj) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, no line separators)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for k, v in _JS_ESCAPES.items():
        text = text.replace(k, v)
    return text


def _label(name) -> str:
    """A layer name for the layer control. folium's LayerControl re-parses its output as a Jinja
    template, so template delimiters are broken up there."""
    return re.sub(r"([{%#}])(?=[{%#}])", r"\1 ", str(name))


# --------------------------------------------------------------------------------------------
# The map
# --------------------------------------------------------------------------------------------


def site_map(
    layers=None,
    sites=None,
    *,
    layer_names=None,
    title: str = "lunarmap",
    max_overlay_px: int = 1024,
    graticule: bool = True,
    show=None,
):
    """Interactive, self-contained map of raster layers and ranked sites.

    Parameters
    ----------
    layers : xarray.Dataset or None
        Layers on one projected Moon grid: 2-D ``(y, x)`` variables, x/y pixel-centre
        coordinates in metres, CRS readable with ``layers.rio.crs`` (or on a variable), e.g. from
        :func:`lunarmap.layers.compute_layers`. Lazy (dask) variables are decimated before they
        are computed. Each variable becomes a toggleable PNG overlay with a legend: ``hillshade``
        grey (the base, always on), ``slope`` 0-30 deg, fractions 0-1, ``psr`` a translucent blue
        mask, ``hazard_class`` one colour per class (CF ``flag_values``/``flag_meanings`` attrs
        name them), others viridis over the 2nd-98th percentile. NaN is transparent.
    sites : geopandas.GeoDataFrame or None
        Points or polygons in the layers' CRS (another Moon CRS is reprojected to it; with no
        layers a geographic Moon CRS is projected to the polar stereographic CRS of its
        hemisphere). Columns used: ``site_id``, ``name``, ``rank`` (NaN = not ranked), ``score``,
        and if present ``status``, ``pass_<constraint>`` (bool), ``top_factors`` (str) and up
        to 15 other numeric columns (features). Ranked sites are coloured by score (green = best,
        red = worst) and labelled ``#rank`` for the top 10; unranked sites are grey with their
        status. Every site keeps a fixed-size marker, so 100 m pads stay visible at any zoom.
    layer_names : sequence of str, optional
        Variables to show, in this order (default: every 2-D (y, x) variable, hillshade first).
    title : str
        Page title.
    max_overlay_px : int
        Longest side of an overlay image; larger rasters are block-averaged (masks and classes:
        block maximum, so no PSR or hazard pixel disappears) by an integer factor.
    graticule : bool
        Add latitude/longitude lines (an overlay that can be switched off).
    show : sequence of str, optional
        Overlays switched on when the page opens (default: the base layer only; with no
        ``hillshade``/``elevation`` base, the first layer).

    Returns
    -------
    folium.Map
        In ``L.CRS.Simple`` with map metres (Leaflet lat = y, lng = x), already made offline
        (:func:`make_offline`): displays itself in Jupyter, :func:`save_map` writes it. It has a
        layer control, a legend for the visible layers, a scale bar in projected metres, and a
        read-out of the cursor's selenographic lat/lon (also shown in a popup on click).

    Raises
    ------
    MapError
        Neither layers nor sites, unknown layer name, a layer that is not 2-D (y, x).
    CRSError
        Layers or sites without a Moon CRS (an Earth CRS is refused, never reprojected).
    SitesError
        Sites without a CRS.
    """
    import folium

    if layers is None and (sites is None or len(sites) == 0):
        raise MapError("Nothing to map: pass a layers Dataset, a sites GeoDataFrame, or both.")
    crs = _grid_crs(layers) if layers is not None else None
    if sites is not None:
        sites, crs = _sites_in_crs(sites, crs)
    polar = _polar_projection(crs)

    names: list[str] = []
    if layers is not None:
        if layer_names is None:
            names = [str(k) for k, v in layers.data_vars.items() if set(v.dims) == {"y", "x"}]
            names.sort(key=lambda n: n != "hillshade")
        else:
            names = [str(n) for n in layer_names]
            missing = [n for n in names if n not in layers.data_vars]
            if missing:
                raise MapError(
                    f"Layer(s) {missing} are not in the Dataset; it has {sorted(map(str, layers.data_vars))}."
                )

    # extent: the raster grid, else the sites (padded)
    if layers is not None and names:
        b = _bounds(_as_yx(layers[names[0]], names[0]))
    elif layers is not None:
        ref = next(iter(layers.data_vars.values()))
        b = _bounds(ref.isel({d: 0 for d in ref.dims if d not in ("y", "x")}))
    else:
        x0, y0, x1, y1 = (float(v) for v in sites.total_bounds)
        pad = max(0.1 * max(x1 - x0, y1 - y0), 1000.0)
        b = [[y0 - pad, x0 - pad], [y1 + pad, x1 + pad]]
    (ymin, xmin), (ymax, xmax) = b
    extent = max(xmax - xmin, ymax - ymin)
    z_fit = math.log2(900.0 / extent)

    m = folium.Map(
        location=[(ymin + ymax) / 2, (xmin + xmax) / 2],
        crs="Simple",
        tiles=None,
        zoom_start=int(math.floor(z_fit)),
        minZoom=int(math.floor(z_fit)) - 4,
        maxZoom=int(math.ceil(z_fit)) + 10,
        zoomSnap=0.25,
        control_scale=False,
        attributionControl=True,
    )
    m.get_root().title = _html.escape(str(title))
    make_offline(m)
    cls = _folium_classes()
    legend_entries = []

    for i, name in enumerate(names):
        da = layers[name]
        uri, bounds, legend, opacity = _render_layer(name, da, max_overlay_px)
        base = name == "hillshade" or (i == 0 and "hillshade" not in names and name in ("elevation", "image_enhanced"))
        ov = cls.RasterOverlay(
            uri, bounds, name=_label(name), opacity=opacity, overlay=not base,
            show=base or (name in show if show is not None else i == 0),
        )
        ov.add_to(m)
        if not base:
            legend_entries.append((ov, _js(legend)))

    if graticule and crs is not None:
        lines = _graticule(crs, b, polar)
        if lines:
            cls.LinesLayer(_js(lines), name="lat/lon grid").add_to(m)

    if sites is not None and len(sites):
        feats, legend = _site_features(sites, crs, polar)
        sl = cls.SitesLayer(_js(feats), name=f"sites ({len(feats)})")
        sl.add_to(m)
        legend_entries.append((sl, _js(legend)))

    folium.LayerControl(collapsed=False, position="topright").add_to(m)
    if legend_entries:
        cls.Legend(legend_entries).add_to(m)

    hemi, radius = polar if polar is not None else (None, MOON_RADIUS_M)
    cls.Script(
        _READOUT_JS.replace("__HEMI__", _js(hemi)).replace("__R__", repr(float(radius))),
        name="LunarmapReadout",
    ).add_to(m)
    m.fit_bounds(b)
    return m


_READOUT_JS = """
(function (map) {
  var hemi = __HEMI__, R = __R__;
  L.control.scale({imperial: false, maxWidth: 160, position: "bottomleft"}).addTo(map);
  function fmt(ll) {
    var x = ll.lng, y = ll.lat, s = "x " + (x / 1000).toFixed(3) + " km, y " + (y / 1000).toFixed(3) + " km";
    if (hemi) {
      var g = lunarmapXYToLonLat(x, y, hemi, R);
      s = "lat " + g[1].toFixed(4) + "\\u00b0, lon " + g[0].toFixed(4) + "\\u00b0E<br>" + s;
    }
    return s;
  }
  var box = L.control({position: "bottomleft"});
  box.onAdd = function () {
    var d = L.DomUtil.create("div", "lunarmap-box lunarmap-coords");
    d.innerHTML = hemi ? "move the cursor: lat/lon (planetocentric, east +)" : "move the cursor: map x/y";
    return d;
  };
  box.addTo(map);
  map.on("mousemove", function (e) { box.getContainer().innerHTML = fmt(e.latlng); });
  map.on("click", function (e) { L.popup().setLatLng(e.latlng).setContent(fmt(e.latlng)).openOn(map); });
})({map});
"""
