"""Terrain layers from the DEM: ``slope``, ``aspect``, ``roughness``, ``hillshade``.

Each public function takes an ``elevation`` DataArray (dims ``("y","x")``, metres, projected
Moon CRS, numpy or Dask) and returns a DataArray on the same grid, lazy when the input is Dask
(``map_overlap`` with a halo computed from the window: ``depth = ceil(window_radius_m / gsd)``;
Horn's 3x3 stencil needs 1 px). Pixels whose window touches nodata or the raster edge are NaN.

Grid distances are converted to ground distances with the map scale factor ``k`` of the
projection (polar stereographic on the sphere: ``k = 1 + rho^2 / (4 R^2)``, Snyder 1987 eq. 21-4
with k0 = 1), which matters away from the pole (k = 1.002 at 85 deg, 1.03 at 70 deg latitude).

References
----------
Horn, B.K.P. (1981), Hill shading and the reflectance map, Proc. IEEE 69(1), 14-47.
Burrough, P.A. & McDonnell, R.A. (1998), Principles of GIS, OUP (slope/aspect/hillshade forms).
Shepard, M.K. et al. (2001), The roughness of natural terrain, JGR 106(E12), 32777-32795.
Snyder, J.P. (1987), Map Projections - A Working Manual, USGS PP 1395.
"""

from __future__ import annotations

import math

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from .crs import scale_factor_at
from .errors import ChipSizeError
from .layers import register_layer

#: HLS pad slope limit (deg); re-exported for the slope feature fraction. Source: see ranking.LanderConstraints.
SLOPE_LIMIT_DEG = 8.0


def _gsd(da: xr.DataArray) -> float:
    gsd = da.attrs.get("gsd")
    if gsd is None:
        gsd = float(abs(da.x.values[1] - da.x.values[0]))
    return float(gsd)


def scale_factor(elevation: xr.DataArray) -> xr.DataArray:
    """Map scale factor ``k`` (grid distance / ground distance) at each pixel centre.

    Returns a (y, x) float64 DataArray (numpy-backed; cheap); see
    :func:`lunarmap.crs.scale_factor_at` (closed form for polar stereographic, pyproj otherwise).
    """
    crs = elevation.rio.crs
    x = elevation.x.values[np.newaxis, :]
    y = elevation.y.values[:, np.newaxis]
    k = scale_factor_at(x, y, crs) if crs is not None else np.ones((y.size, x.size))
    return xr.DataArray(np.broadcast_to(k, (y.size, x.size)).copy(), dims=("y", "x"), coords={"y": elevation.y, "x": elevation.x})


def _horn_gradients(z: np.ndarray, dx: np.ndarray, dy: np.ndarray):
    """Horn (1981) 3x3 gradients dz/dx (east), dz/dy (north) in m/m; NaN on the 1-px border."""
    zp = np.pad(z, 1, mode="constant", constant_values=np.nan)
    a, b, c = zp[:-2, :-2], zp[:-2, 1:-1], zp[:-2, 2:]
    d, f = zp[1:-1, :-2], zp[1:-1, 2:]
    g, h, i = zp[2:, :-2], zp[2:, 1:-1], zp[2:, 2:]
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8.0 * dx)
    # rows increase southward (y decreasing), so north-minus-south = top row - bottom row
    dzdy = ((a + 2 * b + c) - (g + 2 * h + i)) / (8.0 * dy)
    return dzdx, dzdy


def _ground_spacing(elevation: xr.DataArray):
    gsd = _gsd(elevation)
    k = scale_factor(elevation)
    spacing = gsd / k  # ground metres per pixel step
    if elevation.chunks is not None:
        spacing = spacing.chunk({"y": elevation.chunks[0], "x": elevation.chunks[1]})
    return spacing


def _overlap(func, elevation: xr.DataArray, depth: int, *extra: xr.DataArray, dtype="float32") -> xr.DataArray:
    """Apply ``func(z, *extra)`` (numpy blocks) with a halo of ``depth`` px; NaN outside the raster.

    Pixels that are nodata in the DEM are nodata in the output (Horn's stencil skips the centre).
    """

    def masked(z, *rest):
        out = func(z, *rest)
        out[~np.isfinite(z)] = np.nan
        return out

    if elevation.chunks is None:
        out = masked(np.asarray(elevation.values, dtype="float64"), *[np.asarray(e.values) for e in extra])
        return xr.DataArray(out.astype(dtype), dims=("y", "x"), coords=elevation.coords)
    import dask.array as dsa

    min_chunk = min(min(elevation.chunks[0]), min(elevation.chunks[1]))
    if min_chunk < depth:
        raise ChipSizeError(
            f"Dask chunks ({min_chunk} px) are smaller than the halo ({depth} px) this layer needs; "
            f"rechunk the DEM with larger chunks, e.g. open_dem(path, chunks={max(256, 4 * depth)})."
        )
    arrays = [elevation.data.astype("float64")] + [e.data for e in extra]
    out = dsa.map_overlap(
        lambda *blocks: masked(*blocks).astype(dtype),
        *arrays,
        depth=depth,
        boundary=np.nan,
        dtype=dtype,
        trim=True,
        align_arrays=False,
    )
    return xr.DataArray(out, dims=("y", "x"), coords=elevation.coords)


