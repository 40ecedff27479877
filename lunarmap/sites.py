"""Candidate sites: Artemis III regions, user GeoJSON/CSV, landing pads and pad grids.

A *site* is a footprint on the DEM grid: a landing pad (a circle, default radius 100 m as in
NASA's Artemis III site definition) or a region polygon. Every site keeps its ``name`` (and
``site_id``) from the input through every output. Sites that cannot be evaluated (outside the
DEM, on nodata) are kept with a ``status`` that says why, never dropped.

Footprint tables are ``geopandas.GeoDataFrame`` in the DEM's projected Moon CRS with columns
``site_id, name, kind ('pad'|'region'), region, x, y (m), lat, lon (deg, lon -180..180),
status, geometry`` plus any extra input columns (e.g. ``label``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)

from .crs import MOON_GEOGRAPHIC, check_moon_crs, lonlat_to_xy, wrap_longitude, xy_to_lonlat
from .errors import InputFileError, SitesError

#: Landing pad radius (m): NASA Artemis III candidate sites are ~100 m radius areas
#: (NASA, "NASA Identifies Candidate Regions for Landing Next Americans on Moon", 2022-08-19).
DEFAULT_PAD_RADIUS_M = 100.0

STATUS_OK = "ok"
STATUS_OUTSIDE = "outside DEM"
STATUS_PARTIAL = "partly outside DEM"
STATUS_NODATA = "on nodata"


def tiles_dir() -> Path:
    """Folder of the embedded default data (``tiles/`` of the lunarmap checkout).

    ``$LUNARMAP_TILES`` overrides it. Raises :class:`InputFileError` if it cannot be found.
    """
    env = os.environ.get("LUNARMAP_TILES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "tiles")
    for c in candidates:
        if (c / "artemis3_regions.geojson").exists():
            return c
    raise InputFileError(
        "Cannot find lunarmap's embedded data folder tiles/. Install lunarmap from its git checkout "
        "(pip install -e .) or set LUNARMAP_TILES=/path/to/lunarmap/tiles."
    )


def default_dem_path() -> Path:
    """The embedded default DEM: LOLA Shackleton / connecting ridge, 200 m, 51 km (tiles/README.md)."""
    return tiles_dir() / "shackleton_ridge_lola10m_200m_51km.tif"


def artemis_regions():
    """NASA's Artemis III candidate regions as a GeoDataFrame in ``IAU_2015:30100`` (lon/lat).

    The 9 regions of October 2024 are the USGS polygons (McClernan 2024, doi:10.5066/P1MEQ6UK);
    the 2022-only regions are approximate 15 x 15 km squares centred on their published sites
    (``geometry_source`` says which; see tiles/README.md).
    """
    import geopandas as gpd

    gdf = gpd.read_file(tiles_dir() / "artemis3_regions.geojson")
    gdf = gdf.set_crs(MOON_GEOGRAPHIC, allow_override=True)
    gdf["site_id"] = gdf["region_code"].astype(str)
    return gdf


def read_sites(path: str | os.PathLike):
    """Read user sites: GeoJSON/GeoPackage (points or polygons) or CSV of points.

    CSV needs ``lat`` and ``lon`` columns (aliases ``latitude``/``longitude``; planetocentric
    degrees, longitude -180..180 or 0..360 east) and may carry ``name``, ``site_id``,
    ``radius_m`` (pad radius) and ``label`` (a user suitability label for the ranking).
    Vector files keep their properties. GeoJSON cannot declare a Moon CRS, so its lon/lat are
    read as selenographic degrees on the Moon sphere; other files must carry a Moon CRS.

    Returns
    -------
    geopandas.GeoDataFrame
        with ``site_id`` and ``name`` (made up as ``site-N`` when absent), in the file's Moon CRS.

    Raises
    ------
    InputFileError, SitesError, CRSError
    """
    import geopandas as gpd
    from shapely.geometry import Point

    p = Path(path)
    if not p.exists():
        raise InputFileError(f"Sites file {p} does not exist.")
    if p.suffix.lower() in (".csv", ".txt"):
        try:
            df = pd.read_csv(p)
        except Exception as exc:
            raise InputFileError(f"Cannot read {p} as CSV ({exc}).") from exc
        cols = {c.lower().strip(): c for c in df.columns}
        lat_c = cols.get("lat") or cols.get("latitude")
        lon_c = cols.get("lon") or cols.get("longitude")
        if lat_c is None or lon_c is None:
            raise SitesError(
                f"{p} needs 'lat' and 'lon' columns (planetocentric degrees); it has {list(df.columns)}."
            )
        lat = pd.to_numeric(df[lat_c], errors="coerce").to_numpy()
        lon = pd.to_numeric(df[lon_c], errors="coerce").to_numpy()
        bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (lon < -180) | (lon > 360)
        if bad.any():
            rows = (np.flatnonzero(bad) + 2).tolist()[:10]
            raise SitesError(f"{p}: invalid lat/lon on line(s) {rows}; latitudes must be -90..90 and longitudes -180..360.")
        df = df.drop(columns=[lat_c, lon_c])
        df.columns = [c.lower().strip() for c in df.columns]
        gdf = gpd.GeoDataFrame(df, geometry=[Point(a, b) for a, b in zip(wrap_longitude(lon), lat)], crs=MOON_GEOGRAPHIC)
    else:
        try:
            gdf = gpd.read_file(p)
        except Exception as exc:
            raise InputFileError(f"Cannot read {p} as a vector file ({exc}).") from exc
        if gdf.crs is None or p.suffix.lower() in (".geojson", ".json"):
            if gdf.crs is not None and not gdf.crs.is_geographic:
                check_moon_crs(gdf.crs, what=f"sites file {p.name}", projected=None)
            else:
                gdf = gdf.set_crs(MOON_GEOGRAPHIC, allow_override=True)
        else:
            check_moon_crs(gdf.crs, what=f"sites file {p.name}", projected=None)
        gdf.columns = [c if c == "geometry" else str(c).lower() for c in gdf.columns]
    if len(gdf) == 0:
        raise SitesError(f"{p} contains no sites.")
    if gdf.geometry.isna().any() or gdf.geometry.is_empty.any():
        rows = np.flatnonzero((gdf.geometry.isna() | gdf.geometry.is_empty).to_numpy()).tolist()[:10]
        raise SitesError(f"{p}: feature(s) {rows} have no geometry.")
    if "name" not in gdf.columns:
        for alt in ("region", "site", "id"):
            if alt in gdf.columns:
                gdf["name"] = gdf[alt].astype(str)
                break
        else:
            gdf["name"] = [f"site-{i + 1}" for i in range(len(gdf))]
    if "site_id" not in gdf.columns:
        gdf["site_id"] = gdf["name"].astype(str)
    gdf["name"] = gdf["name"].astype(str)
    gdf["site_id"] = gdf["site_id"].astype(str)
    return gdf


def dem_bounds_polygon(elevation):
    """Footprint of the DEM's pixel area as a shapely box in its CRS."""
    from shapely.geometry import box

    left, bottom, right, top = elevation.rio.bounds()
    return box(left, bottom, right, top)


