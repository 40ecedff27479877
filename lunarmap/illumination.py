"""Illumination engine: Sun and Earth visibility over a time window from horizon maps.

Pipeline (DESIGN.md "illumination"): DEM (+ far-field DEM) -> :func:`lunarmap.horizon.horizon_map`
(horizon elevation angle per grid azimuth) -> Sun/Earth geometry from SPICE kernels
(:mod:`lunarmap.ephemeris`) -> per-pixel time statistics:

* ``illumination_fraction`` — time-mean **visible fraction of the solar disk** (0..1), the
  partial disk counted (circular-segment area above a locally straight horizon);
* ``longest_night`` — longest run of consecutive epochs with the Sun **fully** below the
  horizon, in hours (resolution = the time step; runs touching the window's ends are cut there);
* ``psr`` — permanently shadowed: no part of the disk above the horizon at any epoch;
* ``earth_visibility_fraction`` — time fraction with the Earth's **centre** above the horizon,
  topocentric (the Earth's parallax from the lunar surface reaches ~0.26°);
* ``sun_earth_fraction`` — time fraction with some of the Sun and the Earth's centre visible;
* ``horizon`` (deg, dims ``(azimuth, y, x)``), ``distance_to_psr`` (m).

Geometry
--------
The Sun is treated as infinitely far (its parallax from the surface is < 0.001°): its
elevation at a pixel is ``asin(ŝ·û)`` with ``û`` the local vertical of the sphere at the pixel's
selenographic lat/lon (LOLA heights are on the 1737.4 km sphere). Azimuths are compared with the
horizon map in **grid azimuth** (clockwise from grid north, +y). A direction's grid azimuth is its
topocentric azimuth ``A`` (clockwise from local north) plus the **meridian convergence** ``γ``,
the grid azimuth of local north (:func:`meridian_convergence`). For polar stereographic grids
(DESIGN.md: south ``x = ρ sin λ, y = ρ cos λ``; north ``x = ρ sin λ, y = -ρ cos λ``) local north
is the direction of ``∓∂/∂ρ``, which gives ``γ = λ - λ0`` at the south pole and ``γ = -(λ - λ0)``
at the north pole (:func:`polar_stereographic_convergence`).

The horizon between two azimuth bins is interpolated linearly. The solar disk's angular radius
``r = asin(R_sun/d)`` (≈ 0.267°) comes from the ephemeris per epoch.

Numerics (the kernel runs over pixels x epochs, ~27 000 epochs by default)
--------------------------------------------------------------------------
One numba pass per Dask chunk computes all five statistics. Per pixel, the horizon profile's
sine and secant are tabulated once; per epoch the Sun is classified with one dot product when it
is above ``sin(max horizon + r)`` or below ``sin(min horizon - r)``; otherwise its grid azimuth
comes from a 5-term arctangent (Abramowitz & Stegun 4.4.47, |error| <= 1e-5 rad) and
``(e - h)/r`` from sines, ``(sin e - sin h)/(cos h · r)`` (relative error ≈ tan|h|·|e - h|/2,
< 0.0014 for |e - h| < r and horizons below 30°). The Earth's topocentric sine-elevation is
``(ê·û - q)(1 + q ê·û)`` with ``q = |P|/|E|`` (< 0.005), error < 3e-5 (0.002°); its azimuth is
the geocentric one (the observer offset is vertical). ``tests/test_illumination.py`` checks the
kernel against a plain numpy implementation (exact ``asin``/``atan2``). Set
``NUMBA_NUM_THREADS`` to bound the threads of the kernel (rows in parallel).

References
----------
Mazarico, E., Neumann, G.A., Smith, D.E., Zuber, M.T., Torrence, M.H. (2011) Illumination
conditions of the lunar polar regions using LOLA topography. Icarus 211, 1066-1081.
Gläser, P., Scholten, F., De Rosa, D., et al. (2014) Illumination conditions at the lunar south
pole using high resolution Digital Terrain Models from LOLA. Icarus 243, 78-90.
Bussey, D.B.J., McGovern, J.A., Spudis, P.D., et al. (2010) Illumination conditions of the south
pole of the Moon derived using Kaguya topography. Icarus 208, 558-564.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr

from . import ephemeris as _eph
from .crs import MOON_RADIUS_M, lonlat_to_xy, xy_to_lonlat
from .errors import CoordinateError, LunarmapError
from .layers import register_layer

#: Default observer height above the surface (m) for illumination layers. Gläser et al. (2014)
#: report illumination at 2 m (and 10 m) above ground; 2 m is also the order of a lander's
#: lowest solar-array/antenna height. Use 0 m to reproduce surface PSR maps (Mazarico et al. 2011).
DEFAULT_OBSERVER_HEIGHT_M = 2.0
#: Default number of horizon azimuth bins (1° each; 3x finer than the 3° the Sun moves in one
#: default 6 h step).
DEFAULT_N_AZIMUTHS = 360

#: Order of the statistics stacked by the kernel.
STAT_NAMES = (
    "illumination_fraction",
    "longest_night",
    "psr",
    "earth_visibility_fraction",
    "sun_earth_fraction",
)


# ----------------------------------------------------------------------------- geometry


def solar_disk_visible_fraction(elevation_deg, horizon_deg, radius_deg):
    """Visible fraction of a uniform circular disk above a locally straight horizon.

    ``x = (e - h) / r`` is the disk centre's height above the horizon in disk radii; the hidden
    part is a circular segment whose chord lies ``x`` radii from the centre:
    ``f = 1 - (acos(x) - x sqrt(1 - x²)) / π`` for ``|x| <= 1``, 0 below, 1 above.

    Parameters
    ----------
    elevation_deg, horizon_deg, radius_deg : array-like (broadcast), degrees
        Disk-centre elevation, horizon elevation in the disk's azimuth, disk angular radius
        (the Sun's ≈ 0.267°).

    Returns
    -------
    ndarray, float64, 0..1
        (Limb darkening ignored: an area, not a flux, fraction.)
    """
    x = (np.asarray(elevation_deg, dtype="float64") - np.asarray(horizon_deg, dtype="float64")) / np.asarray(
        radius_deg, dtype="float64"
    )
    xc = np.clip(x, -1.0, 1.0)
    return 1.0 - (np.arccos(xc) - xc * np.sqrt(1.0 - xc * xc)) / np.pi


def polar_stereographic_convergence(lon_deg, hemisphere: str, lon0_deg: float = 0.0):
    """Meridian convergence of a polar stereographic grid (deg): grid azimuth of local north.

    South (``x = ρ sin λ, y = ρ cos λ``, ρ growing northwards): local north = ∂/∂ρ = (sin λ, cos λ)
    → grid azimuth ``λ - λ0``. North (``y = -ρ cos λ``, ρ growing southwards): north = -∂/∂ρ =
    (-sin λ, cos λ) → ``-(λ - λ0)``. Result wrapped to 0..360.
    """
    lam = np.asarray(lon_deg, dtype="float64") - lon0_deg
    if hemisphere == "south":
        g = lam
    elif hemisphere == "north":
        g = -lam
    else:
        raise ValueError(f"hemisphere must be 'south' or 'north', got {hemisphere!r}")
    return np.mod(g, 360.0)


def meridian_convergence(lon_deg, lat_deg, crs, *, step_deg: float = 1e-5):
    """Grid azimuth (deg, clockwise from grid +y, 0..360) of local north at lon/lat, any Moon CRS.

    Computed numerically with PROJ by projecting a point ``step_deg`` north (south of the north
    pole's neighbourhood: moved the other way and reversed), so it holds for any projected CRS;
    equals :func:`polar_stereographic_convergence` on polar stereographic grids (tested).
    At a pole itself local north is undefined; the value returned is that of the pixel's
    longitude as reported by PROJ (consistent with the local east/north vectors built from it).
    """
    lon = np.asarray(lon_deg, dtype="float64")
    lat = np.asarray(lat_deg, dtype="float64")
    sign = np.where(lat + step_deg > 90.0, -1.0, 1.0)
    x0, y0 = lonlat_to_xy(lon, lat, crs)
    x1, y1 = lonlat_to_xy(lon, lat + sign * step_deg, crs)
    dx, dy = (np.asarray(x1) - x0) * sign, (np.asarray(y1) - y0) * sign
    return np.mod(np.degrees(np.arctan2(dx, dy)), 360.0)


def topocentric_to_grid_azimuth(azimuth_deg, lon_deg, lat_deg, crs):
    """Topocentric azimuth (clockwise from local north) -> grid azimuth (from grid +y), deg 0..360."""
    return np.mod(np.asarray(azimuth_deg, dtype="float64") + meridian_convergence(lon_deg, lat_deg, crs), 360.0)


def grid_to_topocentric_azimuth(azimuth_deg, lon_deg, lat_deg, crs):
    """Grid azimuth (clockwise from grid +y) -> topocentric azimuth (from local north), deg 0..360."""
    return np.mod(np.asarray(azimuth_deg, dtype="float64") - meridian_convergence(lon_deg, lat_deg, crs), 360.0)


def _local_frames(x, y, elevation, crs, observer_height_m):
    """Per-pixel unit vectors (up, grid-east, grid-north) in MOON_ME and the observer's radius (m).

    x, y, elevation: arrays of the same shape. Returns three ``x.shape + (3,)`` arrays and one
    ``x.shape`` array (distance from the Moon's centre), float64.
    """
    lon, lat = xy_to_lonlat(x, y, crs)
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    g = np.radians(meridian_convergence(lon, lat, crs))
    la, lo = np.radians(lat), np.radians(lon)
    cl, sl, co, so = np.cos(la), np.sin(la), np.cos(lo), np.sin(lo)
    up = np.stack([cl * co, cl * so, sl], axis=-1)
    north = np.stack([-sl * co, -sl * so, cl], axis=-1)
    east = np.stack([-so, co, np.zeros_like(so)], axis=-1)
    cg, sg = np.cos(g)[..., None], np.sin(g)[..., None]
    # a direction with topocentric azimuth A is cos A N + sin A E; grid azimuth = A + γ.
    grid_north = cg * north - sg * east  # grid azimuth 0  -> A = -γ
    grid_east = sg * north + cg * east  # grid azimuth 90 -> A = 90° - γ
    radius = MOON_RADIUS_M + np.asarray(elevation, dtype="float64") + float(observer_height_m)
    return up, grid_east, grid_north, radius


# ----------------------------------------------------------------------------- kernel

_KERNEL = None
_KERNEL_LOCK = threading.Lock()

# Abramowitz & Stegun (1964) 4.4.47: atan(x) = x * P(x^2) on 0 <= x <= 1, |error| <= 1e-5 rad
# (0.0006°, far below a 1° horizon bin).
# fast-math without 'nnan'/'ninf': NaN (nodata) tests must survive compilation
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_ATAN_COEFFS = (0.9998660, -0.3302995, 0.1801410, -0.0851330, 0.0208351)


def _get_kernel():
    """Compile (once) the numba kernels over (pixels x epochs)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba

    c0, c1, c2, c3, c4 = _ATAN_COEFFS

    @numba.njit(cache=True, fastmath=_FASTMATH, nogil=True, inline="always", error_model="numpy")
    def grid_azimuth_pos(a, b, inv_daz):  # pragma: no cover - jitted
        """Position in azimuth bins of direction with (grid-east, grid-north) components (a, b)."""
        aa = abs(a)
        ab = abs(b)
        big = aa if aa > ab else ab
        small = ab if aa > ab else aa
        if big == 0.0:
            return 0.0
        z = small / big
        z2 = z * z
        ang = z * (c0 + z2 * (c1 + z2 * (c2 + z2 * (c3 + z2 * c4))))
        if aa > ab:
            ang = 0.5 * math.pi - ang  # angle from +b axis towards +a
        # ang in [0, pi/2] is the angle from the b (grid north) axis in the quadrant (|a|, |b|)
        if b < 0.0:
            ang = math.pi - ang
        if a < 0.0:
            ang = 2.0 * math.pi - ang
        p = ang * (180.0 / math.pi) * inv_daz
        return p

    @numba.njit(cache=True, fastmath=_FASTMATH, nogil=True, error_model="numpy", parallel=True)
    def kernel(hor, nodata, up, gx, gy, rpos, sun, sun_r, earth_dir, earth_inv_dist, step_h, out):  # pragma: no cover
        """hor (A,Y,X) deg; nodata (Y,X) bool; up/gx/gy (Y,X,3) unit vectors; rpos (Y,X) observer radius (m);
        sun (T,3) unit; sun_r (T,) deg; earth_dir (T,3) unit; earth_inv_dist (T,) 1/m."""
        n_az, ny, nx = hor.shape
        nt = sun.shape[0]
        d2r = math.pi / 180.0
        inv_daz = n_az / 360.0
        rmax = 0.0
        inv_r = np.empty(nt, dtype=np.float64)
        for t in range(nt):
            if sun_r[t] > rmax:
                rmax = sun_r[t]
            inv_r[t] = 1.0 / (sun_r[t] * d2r)
        for j in numba.prange(ny):
            sprof = np.empty(n_az + 1, dtype=np.float64)  # sin(horizon)
            iprof = np.empty(n_az + 1, dtype=np.float64)  # 1/cos(horizon)
            for i in range(nx):
                rp = rpos[j, i]
                bad = bool(nodata[j, i])
                hmin = 1e9
                hmax = -1e9
                for k in range(n_az):
                    if bad:
                        break
                    v = hor[k, j, i]
                    if v < hmin:
                        hmin = v
                    if v > hmax:
                        hmax = v
                    sprof[k] = math.sin(v * d2r)
                    iprof[k] = 1.0 / math.cos(v * d2r)
                if bad:
                    for q in range(5):
                        out[q, j, i] = np.nan
                    out[2, j, i] = 0.0
                    continue
                sprof[n_az] = sprof[0]
                iprof[n_az] = iprof[0]
                # Sun: dark for sure below sin(hmin - r), fully lit above sin(hmax + r)
                s_dark = math.sin((hmin - rmax) * d2r)
                s_lit = math.sin((hmax + rmax) * d2r)
                s_min = math.sin(hmin * d2r)
                s_max = math.sin(hmax * d2r)
                ux, uy, uz = up[j, i, 0], up[j, i, 1], up[j, i, 2]
                ex, ey, ez = gx[j, i, 0], gx[j, i, 1], gx[j, i, 2]
                nx_, ny_, nz_ = gy[j, i, 0], gy[j, i, 1], gy[j, i, 2]
                sum_frac = 0.0
                n_earth = 0
                n_both = 0
                lit_any = False
                run = 0
                best = 0
                for t in range(nt):
                    sx, sy, sz = sun[t, 0], sun[t, 1], sun[t, 2]
                    su = sx * ux + sy * uy + sz * uz  # sin(sun elevation)
                    frac = 0.0
                    if su >= s_lit:
                        frac = 1.0
                    elif su > s_dark:
                        p = grid_azimuth_pos(sx * ex + sy * ey + sz * ez, sx * nx_ + sy * ny_ + sz * nz_, inv_daz)
                        k0 = int(p)
                        if k0 >= n_az:
                            k0 = n_az - 1
                        w = p - k0
                        hs = sprof[k0] + (sprof[k0 + 1] - sprof[k0]) * w  # sin(horizon)
                        ic = iprof[k0] + (iprof[k0 + 1] - iprof[k0]) * w  # 1/cos(horizon)
                        # (e - h)/r from sines: sin e - sin h = cos h (e - h) to second order in (e - h)
                        x = (su - hs) * ic * inv_r[t]
                        if x >= 1.0:
                            frac = 1.0
                        elif x > -1.0:
                            frac = 1.0 - (math.acos(x) - x * math.sqrt(1.0 - x * x)) / math.pi
                    # Earth centre seen from the observer at radius rp along up: d = E - rp*up.
                    # sin(elev) = (eu - q)/sqrt(1 - 2 q eu + q^2), q = rp/|E| < 0.005:
                    # = (eu - q)(1 + q eu) + O(q^2) (error < 3e-5, i.e. < 0.002 deg).
                    # d has the same horizontal components as E, so the azimuth is E's.
                    ax, ay, az_ = earth_dir[t, 0], earth_dir[t, 1], earth_dir[t, 2]
                    eu = ax * ux + ay * uy + az_ * uz
                    q = rp * earth_inv_dist[t]
                    es = (eu - q) * (1.0 + q * eu)
                    vis_e = False
                    if es > s_max:
                        vis_e = True
                    elif es > s_min:
                        p = grid_azimuth_pos(ax * ex + ay * ey + az_ * ez, ax * nx_ + ay * ny_ + az_ * nz_, inv_daz)
                        k0 = int(p)
                        if k0 >= n_az:
                            k0 = n_az - 1
                        w = p - k0
                        vis_e = es > sprof[k0] + (sprof[k0 + 1] - sprof[k0]) * w
                    if frac > 0.0:
                        lit_any = True
                        sum_frac += frac
                        if run > best:
                            best = run
                        run = 0
                        if vis_e:
                            n_both += 1
                    else:
                        run += 1
                    if vis_e:
                        n_earth += 1
                if run > best:
                    best = run
                out[0, j, i] = sum_frac / nt
                out[1, j, i] = best * step_h
                out[2, j, i] = 0.0 if lit_any else 1.0
                out[3, j, i] = n_earth / nt
                out[4, j, i] = n_both / nt

    _KERNEL = (kernel, grid_azimuth_pos)
    return _KERNEL


def _check_horizon_azimuths(horizon: xr.DataArray) -> int:
    if tuple(horizon.dims[-2:]) != ("y", "x") or horizon.dims[0] != "azimuth":
        raise LunarmapError(f"horizon must have dims ('azimuth', 'y', 'x'), got {horizon.dims}.")
    n = horizon.sizes["azimuth"]
    if "azimuth" in horizon.coords:
        az = np.asarray(horizon["azimuth"].values, dtype="float64")
        expected = np.arange(n) * 360.0 / n
        if not np.allclose(az, expected, atol=1e-6):
            raise LunarmapError(
                "horizon azimuth coordinate must be the bin centres i*360/N (deg clockwise from grid +y), "
                f"got {az[:4]}...; build it with lunarmap.horizon.horizon_map."
            )
    return n


def _stats_block(hor, elev, *, x, y, crs, observer_height_m, eph, block_info=None):
    """Per-chunk worker: hor (n_az, ny, nx), elev (1, ny, nx) -> (5, ny, nx) float32."""
    loc = block_info[0]["array-location"] if block_info else [(0, hor.shape[0]), (0, hor.shape[1]), (0, hor.shape[2])]
    (y0, y1), (x0, x1) = loc[1], loc[2]
    xx, yy = np.meshgrid(x[x0:x1], y[y0:y1])
    up, ge, gn, rpos = _local_frames(xx, yy, elev[0], crs, observer_height_m)
    out = np.empty((5,) + hor.shape[1:], dtype=np.float64)
    edist = np.linalg.norm(eph.earth_position_m, axis=1)
    hor = np.ascontiguousarray(hor)
    nodata = np.isnan(hor).any(axis=0) | ~np.isfinite(rpos)
    kernel = _get_kernel()[0]
    with _KERNEL_LOCK:  # numba's default threading layer must not be entered concurrently
        kernel(
            hor,
            nodata,
            up,
            ge,
            gn,
            rpos,
            eph.sun_direction,
            eph.sun_radius_deg,
            eph.earth_position_m / edist[:, None],
            1.0 / edist,
            float(eph.step_hours),
            out,
        )
    return out.astype("float32")


def illumination_statistics(
    horizon: xr.DataArray,
    elevation: xr.DataArray,
    *,
    start=None,
    end=None,
    step_hours: float | None = None,
    observer_height_m: float = DEFAULT_OBSERVER_HEIGHT_M,
) -> xr.Dataset:
    """Sun/Earth visibility statistics per pixel over a time window (lazy, one pass per chunk).

    Parameters
    ----------
    horizon : xarray.DataArray
        dims ``("azimuth", "y", "x")``, float, deg, azimuth coordinate = bin centres ``i*360/N``
        clockwise from grid north (+y), on the grid of ``elevation``
        (:func:`lunarmap.horizon.horizon_map`, computed with the same ``observer_height_m``).
    elevation : xarray.DataArray
        DEM, dims ``("y","x")``, m above the 1737.4 km sphere, projected Moon CRS (any pole).
    start, end, step_hours
        Time window, see :func:`lunarmap.ephemeris.time_grid` (default one 18.6-yr nodal cycle,
        6 h step).
    observer_height_m : float
        Observer height above the surface (m), used for the Earth's topocentric parallax.

    Returns
    -------
    xarray.Dataset
        Variables :data:`STAT_NAMES` on the DEM grid: ``illumination_fraction`` (0..1, float32),
        ``longest_night`` (h, float32), ``psr`` (bool), ``earth_visibility_fraction`` (0..1),
        ``sun_earth_fraction`` (0..1). Pixels with NaN elevation or horizon are NaN (``psr``
        False). Lazy when the inputs are Dask-backed (one task per horizon chunk).

    Raises
    ------
    EphemerisError
        Window outside the kernels' coverage (1900-2050) or malformed.
    CRSError
        The DEM has no (Moon) CRS.
    """
    import dask.array as dsa

    from .crs import check_moon_crs

    crs = check_moon_crs(elevation.rio.crs, what="DEM")
    _check_horizon_azimuths(horizon)
    if horizon.sizes["y"] != elevation.sizes["y"] or horizon.sizes["x"] != elevation.sizes["x"]:
        raise LunarmapError(
            f"horizon grid {horizon.sizes['y']}x{horizon.sizes['x']} differs from the DEM's "
            f"{elevation.sizes['y']}x{elevation.sizes['x']}; compute the horizon on the DEM grid."
        )
    eph = _eph.ephemeris(start, end, step_hours)
    x = np.asarray(elevation["x"].values, dtype="float64")
    y = np.asarray(elevation["y"].values, dtype="float64")
    hdata = horizon.data
    if not isinstance(hdata, dsa.Array):
        chunks = elevation.chunks if elevation.chunks else ((elevation.sizes["y"],), (elevation.sizes["x"],))
        hdata = dsa.from_array(np.asarray(hdata), chunks=((horizon.sizes["azimuth"],),) + tuple(chunks))
    hdata = hdata.rechunk({0: -1})
    edata = elevation.data
    if not isinstance(edata, dsa.Array):
        edata = dsa.from_array(np.asarray(edata))
    edata = edata.rechunk(hdata.chunks[1:])[None]
    stacked = dsa.map_blocks(
        _stats_block,
        hdata,
        edata,
        x=x,
        y=y,
        crs=crs,
        observer_height_m=float(observer_height_m),
        eph=eph,
        dtype="float32",
        chunks=((5,),) + hdata.chunks[1:],
    )
    coords = {"y": elevation["y"], "x": elevation["x"]}
    out = {}
    for q, name in enumerate(STAT_NAMES):
        arr = stacked[q]
        if name == "psr":
            arr = arr > 0.5
        out[name] = xr.DataArray(arr, dims=("y", "x"), coords=coords, name=name)
    ds = xr.Dataset(out)
    ds.attrs.update(
        {
            "start": eph.times[0].isoformat(),
            "end": (eph.times[-1] + pd.Timedelta(hours=eph.step_hours)).isoformat(),
            "step_hours": eph.step_hours,
            "n_epochs": len(eph),
            "observer_height_m": float(observer_height_m),
            "ephemeris": "DE421 + moon_pa_de421_1900-2050 (MOON_ME), spiceypy",
        }
    )
    return ds.rio.write_crs(crs)


# ----------------------------------------------------------------------------- layers


def _window(ctx) -> dict:
    o = ctx.options
    return {"start": o.get("start"), "end": o.get("end"), "step_hours": o.get("step_hours")}


def _observer_height(ctx) -> float:
    return float(ctx.options.get("observer_height_m", DEFAULT_OBSERVER_HEIGHT_M))


def _product(ctx, name: str):
    """A precomputed product for layer ``name`` from ``ctx.options["illumination_products"]``.

    The option maps layer names (``illumination_fraction``, ``psr``, ``earth_visibility_fraction``)
    to a DataArray already on the DEM grid or a path read with
    :func:`lunarmap.io.open_illumination_product` (kind inferred from the layer name) and aligned
    onto the DEM grid. Returns None when no product was given for ``name``.
    """
    products = ctx.options.get("illumination_products") or {}
    if name not in products or products[name] is None:
        return None
    from .io import PRODUCT_KIND_FOR_LAYER, open_illumination_product

    src = products[name]
    if isinstance(src, xr.DataArray):
        da = src
        if da.sizes.get("y") != ctx.elevation.sizes["y"] or da.sizes.get("x") != ctx.elevation.sizes["x"]:
            from .io import align_to_dem

            da = align_to_dem(da, ctx.elevation, kind=PRODUCT_KIND_FOR_LAYER[name])
    else:
        da = open_illumination_product(src, kind=PRODUCT_KIND_FOR_LAYER[name], like=ctx.elevation)
    if name == "psr" and da.dtype != bool:
        da = da > 0.5
    return da.assign_coords(x=ctx.elevation["x"], y=ctx.elevation["y"])


def _statistics(ctx) -> xr.Dataset:
    """The five time statistics, one lazy kernel pass shared by all illumination layers."""
    cached = getattr(ctx, "_lunarmap_illumination", None)
    if cached is None:
        cached = illumination_statistics(
            ctx.get("horizon"), ctx.elevation, observer_height_m=_observer_height(ctx), **_window(ctx)
        )
        ctx._lunarmap_illumination = cached
    return cached


def _stat_layer(ctx, name: str) -> xr.DataArray:
    prod = _product(ctx, name)
    if prod is not None:
        return prod
    da = _statistics(ctx)[name]
    da.attrs.update({k: v for k, v in _statistics(ctx).attrs.items()})
    return da


@register_layer(
    "horizon",
    units="deg",
    long_name="horizon elevation angle per grid azimuth (clockwise from grid north)",
    stats=(),
    default=False,
)
def _horizon_layer(ctx):
    from .horizon import horizon_map

    o = ctx.options
    kw = {}
    if o.get("horizon_max_distance_m") is not None:
        kw["max_distance_m"] = float(o["horizon_max_distance_m"])
    if o.get("horizon_method") is not None:
        kw["method"] = o["horizon_method"]
    return horizon_map(
        ctx.elevation,
        n_azimuths=int(o.get("n_azimuths", DEFAULT_N_AZIMUTHS)),
        far_field=o.get("far_field"),
        observer_height_m=_observer_height(ctx),
        **kw,
    )


@register_layer(
    "illumination_fraction",
    units="1",
    long_name="time-mean visible fraction of the solar disk",
    stats=("mean", "min", "p05"),
    higher_is_better=True,
    merit=(0.0, 1.0),  # rule label: never lit (0) .. always lit (1); docs/ranking.md
)
def _illumination_fraction_layer(ctx):
    return _stat_layer(ctx, "illumination_fraction")


@register_layer(
    "longest_night",
    units="h",
    long_name="longest continuous period with the Sun fully below the horizon",
    stats=("mean", "max"),
    higher_is_better=False,
    # rule label: 0 h best; one synodic month (708.7 h: a site with a full lunar night) worst
    merit=(708.7, 0.0),
)
def _longest_night_layer(ctx):
    return _stat_layer(ctx, "longest_night")


@register_layer(
    "psr",
    units="1",
    long_name="permanently shadowed: no part of the solar disk ever above the horizon",
    stats=("mean",),
    higher_is_better=None,
)
def _psr_layer(ctx):
    return _stat_layer(ctx, "psr")


@register_layer(
    "earth_visibility_fraction",
    units="1",
    long_name="time fraction with the Earth's centre above the horizon",
    stats=("mean", "min", "p05"),
    higher_is_better=True,
    merit=(0.0, 1.0),  # rule label: Earth never (0) .. always (1) in view; docs/ranking.md
)
def _earth_visibility_layer(ctx):
    return _stat_layer(ctx, "earth_visibility_fraction")


@register_layer(
    "sun_earth_fraction",
    units="1",
    long_name="time fraction with the Sun (any part) and the Earth's centre both visible",
    stats=("mean", "min"),
    higher_is_better=True,
)
def _sun_earth_layer(ctx):
    return _statistics(ctx)["sun_earth_fraction"]  # no NASA product holds this joint statistic


def distance_to_psr(psr: xr.DataArray) -> xr.DataArray:
    """Distance (m) from each pixel centre to the nearest PSR pixel centre.

    Parameters
    ----------
    psr : xarray.DataArray
        bool, dims ``("y","x")``, square pixels (projected Moon CRS, m).

    Returns
    -------
    xarray.DataArray
        float32 m, 0 inside PSRs; NaN everywhere when the raster holds no PSR pixel. Grid
        (map-plane) distance from ``scipy.ndimage.distance_transform_edt``: polar stereographic
        scale error < 0.2 % poleward of 85° (k = 2/(1+sin|φ|)). PSRs outside the raster are not
        seen, so values near the edges are upper bounds.
    """
    import dask
    import dask.array as dsa
    from scipy import ndimage

    gsd = float(abs(psr["x"].values[1] - psr["x"].values[0])) if psr.sizes["x"] > 1 else float("nan")

    def _edt(mask):
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return np.full(mask.shape, np.nan, dtype="float32")
        return (ndimage.distance_transform_edt(~mask) * gsd).astype("float32")

    data = psr.data
    if isinstance(data, dsa.Array):
        d = dsa.from_delayed(dask.delayed(_edt)(data), shape=psr.shape, dtype="float32").rechunk(data.chunks)
    else:
        d = _edt(data)
    return xr.DataArray(d, dims=psr.dims, coords=psr.coords, name="distance_to_psr")


@register_layer(
    "distance_to_psr",
    units="m",
    long_name="distance to the nearest permanently shadowed pixel",
    requires=("psr",),
    stats=("mean", "min"),
    higher_is_better=False,
)
def _distance_to_psr_layer(ctx):
    return distance_to_psr(ctx.get("psr"))


# ----------------------------------------------------------------------------- point timeline


def _point_pixel(elevation: xr.DataArray, lat: float, lon: float):
    """Row/col of the pixel containing (lat, lon); CoordinateError when off the raster or nodata."""
    from .crs import check_moon_crs

    crs = check_moon_crs(elevation.rio.crs, what="DEM")
    if not (np.isfinite(lat) and np.isfinite(lon)) or abs(lat) > 90:
        raise CoordinateError(f"Latitude must be within -90..90 deg and both finite, got lat={lat}, lon={lon}.")
    x, y = lonlat_to_xy(lon, lat, crs)
    xs, ys = elevation["x"].values, elevation["y"].values
    dx = float(xs[1] - xs[0]) if len(xs) > 1 else float(elevation.attrs.get("gsd", 1.0))
    dy = float(ys[1] - ys[0]) if len(ys) > 1 else -abs(dx)
    gx, gy = abs(dx), abs(dy)
    col = int(np.floor((float(x) - xs[0]) / dx + 0.5))
    row = int(np.floor((float(y) - ys[0]) / dy + 0.5))
    if not (0 <= row < len(ys) and 0 <= col < len(xs)):
        x0, x1 = sorted((xs[0], xs[-1]))
        y0, y1 = sorted((ys[0], ys[-1]))
        raise CoordinateError(
            f"({lat:.4f}, {lon:.4f}) is at x={float(x):.0f} m, y={float(y):.0f} m, outside the DEM "
            f"(x {x0 - gx / 2:.0f}..{x1 + gx / 2:.0f}, y {y0 - gy / 2:.0f}..{y1 + gy / 2:.0f} m). Pick a point inside "
            f"it or pass a DEM that covers it (--dem)."
        )
    z = float(elevation.isel(y=row, x=col).values)
    if not np.isfinite(z):
        raise CoordinateError(f"({lat:.4f}, {lon:.4f}) falls on a nodata pixel of the DEM (row {row}, col {col}).")
    return row, col, z, crs


def _point_horizon(elevation, row, col, *, far_field, observer_height_m, n_azimuths, max_distance_m=None):
    """Horizon profile (n_azimuths,) deg at one DEM pixel (the whole DEM and far field as terrain).

    Uses the public lazy :func:`lunarmap.horizon.horizon_map` on a copy of the DEM chunked so
    that the pixel is a chunk of its own; Dask then ray-traces that single chunk only.
    """
    from .horizon import horizon_map

    ny, nx = elevation.shape

    def _split(i, n):
        return tuple(c for c in (i, 1, n - i - 1) if c > 0)

    z = elevation.chunk({"y": _split(row, ny), "x": _split(col, nx)})
    kw = {} if max_distance_m is None else {"max_distance_m": max_distance_m}
    h = horizon_map(z, n_azimuths=n_azimuths, far_field=far_field, observer_height_m=observer_height_m, **kw)
    return np.asarray(h[:, row, col].compute(scheduler="synchronous"), dtype="float64")


def _interp_profile(prof, az_deg):
    n = len(prof)
    p = np.mod(az_deg, 360.0) * n / 360.0
    k0 = np.floor(p).astype(int) % n
    w = p - np.floor(p)
    return prof[k0] * (1 - w) + prof[(k0 + 1) % n] * w


def sun_timeline(
    elevation: xr.DataArray,
    lat: float,
    lon: float,
    *,
    start=None,
    end=None,
    step_hours: float | None = None,
    far_field: xr.DataArray | None = None,
    observer_height_m: float = DEFAULT_OBSERVER_HEIGHT_M,
    n_azimuths: int = DEFAULT_N_AZIMUTHS,
) -> pd.DataFrame:
    """Sun and Earth elevation vs the local horizon at one coordinate, per epoch.

    Parameters
    ----------
    elevation : xarray.DataArray
        DEM (dims ``("y","x")``, m, projected Moon CRS, either pole).
    lat, lon : float
        Selenographic planetocentric degrees (east longitude, -180..180 or 0..360). The pixel
        containing the point is used (its centre is the observer).
    start, end, step_hours
        Time window (:func:`lunarmap.ephemeris.time_grid`; default one 18.6-yr nodal cycle, 6 h).
    far_field : xarray.DataArray, optional
        Coarser regional DEM in the same CRS for distant horizons.
    observer_height_m : float
        Observer height above the ground (m), default 2 m (Gläser et al. 2014).
    n_azimuths : int
        Horizon azimuth bins (default 360).

    Returns
    -------
    pandas.DataFrame
        Index ``time`` (UTC). Columns: ``sun_elevation_deg``, ``sun_azimuth_deg`` (grid azimuth,
        clockwise from grid north), ``sun_horizon_deg`` (horizon in the Sun's azimuth),
        ``sun_visible_fraction`` (0..1 of the disk), ``earth_elevation_deg`` (topocentric),
        ``earth_azimuth_deg``, ``earth_horizon_deg``, ``earth_visible`` (bool, centre above the
        horizon). ``df.attrs["summary"]`` holds :func:`timeline_summary` plus the pixel's
        lat/lon/x/y/elevation, and ``df.attrs["horizon_deg"]`` the horizon profile.

    Raises
    ------
    CoordinateError
        The point is off the raster or on nodata.
    EphemerisError
        Window outside 1900-2050.
    """
    row, col, z, crs = _point_pixel(elevation, float(lat), float(lon))
    eph = _eph.ephemeris(start, end, step_hours)
    prof = _point_horizon(elevation, row, col, far_field=far_field, observer_height_m=observer_height_m,
                          n_azimuths=n_azimuths)
    xc = float(elevation["x"].values[col])
    yc = float(elevation["y"].values[row])
    up, ge, gn, rp = _local_frames(np.array([xc]), np.array([yc]), np.array([z]), crs, observer_height_m)
    up, ge, gn, rp = up[0], ge[0], gn[0], float(rp[0])
    s = eph.sun_direction
    sun_el = np.degrees(np.arcsin(np.clip(s @ up, -1, 1)))
    sun_az = np.mod(np.degrees(np.arctan2(s @ ge, s @ gn)), 360.0)
    sun_h = _interp_profile(prof, sun_az)
    frac = solar_disk_visible_fraction(sun_el, sun_h, eph.sun_radius_deg)
    d = eph.earth_position_m - rp * up[None, :]
    dn = np.linalg.norm(d, axis=1)
    earth_el = np.degrees(np.arcsin(np.clip((d @ up) / dn, -1, 1)))
    earth_az = np.mod(np.degrees(np.arctan2(d @ ge, d @ gn)), 360.0)
    earth_h = _interp_profile(prof, earth_az)
    df = pd.DataFrame(
        {
            "sun_elevation_deg": sun_el,
            "sun_azimuth_deg": sun_az,
            "sun_horizon_deg": sun_h,
            "sun_visible_fraction": frac,
            "earth_elevation_deg": earth_el,
            "earth_azimuth_deg": earth_az,
            "earth_horizon_deg": earth_h,
            "earth_visible": earth_el > earth_h,
        },
        index=pd.Index(eph.times, name="time"),
    )
    plon, plat = xy_to_lonlat(xc, yc, crs)
    summary = timeline_summary(df, step_hours=eph.step_hours)
    summary.update(
        {
            "lat": float(plat),
            "lon": float(plon),
            "x_m": xc,
            "y_m": yc,
            "elevation_m": z,
            "observer_height_m": float(observer_height_m),
            "start": eph.times[0].isoformat(),
            "end": (eph.times[-1] + pd.Timedelta(hours=eph.step_hours)).isoformat(),
            "step_hours": eph.step_hours,
        }
    )
    df.attrs["summary"] = summary
    df.attrs["horizon_deg"] = prof.tolist()
    return df


def timeline_summary(df: pd.DataFrame, *, step_hours: float) -> dict:
    """Time statistics of a :func:`sun_timeline` frame (same definitions as the layers).

    Returns ``illumination_fraction``, ``longest_night_h`` (resolution ``step_hours``),
    ``psr`` (never any part of the disk), ``earth_visibility_fraction``, ``sun_earth_fraction``.
    """
    lit = df["sun_visible_fraction"].to_numpy() > 0
    dark = ~lit
    best = run = 0
    for v in dark:
        run = run + 1 if v else 0
        best = max(best, run)
    ev = df["earth_visible"].to_numpy()
    return {
        "illumination_fraction": float(df["sun_visible_fraction"].mean()),
        "longest_night_h": float(best * step_hours),
        "psr": bool(not lit.any()),
        "earth_visibility_fraction": float(ev.mean()),
        "sun_earth_fraction": float((ev & lit).mean()),
    }


def plot_sun_timeline(df: pd.DataFrame, path) -> Path:
    """Plot a :func:`sun_timeline` frame to a PNG (matplotlib Agg), written atomically.

    Top: Sun elevation and the horizon in its azimuth, lit epochs shaded. Bottom: Earth
    (topocentric) elevation and its horizon, Earth-visible epochs shaded.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .io import atomic_path

    t = df.index
    fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax = axes[0]
    ax.plot(t, df["sun_elevation_deg"], lw=0.6, color="#d98c00", label="Sun elevation")
    ax.plot(t, df["sun_horizon_deg"], lw=0.6, color="k", label="horizon in the Sun's azimuth")
    lit = df["sun_visible_fraction"].to_numpy() > 0
    lo, hi = ax.get_ylim()
    ax.fill_between(t, lo, hi, where=lit, color="#ffd54f", alpha=0.35, lw=0, step="mid", label="Sun (partly) visible")
    ax.set_ylim(lo, hi)
    ax.set_ylabel("deg")
    s = df.attrs.get("summary", {})
    title = "Sun"
    if s:
        title = (
            f"{s.get('lat', float('nan')):.3f}°, {s.get('lon', float('nan')):.3f}°E, h_obs {s.get('observer_height_m', 0):g} m — "
            f"Sun {100 * s['illumination_fraction']:.1f} %, longest night {s['longest_night_h']:.0f} h, "
            f"Earth {100 * s['earth_visibility_fraction']:.1f} %"
        )
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    ax.plot(t, df["earth_elevation_deg"], lw=0.6, color="#1565c0", label="Earth elevation (topocentric)")
    ax.plot(t, df["earth_horizon_deg"], lw=0.6, color="k", label="horizon in the Earth's azimuth")
    lo, hi = ax.get_ylim()
    ax.fill_between(t, lo, hi, where=df["earth_visible"].to_numpy(), color="#90caf9", alpha=0.35, lw=0, step="mid",
                    label="Earth visible")
    ax.set_ylim(lo, hi)
    ax.set_ylabel("deg")
    ax.set_xlabel("UTC")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def run_sun_timeline(
    lat: float,
    lon: float,
    *,
    dem=None,
    far_field=None,
    start=None,
    end=None,
    step_hours: float | None = None,
    observer_height_m: float = DEFAULT_OBSERVER_HEIGHT_M,
    out=None,
) -> tuple[pd.DataFrame, dict]:
    """CLI back end of ``lunarmap sun``: timeline at a coordinate, written as CSV + PNG + JSON.

    ``dem`` defaults to the embedded 480 m LOLA south-pole DEM
    (``tiles/lola_ldem80s_480m_south_pole_250km.tif``) with the 1600 m polar DEM as far field
    (used when ``far_field`` is None and ``dem`` is None). Files written into ``out`` (a folder):
    ``sun_timeline.csv``, ``sun_timeline.png``, ``sun_summary.json``. Returns the frame and a dict
    of written paths.
    """
    import json

    from .io import atomic_path, open_dem

    if dem is None:
        from .sites import tiles_dir

        tiles = tiles_dir()
        dem = tiles / "lola_ldem80s_480m_south_pole_250km.tif"
        if far_field is None:
            far_field = tiles / "lola_ldem256_south_polarstereo_1600m.tif"
    elev = open_dem(dem, chunks=None)
    ff = open_dem(far_field, chunks=None) if far_field is not None and not isinstance(far_field, xr.DataArray) else far_field
    df = sun_timeline(elev, lat, lon, start=start, end=end, step_hours=step_hours, far_field=ff,
                      observer_height_m=observer_height_m)
    files = {}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "sun_timeline.csv") as tmp:
            df.to_csv(tmp, float_format="%.5f")
        files["csv"] = out / "sun_timeline.csv"
        files["png"] = plot_sun_timeline(df, out / "sun_timeline.png")
        with atomic_path(out / "sun_summary.json") as tmp:
            Path(tmp).write_text(json.dumps({**df.attrs["summary"], "dem": str(dem), "far_field": str(far_field)}, indent=2))
        files["json"] = out / "sun_summary.json"
    return df, files