def _slope_block(z, spacing):
    dzdx, dzdy = _horn_gradients(z, spacing, spacing)
    return np.degrees(np.arctan(np.hypot(dzdx, dzdy)))


def _aspect_block(z, spacing):
    dzdx, dzdy = _horn_gradients(z, spacing, spacing)
    # downslope direction = direction of -grad, azimuth clockwise from grid north
    asp = np.degrees(np.arctan2(-dzdx, -dzdy)) % 360.0
    flat = np.hypot(dzdx, dzdy) < 1e-9
    asp[flat] = np.nan
    return asp


def _keep_geo(out: xr.DataArray, elevation: xr.DataArray) -> xr.DataArray:
    if elevation.rio.crs is not None:
        out = out.rio.write_crs(elevation.rio.crs)
    out.attrs["gsd"] = elevation.attrs.get("gsd", _gsd(elevation))
    return out


def slope(elevation: xr.DataArray) -> xr.DataArray:
    """Horn (1981) slope in degrees.

    Parameters
    ----------
    elevation : xarray.DataArray
        dims ``("y","x")``, float, metres, projected Moon CRS in metres, square pixels.

    Returns
    -------
    xarray.DataArray
        ``slope``, float32 degrees 0..90 at the DEM baseline (one pixel), NaN on the outer 1-px
        border and next to nodata. Ground distances corrected by the map scale factor.
    """
    out = _overlap(_slope_block, elevation, 1, _ground_spacing(elevation))
    out.name = "slope"
    out.attrs = {"units": "deg", "long_name": "slope (Horn 1981)"}
    return _keep_geo(out, elevation)


def aspect(elevation: xr.DataArray) -> xr.DataArray:
    """Downslope direction (deg clockwise from grid north, +y), Horn (1981) gradients.

    Returns float32 degrees 0..360, NaN on flat pixels, the 1-px border and next to nodata.
    Grid north differs from geographic north by the meridian convergence (at the south pole
    geographic north is radially outward from the pole).
    """
    out = _overlap(_aspect_block, elevation, 1, _ground_spacing(elevation))
    out.name = "aspect"
    out.attrs = {"units": "deg", "long_name": "aspect: downslope azimuth clockwise from grid north"}
    return _keep_geo(out, elevation)


def _roughness_block(z, spacing, radius_px: int):
    """Plane-fit residual RMS by moving sums; windows need >= half their pixels valid."""
    from scipy.ndimage import correlate

    r = radius_px
    n_full = (2 * r + 1) ** 2
    u = np.arange(-r, r + 1, dtype="float64")
    ku = np.tile(u, (2 * r + 1, 1))  # x offset of a window pixel from the centre (px)
    kv = ku.T.copy()  # y offset
    valid = np.isfinite(z)
    w = valid.astype("float64")
    zc = np.where(valid, z, 0.0)
    # centre values to keep the sums well conditioned (residuals do not depend on an offset)
    zc = zc - (np.nanmean(z) if valid.any() else 0.0) * w

    def corr(a, k):
        return correlate(a, k, mode="constant", cval=0.0)

    ones = np.ones_like(ku)
    n = corr(w, ones)
    su, sv = corr(w, ku), corr(w, kv)
    suu, svv, suv = corr(w, ku * ku), corr(w, kv * kv), corr(w, ku * kv)
    sz, szu, szv = corr(zc, ones), corr(zc, ku), corr(zc, kv)
    szz = corr(zc * zc, ones)
    # normal equations of z = a + b u + c v over the valid pixels of each window
    A = np.stack([np.stack([n, su, sv], -1), np.stack([su, suu, suv], -1), np.stack([sv, suv, svv], -1)], -2)
    rhs = np.stack([sz, szu, szv], -1)
    ok = (n >= max(6.0, 0.5 * n_full)) & valid
    rms = np.full(z.shape, np.nan)
    if ok.any():
        coef = np.linalg.solve(A[ok], rhs[ok][..., None])[..., 0]
        ss = szz[ok] - np.sum(coef * rhs[ok], axis=-1)  # residual sum of squares
        rms[ok] = np.sqrt(np.clip(ss, 0.0, None) / n[ok])
    return rms


