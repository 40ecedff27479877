"""Moon coordinate reference systems and selenographic <-> map coordinate transforms.

Conventions (DESIGN.md): Moon sphere R = 1 737 400 m; planetocentric latitude/longitude in
degrees, longitudes east-positive, output in -180..180 (0..360 accepted on input); south polar
stereographic is ``IAU_2015:30135`` (``+proj=stere +lat_0=-90 +lat_ts=-90 +lon_0=0 +k=1 +R=1737400``),
north polar stereographic ``IAU_2015:30130``, geographic ``IAU_2015:30100``.

All transforms go through pyproj; PROJ refuses Moon -> Earth transforms, and lunarmap never
falls back to an Earth CRS.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pyproj

from .errors import CRSError

#: Mean radius of the Moon reference sphere used by LOLA products (m).
MOON_RADIUS_M = 1_737_400.0
SOUTH_POLAR_STEREO = "IAU_2015:30135"
NORTH_POLAR_STEREO = "IAU_2015:30130"
MOON_GEOGRAPHIC = "IAU_2015:30100"

# IAU Moon spheres/ellipsoids in use are 1737.4 km (IAU 2000/2015, LOLA) and 1738.1 km (older
# IAU 2009 semi-major axis); anything within this window is accepted as a Moon body.
_MOON_RADIUS_WINDOW_M = (1_735_000.0, 1_740_000.0)

_FIX_HINT = (
    "Set a Moon CRS, e.g. `dem.rio.write_crs('IAU_2015:30135')` for south polar stereographic "
    "(+proj=stere +lat_0=-90 +lat_ts=-90 +lon_0=0 +k=1 +R=1737400 +units=m), or `gdal_edit.py -a_srs "
    "IAU_2015:30135 FILE.tif`."
)


def as_crs(crs) -> pyproj.CRS:
    """Return ``crs`` (anything pyproj accepts, or a rasterio CRS) as a :class:`pyproj.CRS`."""
    if isinstance(crs, pyproj.CRS):
        return crs
    if hasattr(crs, "to_wkt"):
        return pyproj.CRS.from_wkt(crs.to_wkt())
    return pyproj.CRS.from_user_input(crs)


def check_moon_crs(crs, *, what: str = "raster", projected: bool | None = True) -> pyproj.CRS:
    """Validate that ``crs`` is a Moon CRS and return it as a :class:`pyproj.CRS`.

    The body is recognised by its ellipsoid (semi-major axis 1735-1740 km), so files whose CRS
    says "unknown" datum on a 1737.4 km sphere (common for LOLA GeoTIFFs) are accepted.

    Parameters
    ----------
    crs : CRS-like or None
    what : str
        Name of the object, used in error messages.
    projected : bool or None
        ``True`` requires a projected CRS in metres (rasters), ``False`` a geographic one,
        ``None`` accepts both.

    Raises
    ------
    CRSError
        Missing CRS, an Earth (or other body's) CRS, or projected/geographic mismatch, or a
        projected CRS whose unit is not the metre.
    """
    if crs is None:
        raise CRSError(f"The {what} has no CRS. lunarmap needs a Moon CRS. {_FIX_HINT}")
    try:
        c = as_crs(crs)
    except pyproj.exceptions.CRSError as exc:  # pragma: no cover - depends on input
        raise CRSError(f"The {what} CRS {crs!r} is not understood by PROJ ({exc}). {_FIX_HINT}") from exc
    a = c.ellipsoid.semi_major_metre if c.ellipsoid is not None else float("nan")
    if not (_MOON_RADIUS_WINDOW_M[0] <= a <= _MOON_RADIUS_WINDOW_M[1]):
        body = "an Earth" if 6_300_000 < a < 6_400_000 else "a non-Moon"
        code = c.to_string() if c.to_authority() else c.name
        raise CRSError(
            f"The {what} has {body} CRS ({code}, ellipsoid semi-major axis {a:,.0f} m); lunarmap needs "
            f"a Moon CRS such as {SOUTH_POLAR_STEREO}. If the data are lunar but were tagged with an "
            f"Earth CRS by mistake, overwrite the CRS (do not reproject). {_FIX_HINT}"
        )
    if projected is True:
        if not c.is_projected:
            raise CRSError(
                f"The {what} CRS ({c.name}) is geographic; lunarmap computes terrain in a projected "
                f"Moon CRS in metres. Reproject it first, e.g. `gdalwarp -t_srs {SOUTH_POLAR_STEREO} in.tif "
                f"out.tif` (or `rio.reproject('{SOUTH_POLAR_STEREO}')`)."
            )
        unit = c.axis_info[0].unit_name if c.axis_info else "metre"
        if unit not in ("metre", "meter", "m"):
            raise CRSError(f"The {what} CRS ({c.name}) has axis unit {unit!r}; lunarmap needs metres.")
    elif projected is False and c.is_projected:
        raise CRSError(f"The {what} CRS ({c.name}) is projected; a geographic Moon CRS is expected here.")
    return c


@lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(src_wkt), pyproj.CRS.from_wkt(dst_wkt), always_xy=True)


def geographic_crs_of(crs) -> pyproj.CRS:
    """The planetocentric geographic CRS on the same body/sphere as ``crs``."""
    c = as_crs(crs)
    g = c.geodetic_crs
    if g is None:  # pragma: no cover
        return pyproj.CRS(MOON_GEOGRAPHIC)
    return g


def lonlat_to_xy(lon, lat, crs):
    """Selenographic lon/lat (deg, east-positive, -180..180 or 0..360) -> map x/y (m) in ``crs``.

    Returns arrays (or floats) of the same shape as the inputs.
    """
    c = as_crs(crs)
    t = _transformer(geographic_crs_of(c).to_wkt(), c.to_wkt())
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    x, y = t.transform(wrap_longitude(lon), lat)
    return x, y


def xy_to_lonlat(x, y, crs):
    """Map x/y (m) in ``crs`` -> selenographic lon/lat (deg), longitude in -180..180."""
    c = as_crs(crs)
    t = _transformer(c.to_wkt(), geographic_crs_of(c).to_wkt())
    lon, lat = t.transform(np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"))
    return wrap_longitude(lon), lat


def wrap_longitude(lon):
    """Longitude(s) in degrees -> east-positive -180..180 (accepts 0..360)."""
    lon = np.asarray(lon, dtype="float64")
    out = (lon + 180.0) % 360.0 - 180.0
    # keep +180 as +180 rather than -180 for readability of inputs that were exactly 180
    out = np.where((out == -180.0) & (lon > 0), 180.0, out)
    return out if out.ndim else float(out)


def polar_hemisphere(crs) -> str | None:
    """``'south'`` or ``'north'`` for a polar stereographic Moon CRS, ``None`` otherwise."""
    c = as_crs(crs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            lat0 = c.to_dict().get("lat_0")
    except Exception:  # pragma: no cover
        lat0 = None
    if lat0 is None:
        for p in getattr(c.coordinate_operation, "params", []) or []:
            if "Latitude of natural origin" in p.name or "Latitude of standard parallel" in p.name:
                lat0 = p.value
                break
    if lat0 is None:
        return None
    if lat0 <= -89.999:
        return "south"
    if lat0 >= 89.999:
        return "north"
    return None


def standard_polar_crs(crs) -> pyproj.CRS:
    """Return the named IAU CRS (``IAU_2015:30135``/``30130``) when ``crs`` is equivalent to it.

    Equivalence is tested by transforming points (CRSs read back from GeoTIFFs rarely compare
    ``==``), so an "unknown datum" LOLA file gets its proper Moon name on output. Other CRSs are
    returned unchanged.
    """
    c = as_crs(crs)
    hemi = polar_hemisphere(c)
    if hemi is None or not c.is_projected:
        return c
    ref = pyproj.CRS(SOUTH_POLAR_STEREO if hemi == "south" else NORTH_POLAR_STEREO)
    lat = -88.0 if hemi == "south" else 88.0
    lons = np.array([-135.0, -45.0, 45.0, 135.0])
    x1, y1 = lonlat_to_xy(lons, np.full(4, lat), c)
    x2, y2 = lonlat_to_xy(lons, np.full(4, lat), ref)
    if np.allclose(x1, x2, atol=0.01) and np.allclose(y1, y2, atol=0.01):
        return ref
    return c


def scale_factor_at(x, y, crs) -> np.ndarray:
    """Point scale factor ``k`` (map length / true length on the sphere) at map ``x``, ``y`` (m).

    Polar stereographic on the sphere with k0 = 1 at the pole (either pole): the closed form
    ``k = 1 + rho^2 / (4 R^2) = 2 / (1 + sin|lat|)`` (Snyder 1987, USGS PP 1395, eq. 21-4): 1 at
    the pole, 1.0019 at 85 deg, 1.031 at 70 deg, 1.072 at 60 deg. Any other projected Moon CRS:
    pyproj's ``get_factors`` meridional scale. Returns float64 with the broadcast shape of x, y.
    """
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    c = as_crs(crs)
    if polar_hemisphere(c) is not None:
        return 1.0 + (x**2 + y**2) / (4.0 * MOON_RADIUS_M**2)
    xx, yy = np.broadcast_arrays(x, y)
    lon, lat = xy_to_lonlat(xx, yy, c)
    return np.asarray(pyproj.Proj(c).get_factors(lon, lat).meridional_scale, dtype="float64")