def build_footprints(
    sites,
    elevation,
    *,
    pad_radius_m: float = DEFAULT_PAD_RADIUS_M,
    grid_spacing_m: float | None = None,
    keep_outside: bool = True,
):
    """Turn sites (points/polygons) into footprints on the DEM grid, with a status per site.

    Parameters
    ----------
    sites : geopandas.GeoDataFrame
        From :func:`read_sites` or :func:`artemis_regions` (any Moon CRS).
    elevation : xarray.DataArray
        The DEM (dims ``("y","x")``, projected Moon CRS); footprints are built in its CRS.
    pad_radius_m : float
        Radius of landing pads made from points and grid cells (m).
    grid_spacing_m : float, optional
        If given, polygons (or the whole DEM when ``sites`` is None) are filled with pads on a
        square grid of this spacing (m), aligned to multiples of the spacing in map coordinates;
        pads are generated inside ``polygon ∩ DEM``. Polygons are kept as single sites otherwise.
    keep_outside : bool
        Keep sites entirely outside the DEM as rows with status ``"outside DEM"``.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``site_id, name, kind, region, x, y, lat, lon, radius_m, status, geometry`` (+ input
        columns such as ``label``), in the DEM's CRS. Statuses: ``ok``, ``outside DEM``,
        ``partly outside DEM`` (polygons; evaluated on the covered part), ``on nodata`` (set later
        by :func:`lunarmap.features.site_features`).

    Raises
    ------
    SitesError
        Non-positive radius/spacing, or a grid that would produce more than 200 000 pads.
    """
    import geopandas as gpd
    from shapely.geometry import Point

    if pad_radius_m <= 0:
        raise SitesError(f"Pad radius must be positive (m), got {pad_radius_m}.")
    if grid_spacing_m is not None and grid_spacing_m <= 0:
        raise SitesError(f"Grid spacing must be positive (m), got {grid_spacing_m}.")
    crs = check_moon_crs(elevation.rio.crs, what="DEM")
    dem_poly = dem_bounds_polygon(elevation)
    if sites is None:
        sites = gpd.GeoDataFrame({"name": ["DEM"], "site_id": ["dem"]}, geometry=[dem_poly], crs=crs)
    sites = sites.to_crs(crs)
    extra_cols = [c for c in sites.columns if c not in ("geometry", "name", "site_id", "kind", "region", "status")]
    rows = []
    for _, s in sites.iterrows():
        geom = s.geometry
        base = {c: s[c] for c in extra_cols}
        radius = float(s["radius_m"]) if "radius_m" in s and pd.notna(s.get("radius_m")) else pad_radius_m
        if geom.geom_type in ("Point", "MultiPoint"):
            pt = geom if geom.geom_type == "Point" else geom.centroid
            fp = pt.buffer(radius, quad_segs=16)
            status = STATUS_OK if dem_poly.contains(fp) else (STATUS_OUTSIDE if not dem_poly.intersects(fp) else STATUS_PARTIAL)
            rows.append({**base, "site_id": s["site_id"], "name": s["name"], "kind": "pad", "region": "",
                         "radius_m": radius, "status": status, "geometry": fp})
            continue
        inter = geom.intersection(dem_poly)
        if grid_spacing_m is None:
            if inter.is_empty:
                status = STATUS_OUTSIDE
            elif inter.area < geom.area * (1 - 1e-9):
                status = STATUS_PARTIAL
            else:
                status = STATUS_OK
            rows.append({**base, "site_id": s["site_id"], "name": s["name"], "kind": "region", "region": s["name"],
                         "radius_m": np.nan, "status": status, "geometry": geom})
            continue
        if inter.is_empty:
            rows.append({**base, "site_id": s["site_id"], "name": s["name"], "kind": "region", "region": s["name"],
                         "radius_m": np.nan, "status": STATUS_OUTSIDE, "geometry": geom})
            continue
        minx, miny, maxx, maxy = inter.bounds
        gx = np.arange(math.ceil(minx / grid_spacing_m), math.floor(maxx / grid_spacing_m) + 1) * grid_spacing_m
        gy = np.arange(math.ceil(miny / grid_spacing_m), math.floor(maxy / grid_spacing_m) + 1) * grid_spacing_m
        if gx.size * gy.size > 200_000:
            raise SitesError(
                f"--grid {grid_spacing_m:g} m would make {gx.size * gy.size:,} pads in {s['name']!r}; use a larger spacing."
            )
        inner = inter.buffer(-radius)
        from shapely import contains_xy

        X, Y = np.meshgrid(gx, gy[::-1])
        inside = contains_xy(inner, X.ravel(), Y.ravel()) if not inner.is_empty else np.zeros(X.size, bool)
        n = 0
        for x, y in zip(X.ravel()[inside], Y.ravel()[inside]):
            n += 1
            rows.append({**base, "site_id": f"{s['site_id']}-{n:04d}", "name": f"{s['name']} #{n}", "kind": "pad",
                         "region": s["name"], "radius_m": radius, "status": STATUS_OK,
                         "geometry": Point(x, y).buffer(radius, quad_segs=16)})
        if n == 0:
            rows.append({**base, "site_id": s["site_id"], "name": s["name"], "kind": "region", "region": s["name"],
                         "radius_m": np.nan, "status": "no pad fits inside the DEM part of the region",
                         "geometry": geom})
    if not rows:
        raise SitesError("No sites to evaluate.")
    fps = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    cent = fps.geometry.centroid
    fps["x"] = cent.x.to_numpy()
    fps["y"] = cent.y.to_numpy()
    lon, lat = xy_to_lonlat(fps["x"].to_numpy(), fps["y"].to_numpy(), crs)
    fps["lat"] = np.round(lat, 6)
    fps["lon"] = np.round(lon, 6)
    if not keep_outside:
        fps = fps[fps["status"] != STATUS_OUTSIDE]
    cols = ["site_id", "name", "kind", "region", "x", "y", "lat", "lon", "radius_m", "status"]
    return fps[cols + [c for c in fps.columns if c not in cols]].reset_index(drop=True)