def roughness(elevation: xr.DataArray, *, window_radius_m: float | None = None) -> xr.DataArray:
    """RMS height of plane-detrended elevation in a square window (Shepard et al. 2001).

    A least-squares plane is fitted in each ``(2r+1) x (2r+1)`` window and the RMS of the residuals
    is returned, so uniform slopes give 0 and only relief at the window scale counts.

    Parameters
    ----------
    elevation : xarray.DataArray
        dims ``("y","x")``, metres, projected Moon CRS.
    window_radius_m : float, optional
        Half-width of the window in metres; ``r = ceil(window_radius_m / gsd)`` px (at least 1).
        Default: 2 pixels (a 5x5 window).

    Returns
    -------
    xarray.DataArray
        ``roughness``, float32 metres. Windows cut by nodata or the raster edge are fitted on
        their valid pixels; NaN where fewer than half of the window (or the centre) is valid.
    """
    gsd = _gsd(elevation)
    r = 2 if window_radius_m is None else max(1, math.ceil(window_radius_m / gsd - 1e-9))
    out = _overlap(lambda z, sp: _roughness_block(z, sp, r), elevation, r, _ground_spacing(elevation))
    out.name = "roughness"
    out.attrs = {
        "units": "m",
        "long_name": f"RMS height of plane-detrended elevation, {(2 * r + 1)}x{(2 * r + 1)} px window",
        "window_px": 2 * r + 1,
        "window_m": (2 * r + 1) * gsd,
    }
    return _keep_geo(out, elevation)


def hillshade(
    elevation: xr.DataArray,
    *,
    sun_azimuth_deg: float = 315.0,
    sun_elevation_deg: float = 45.0,
) -> xr.DataArray:
    """Lambertian hillshade 0..1 (Horn 1981; Burrough & McDonnell 1998).

    ``cos(i) = sin(e)cos(s) + cos(e)sin(s)cos(A - aspect)`` with slope ``s``, downslope aspect,
    sun elevation ``e`` and azimuth ``A`` clockwise from grid north. The default 315/45 deg is
    the cartographic convention for visual relief, not the real polar Sun (which stays within
    ~1.6 deg of the horizon); pass the real geometry for shadow studies.

    Returns float32 0..1, NaN at the border and next to nodata.
    """
    az = math.radians(sun_azimuth_deg)
    el = math.radians(sun_elevation_deg)

    def block(z, sp):
        dzdx, dzdy = _horn_gradients(z, sp, sp)
        s = np.arctan(np.hypot(dzdx, dzdy))
        asp = np.arctan2(-dzdx, -dzdy)
        v = np.sin(el) * np.cos(s) + np.cos(el) * np.sin(s) * np.cos(az - asp)
        return np.clip(v, 0.0, 1.0)

    out = _overlap(block, elevation, 1, _ground_spacing(elevation))
    out.name = "hillshade"
    out.attrs = {
        "units": "1",
        "long_name": f"hillshade, sun azimuth {sun_azimuth_deg} deg, elevation {sun_elevation_deg} deg",
    }
    return _keep_geo(out, elevation)


# --- layer registry ---------------------------------------------------------------------------


@register_layer(
    "slope",
    units="deg",
    long_name="slope (Horn 1981)",
    stats=("mean", "p95", "max"),
    fractions=(("gt", SLOPE_LIMIT_DEG),),
    higher_is_better=False,
    # lunarmap convention (docs/ranking.md): 0 deg best, 15 deg (about twice the 8 deg HLS limit) worst
    merit=(15.0, 0.0),
)
def _slope_layer(ctx):
    return slope(ctx.elevation)


@register_layer("aspect", units="deg", long_name="downslope azimuth from grid north", stats=(), default=False)
def _aspect_layer(ctx):
    return aspect(ctx.elevation)


@register_layer(
    "roughness",
    units="m",
    long_name="RMS height of plane-detrended elevation",
    stats=("mean", "p95"),
    higher_is_better=False,
    # metres of RMS relief at the window scale; 0 best, 10 m worst (our convention, stated in docs)
    merit=(10.0, 0.0),
)
def _roughness_layer(ctx):
    return roughness(ctx.elevation, window_radius_m=ctx.options.get("roughness_window_m"))


@register_layer("hillshade", units="1", long_name="hillshade (315/45 deg)", stats=())
def _hillshade_layer(ctx):
    return hillshade(ctx.elevation)
