"""Real DEM chips labelled with a crater catalogue's rims (training data for the crater network).

DeepMoon (Silburt et al. 2019) trained its rim U-Net on the real LOLA DEM with rim rings drawn
from the Head et al. (2010) and Povilaitis et al. (2018) catalogues; its 92 % recall comes from
that. This module builds the same kind of chips from a **global** DEM in geographic coordinates
(lon/lat, e.g. LOLA ``LDEM_256`` resampled to 0.25 deg, ``tiles/lola_ldem256_global_eqc_0p25deg.tif``)
and a global catalogue (``tiles/head2010_craters_ge20km_global.csv``), so that real crater
morphology -- degraded, overlapping, irregular rims -- is in the training set, while a latitude band
can be excluded (``exclude_lat_below``) to keep an evaluation region (lunarmap evaluates on the
south polar cap, poleward of 60 deg S) out of training.

Each chip is resampled (bilinear) from the geographic DEM onto a square grid in an **azimuthal
equidistant** projection centred on the chip (``+proj=aeqd +lat_0 +lon_0 +R=1737400``, via pyproj),
rotated by a random angle, so craters are circles to within the projection's tangential scale
error ``(rho/R) / sin(rho/R) - 1`` (1.4 % at 500 km from the centre). Catalogue craters are
projected with the same transform; the label is the rim ring ``|dist - R| <= rim_halfwidth_px`` of
every catalogued crater whose diameter in pixels is in ``[label_min_px, label_max_px]``, as in
:mod:`lunarmap.synth`. Labels are complete only where the catalogue is complete, so the chip GSD
must satisfy ``label_min_px * gsd >= complete_diameter_m`` (checked; Head et al. 2010 is complete for
D >= 20 km).

Reproducible: chip ``i`` depends only on ``(seed, i)`` (NumPy ``SeedSequence``).

References
----------
- Silburt, A. et al. (2019). Lunar crater identification via deep learning. Icarus 317, 27-38.
- Head, J. W. et al. (2010). Global distribution of large lunar craters: implications for resurfacing
  and impactor populations. Science 329, 1504-1507.
- Snyder, J. P. (1987). Map Projections: A Working Manual. USGS PP 1395 (azimuthal equidistant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyproj

from .crs import MOON_RADIUS_M, wrap_longitude

__all__ = ["CatalogChip", "GlobalDEM", "load_global_dem", "load_catalogue", "catalog_chip", "catalog_dataset"]


@dataclass(frozen=True)
class GlobalDEM:
    """A global DEM on a regular lon/lat grid.

    ``elevation`` (n_lat, n_lon) float32 metres, row 0 = northernmost; ``lon0``/``lat0`` are the
    longitude/latitude (deg) of the centre of pixel (0, 0); ``dlon`` > 0 and ``dlat`` < 0 the pixel
    steps (deg). Longitudes must cover 360 deg (the grid wraps).
    """

    elevation: np.ndarray
    lon0: float
    lat0: float
    dlon: float
    dlat: float

    @property
    def gsd_equator_m(self) -> float:
        """North-south pixel size (m) on the Moon sphere."""
        return abs(self.dlat) * np.pi / 180.0 * MOON_RADIUS_M

    def sample(self, lon, lat) -> np.ndarray:
        """Bilinear heights (m, float32) at lon/lat (deg); longitudes wrap, latitudes clamp at the poles."""
        from scipy.ndimage import map_coordinates

        z = self.elevation
        col = ((np.asarray(lon, dtype=np.float64) - self.lon0) / self.dlon) % z.shape[1]
        row = (np.asarray(lat, dtype=np.float64) - self.lat0) / self.dlat
        row = np.clip(row, 0.0, z.shape[0] - 1.0)  # rows clamp, so only the columns ever wrap
        return map_coordinates(z, [row.ravel(), col.ravel()], order=1, mode="grid-wrap").reshape(np.shape(row)).astype(np.float32)


def load_global_dem(path: str | Path) -> GlobalDEM:
    """Read a global geographic (lon/lat) Moon DEM GeoTIFF into a :class:`GlobalDEM`.

    Raises
    ------
    ValueError
        If the raster is not geographic, does not span 360 deg of longitude, or holds nodata
        (this loader is for gap-free global products such as LOLA LDEM).
    """
    import rasterio

    with rasterio.open(path) as src:
        if src.crs is None or not src.crs.is_geographic:
            raise ValueError(f"{path}: expected a geographic (lon/lat) global DEM, got CRS {src.crs}")
        t = src.transform
        z = src.read(1).astype(np.float32)
        nodata = src.nodata
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise ValueError(f"{path}: expected a north-up, unrotated lon/lat grid, got transform {tuple(t)[:6]}")
    if abs(t.a * z.shape[1] - 360.0) > 1e-6:
        raise ValueError(f"{path}: the grid spans {t.a * z.shape[1]} deg of longitude, expected 360")
    if (nodata is not None and np.any(z == nodata)) or not np.isfinite(z).all():
        raise ValueError(f"{path}: the DEM has nodata pixels; a gap-free global DEM is required")
    return GlobalDEM(z, lon0=t.c + t.a / 2, lat0=t.f + t.e / 2, dlon=t.a, dlat=t.e)


def load_catalogue(path: str | Path) -> pd.DataFrame:
    """Crater catalogue CSV -> DataFrame with ``lon`` (deg, -180..180), ``lat`` (deg), ``diameter_m``.

    Accepts a ``diameter_m``, ``diam_m`` or ``diam_km`` column (Head et al. 2010 and HKPolyU files).
    """
    df = pd.read_csv(path)
    if "diameter_m" in df:
        d = df["diameter_m"].astype(float)
    elif "diam_m" in df:
        d = df["diam_m"].astype(float)
    elif "diam_km" in df:
        d = df["diam_km"].astype(float) * 1000.0
    else:
        raise ValueError(f"{path}: no diameter column (diameter_m, diam_m or diam_km)")
    for c in ("lon", "lat"):
        if c not in df:
            raise ValueError(f"{path}: no '{c}' column")
    return pd.DataFrame({"lon": wrap_longitude(df["lon"].to_numpy(float)), "lat": df["lat"].astype(float),
                         "diameter_m": d})


@dataclass(frozen=True)
class CatalogChip:
    """One real chip: ``elevation`` (size, size) float32 m; ``rim_mask`` (size, size) uint8;
    ``craters`` (catalogue craters touching the chip: ``x_px, y_px, diameter_px, diameter_m, lon, lat,
    labelled``); ``gsd`` (m/px); centre ``lon``/``lat`` (deg); ``rotation_deg``; ``min_lat`` of its pixels."""

    elevation: np.ndarray
    rim_mask: np.ndarray
    craters: pd.DataFrame
    gsd: float
    lon: float
    lat: float
    rotation_deg: float
    min_lat: float


def _aeqd(lon0: float, lat0: float) -> pyproj.Transformer:
    aeqd = pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +R={MOON_RADIUS_M} +units=m +no_defs")
    geo = pyproj.CRS.from_proj4(f"+proj=longlat +R={MOON_RADIUS_M} +no_defs")
    return pyproj.Transformer.from_crs(aeqd, geo, always_xy=True)


def catalog_chip(dem: GlobalDEM, catalogue: pd.DataFrame, *, lon: float, lat: float, gsd: float, size: int = 128,
                 rotation_deg: float = 0.0, label_min_px: float = 5.0, label_max_px: float = 128.0,
                 rim_halfwidth_px: float = 1.0, complete_diameter_m: float = 0.0) -> CatalogChip:
    """Resample one chip centred at (``lon``, ``lat``) and draw the catalogue's rim rings on it.

    Parameters
    ----------
    dem : GlobalDEM
        Source heights (m).
    catalogue : DataFrame
        ``lon``, ``lat`` (deg), ``diameter_m`` (rim-to-rim, m), e.g. from :func:`load_catalogue`.
    lon, lat : float
        Chip centre (deg).
    gsd : float
        Chip pixel size (m). Should not be much finer than the DEM's (upsampling adds no detail).
    size : int
        Chip side (px).
    rotation_deg : float
        Angle (deg, counter-clockwise) between the chip's +x axis and the local east direction.
    label_min_px, label_max_px : float
        Craters are labelled when ``label_min_px <= diameter_px <= label_max_px`` (the crater network
        is trained for 5-110 px; larger craters are found on a coarser pyramid level).
    rim_halfwidth_px : float
        Half width of the rim ring (px); 1 gives ~2 px rings as in :mod:`lunarmap.synth`.
    complete_diameter_m : float
        Diameter (m) above which the catalogue is complete. Raises ``ValueError`` when
        ``label_min_px * gsd`` is below it (unlabelled craters would be taught as background).

    Returns
    -------
    CatalogChip
    """
    if not (np.isfinite(gsd) and gsd > 0):
        raise ValueError(f"gsd must be a positive number of metres, got {gsd!r}")
    if label_min_px * gsd < complete_diameter_m:
        raise ValueError(f"labels would be incomplete: the catalogue is complete for D >= {complete_diameter_m:.0f} m, "
                         f"but {label_min_px:g} px at gsd {gsd:.0f} m is {label_min_px * gsd:.0f} m; use gsd >= "
                         f"{complete_diameter_m / label_min_px:.0f} m")
    t = _aeqd(lon, lat)
    c = (size - 1) / 2.0
    jj, ii = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    u, v = (jj - c) * gsd, (c - ii) * gsd  # chip axes: u to the right, v up
    th = np.radians(rotation_deg)
    x = u * np.cos(th) - v * np.sin(th)
    y = u * np.sin(th) + v * np.cos(th)
    plon, plat = t.transform(x, y)
    z = dem.sample(plon, plat)

    # catalogue craters near the chip (cheap great-circle prefilter, then exact projection)
    half_diag = np.sqrt(2.0) * c * gsd
    cl, cb = np.radians(catalogue["lon"].to_numpy(float)), np.radians(catalogue["lat"].to_numpy(float))
    l0, b0 = np.radians(lon), np.radians(lat)
    cosd = np.sin(b0) * np.sin(cb) + np.cos(b0) * np.cos(cb) * np.cos(cl - l0)
    dist = MOON_RADIUS_M * np.arccos(np.clip(cosd, -1.0, 1.0))
    r_m = catalogue["diameter_m"].to_numpy(float) / 2.0
    near = np.nonzero(dist <= half_diag + r_m + 2 * gsd)[0]
    cat = catalogue.iloc[near]
    cx, cy = t.transform(cat["lon"].to_numpy(float), cat["lat"].to_numpy(float), direction="INVERSE")
    cu = cx * np.cos(th) + cy * np.sin(th)
    cv = -cx * np.sin(th) + cy * np.cos(th)
    x_px, y_px = cu / gsd + c, c - cv / gsd
    d_px = cat["diameter_m"].to_numpy(float) / gsd
    mask = np.zeros((size, size), dtype=bool)
    labelled = np.zeros(len(cat), dtype=bool)
    for k in range(len(cat)):
        if not label_min_px <= d_px[k] <= label_max_px:
            continue
        r = d_px[k] / 2.0
        r0, r1 = int(max(np.floor(y_px[k] - r - 2), 0)), int(min(np.ceil(y_px[k] + r + 3), size))
        c0, c1 = int(max(np.floor(x_px[k] - r - 2), 0)), int(min(np.ceil(x_px[k] + r + 3), size))
        if r0 >= r1 or c0 >= c1:
            continue
        ring = np.abs(np.hypot(jj[r0:r1, c0:c1] - x_px[k], ii[r0:r1, c0:c1] - y_px[k]) - r) <= rim_halfwidth_px
        if ring.any():
            mask[r0:r1, c0:c1] |= ring
            labelled[k] = True
    table = pd.DataFrame({"x_px": x_px, "y_px": y_px, "diameter_px": d_px,
                          "diameter_m": cat["diameter_m"].to_numpy(float), "lon": cat["lon"].to_numpy(float),
                          "lat": cat["lat"].to_numpy(float), "labelled": labelled})
    return CatalogChip(elevation=z, rim_mask=mask.astype(np.uint8), craters=table, gsd=float(gsd), lon=float(lon),
                       lat=float(lat), rotation_deg=float(rotation_deg), min_lat=float(plat.min()))


def catalog_dataset(n: int, dem: GlobalDEM, catalogue: pd.DataFrame, *, size: int = 128,
                    gsd_range: tuple[float, float] = (5000.0, 15000.0), seed: int = 0, start: int = 0,
                    exclude_lat_below: float | None = -58.0, exclude_lat_above: float | None = None,
                    max_tries: int = 1000, **chip_kwargs) -> Iterator[CatalogChip]:
    """Yield ``n`` real chips; chip ``i`` depends only on ``(seed, start + i)``.

    Centres are uniform on the sphere, rotations uniform in 0-360 deg, GSD log-uniform in
    ``gsd_range`` (m). A chip is redrawn until none of its pixels lies south of
    ``exclude_lat_below`` (or north of ``exclude_lat_above``), so an evaluation region stays unseen.
    ``chip_kwargs`` go to :func:`catalog_chip`. Raises ``RuntimeError`` if no chip fits after
    ``max_tries`` draws.
    """
    lo, hi = float(gsd_range[0]), float(gsd_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"gsd_range must be 0 < low <= high, got {gsd_range!r}")
    for i in range(start, start + n):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(i), 13]))
        for _ in range(max_tries):
            lat = float(np.degrees(np.arcsin(rng.uniform(-1.0, 1.0))))
            lon = float(rng.uniform(-180.0, 180.0))
            rot = float(rng.uniform(0.0, 360.0))
            gsd = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            # the chip's extreme latitudes are within its half diagonal of the centre
            reach = np.degrees(np.sqrt(2.0) * size / 2 * gsd / MOON_RADIUS_M)
            if exclude_lat_below is not None and lat - reach < exclude_lat_below:
                continue
            if exclude_lat_above is not None and lat + reach > exclude_lat_above:
                continue
            break
        else:
            raise RuntimeError(f"no chip centre outside the excluded latitudes after {max_tries} draws")
        yield catalog_chip(dem, catalogue, lon=lon, lat=lat, gsd=gsd, size=size, rotation_deg=rot, **chip_kwargs)