def default_footprints(elevation, *, pad_radius_m=DEFAULT_PAD_RADIUS_M, grid_spacing_m: float | None = None):
    """Artemis III regions overlapping the DEM, as footprints (see :func:`build_footprints`).

    Regions that do not overlap the DEM are not candidates for that DEM and are left out (the
    returned frame's ``attrs['regions_skipped']`` lists them). If none overlaps, the whole DEM
    is the candidate area.
    """
    regions = artemis_regions()
    crs = elevation.rio.crs
    dem_poly = dem_bounds_polygon(elevation)
    proj = regions.to_crs(crs)
    hit = proj.geometry.intersects(dem_poly).to_numpy()
    skipped = regions.loc[~hit, "name"].tolist()
    sites = regions.loc[hit] if hit.any() else None
    fps = build_footprints(sites, elevation, pad_radius_m=pad_radius_m, grid_spacing_m=grid_spacing_m)
    fps.attrs["regions_skipped"] = skipped
    fps.attrs["regions_used"] = regions.loc[hit, "name"].tolist()
    return fps


def pad_at(lat: float, lon: float, elevation, *, radius_m: float = DEFAULT_PAD_RADIUS_M, name: str | None = None):
    """A single landing pad centred at selenographic ``lat``/``lon`` (deg), as footprints.

    Raises
    ------
    CoordinateError
        Invalid coordinate, or the pad centre is off the DEM.
    """
    import geopandas as gpd
    from shapely.geometry import Point

    from .errors import CoordinateError

    if not (-90 <= lat <= 90) or not (-180 <= lon <= 360):
        raise CoordinateError(f"Invalid coordinate lat={lat}, lon={lon}: latitude must be -90..90, longitude -180..360 (east).")
    x, y = lonlat_to_xy(lon, lat, elevation.rio.crs)
    x, y = float(x), float(y)
    left, bottom, right, top = elevation.rio.bounds()
    if not (left <= x <= right and bottom <= y <= top):
        elon = wrap_longitude(lon)
        clat = xy_to_lonlat((left + right) / 2, (bottom + top) / 2, elevation.rio.crs)
        raise CoordinateError(
            f"lat {lat:.4f}, lon {elon:.4f} (x={x:,.0f} m, y={y:,.0f} m) is outside the DEM "
            f"(x {left:,.0f}..{right:,.0f}, y {bottom:,.0f}..{top:,.0f} m; centre lat {clat[1]:.3f}, lon {clat[0]:.3f}). "
            f"Pass a coordinate inside the DEM or another --dem."
        )
    label = name or f"pad {lat:.4f}, {float(wrap_longitude(lon)):.4f}"
    g = gpd.GeoDataFrame({"name": [label], "site_id": ["query"]}, geometry=[Point(x, y)], crs=elevation.rio.crs)
    return build_footprints(g, elevation, pad_radius_m=radius_m)
