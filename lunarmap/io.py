"""Reading and writing: DEMs as Dask-chunked ``xarray`` rasters, Cloud-Optimized GeoTIFFs, sites.

This is the only place (with the CLI and notebooks) that touches files. Compute modules take and
return lazy xarray objects.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from .crs import check_moon_crs, standard_polar_crs
from .errors import InputFileError, NoDataError, UnitsError

#: Default Dask chunk edge (pixels) for rasters opened by lunarmap.
DEFAULT_CHUNK = 1024

_DEM_SUFFIXES = (".tif", ".tiff", ".img", ".lbl", ".vrt", ".jp2")


def open_dem(
    path: str | os.PathLike,
    *,
    chunks: int | dict | None = DEFAULT_CHUNK,
    units: str = "m",
    check_units: bool = True,
) -> xr.DataArray:
    """Open a lunar DEM as a Dask-chunked ``xarray.DataArray`` named ``elevation``.

    Parameters
    ----------
    path : path-like
        GeoTIFF/COG, or a PDS3 ``.IMG`` with its detached ``.LBL`` (read by GDAL's PDS driver,
        which applies the label's ``SCALING_FACTOR``/``OFFSET``; for LOLA ``LDEM_*.IMG`` integer
        products height = DN x 0.5 m). Any GDAL raster in a projected Moon CRS works.
    chunks : int, dict or None
        Dask chunk size in pixels (``None`` loads eagerly into numpy).
    units : {"m", "km"}
        Unit of the stored heights. ``"km"`` (PDS ``*_FLOAT.IMG`` polar products) is converted
        to metres.
    check_units : bool
        Raise :class:`UnitsError` when the height range looks like kilometres (|h| < 20 over a
        DEM whose relief is < 40 units) while ``units="m"``.

    Returns
    -------
    xarray.DataArray
        dims ``("y", "x")``, float32 (float64 if stored so), metres above the 1 737 400 m Moon
        sphere, nodata as NaN, pixel-centre coordinates ``x``/``y`` in metres, CRS from the file
        (normalised to ``IAU_2015:30135``/``30130`` when equivalent), attrs ``units="m"``,
        ``long_name``, ``gsd`` (m, the pixel size) and ``source`` (the path).

    Raises
    ------
    InputFileError
        Missing, unreadable or corrupt file; multi-band raster.
    CRSError
        Missing CRS, an Earth CRS, a geographic CRS or non-metre units.
    NoDataError
        Every pixel is nodata.
    UnitsError
        Heights look like kilometres.
    """
    import rasterio
    import rioxarray  # noqa: F401 - registers the .rio accessor

    p = Path(path)
    if not p.exists():
        raise InputFileError(f"DEM file {p} does not exist. Check the path (lunarmap's embedded DEMs are in tiles/).")
    if p.suffix.lower() == ".lbl":
        img = p.with_suffix(".IMG") if p.with_suffix(".IMG").exists() else p.with_suffix(".img")
        p = img if img.exists() else p
    try:
        with rasterio.open(p) as ds:
            count, nodata, dtype, crs = ds.count, ds.nodata, ds.dtypes[0], ds.crs
            res = ds.res
            transform = ds.transform
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(
            f"Cannot read {p} as a raster ({exc}). The file may be corrupt or truncated, or not a "
            f"format GDAL reads (GeoTIFF/COG, PDS .IMG+.LBL). Re-download or re-export it."
        ) from exc
    if count != 1:
        raise InputFileError(f"{p} has {count} bands; a DEM must have exactly one (height).")
    crs = check_moon_crs(crs, what=f"DEM {p.name}")
    if abs(abs(res[0]) - abs(res[1])) > 1e-6 * abs(res[0]) or transform.b != 0 or transform.d != 0:
        raise InputFileError(
            f"{p} has non-square or rotated pixels (res {res}); resample it to square pixels in a polar "
            f"stereographic Moon CRS first (gdalwarp -tr GSD GSD)."
        )
    try:
        da = rioxarray.open_rasterio(p, chunks=chunks, masked=True)
    except Exception as exc:  # rasterio raises several types for corrupt files
        raise InputFileError(f"Cannot read pixel data from {p} ({exc}). The file may be corrupt.") from exc
    da = da.squeeze("band", drop=True)
    if da.dtype != np.float64:
        da = da.astype("float32")
    scale = 1000.0 if units == "km" else 1.0
    if units not in ("m", "km"):
        raise UnitsError(f"units must be 'm' or 'km', got {units!r}.")
    if scale != 1.0:
        da = da * np.float32(scale)
    da = _finish_elevation(da, crs=standard_polar_crs(crs), source=str(p), nodata=nodata)
    _check_valid(da, p, check_units=check_units and units == "m")
    return da


def _finish_elevation(da: xr.DataArray, *, crs, source: str, nodata) -> xr.DataArray:
    da = da.rio.write_crs(crs)
    da.name = "elevation"
    gsd = float(abs(da.rio.resolution()[0]))
    keep = {k: v for k, v in da.attrs.items() if k in ("AREA_OR_POINT",)}
    da.attrs = {
        **keep,
        "units": "m",
        "long_name": "elevation above the 1737.4 km Moon sphere",
        "gsd": gsd,
        "source": source,
    }
    da.encoding.pop("_FillValue", None)
    da = da.rio.write_nodata(np.nan, encoded=False)
    return da


def _check_valid(da: xr.DataArray, path, *, check_units: bool) -> None:
    """Cheap sanity checks on a decimated view of the DEM (does not load the full raster)."""
    step_y = max(1, da.sizes["y"] // 512)
    step_x = max(1, da.sizes["x"] // 512)
    sample = np.asarray(da[::step_y, ::step_x].values, dtype="float64")
    finite = np.isfinite(sample)
    if not finite.any():
        full_valid = bool(np.isfinite(da).any().compute()) if step_x * step_y > 1 else False
        if not full_valid:
            raise NoDataError(
                f"Every pixel of {path} is nodata: there is no elevation to analyse. Check the file "
                f"(gdalinfo -stats) and that its nodata value is right."
            )
        return
    vals = sample[finite]
    if check_units and np.nanmax(np.abs(vals)) < 20.0 and np.ptp(vals) < 40.0 and np.ptp(vals) > 0:
        raise UnitsError(
            f"Heights in {path} range {vals.min():.3f}..{vals.max():.3f}: this looks like kilometres "
            f"(PDS *_FLOAT.IMG polar products are in km). lunarmap works in metres: pass units='km' "
            f"(CLI: --dem-units km) to convert, or check_units=False if these really are metres."
        )


def elevation_from_array(
    values: np.ndarray,
    *,
    gsd: float,
    crs="IAU_2015:30135",
    x0: float | None = None,
    y0: float | None = None,
    chunks: int | dict | None = None,
) -> xr.DataArray:
    """Wrap a 2-D numpy height array (m) as an ``elevation`` DataArray on a polar grid.

    For synthetic terrain and tests. ``x0``/``y0`` are the map coordinates (m) of the
    upper-left pixel *corner*; by default the grid is centred on the pole.

    Returns
    -------
    xarray.DataArray, dims ``("y", "x")``, same attrs/CRS conventions as :func:`open_dem`.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (y, x), got shape {values.shape}")
    ny, nx = values.shape
    if x0 is None:
        x0 = -nx * gsd / 2.0
    if y0 is None:
        y0 = ny * gsd / 2.0
    x = x0 + (np.arange(nx) + 0.5) * gsd
    y = y0 - (np.arange(ny) + 0.5) * gsd
    da = xr.DataArray(values.astype("float32") if values.dtype != np.float64 else values, dims=("y", "x"), coords={"y": y, "x": x})
    if chunks is not None:
        da = da.chunk(chunks if isinstance(chunks, dict) else {"y": chunks, "x": chunks})
    da = _finish_elevation(da, crs=check_moon_crs(crs), source="array", nodata=None)
    return da


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import: os.umask can only be read by setting it, which is not thread-safe
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted or failed write never leaves a file at ``path`` that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix last: some writers (xgboost, matplotlib) pick the format from it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give outputs the usual permissions (0666 minus umask)
        if os.path.exists(tmp):
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_cog(
    da: xr.DataArray,
    path: str | os.PathLike,
    *,
    compress: str = "deflate",
    overwrite: bool = True,
) -> Path:
    """Write a 2-D layer as a Cloud-Optimized GeoTIFF, atomically.

    The DataArray (dims ``("y","x")``, numpy or Dask) is written block by block to a tiled
    GeoTIFF next to ``path`` and copied to a COG (internal overviews, deflate) which is renamed
    onto ``path`` only when complete, so an interrupted run never leaves a half-written file.

    Boolean layers (e.g. ``psr``) are written as uint8 (1 = true) with nodata 255; floats keep
    their dtype with nodata NaN.

    Parameters
    ----------
    da : xarray.DataArray
        dims ``("y", "x")``, or ``(dim, "y", "x")`` (e.g. ``horizon`` by ``azimuth``: one band
        per coordinate value, described as ``"<long_name>, azimuth=12"``), with a Moon CRS
        (``da.rio.crs``); attrs ``units`` and ``long_name`` become band units and descriptions.
    path : path-like
        Destination ``.tif``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    CRSError
        The layer has no Moon CRS.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    import rasterio
    import rasterio.shutil
    import rioxarray  # noqa: F401

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: choose another --out) to replace it.")
    if da.ndim not in (2, 3) or da.dims[-2:] != ("y", "x"):
        raise ValueError(f"write_cog writes (y, x) or (band, y, x) layers; {da.name!r} has dims {da.dims}")
    check_moon_crs(da.rio.crs, what=f"layer {da.name!r}")
    units = str(da.attrs.get("units", ""))
    long_name = str(da.attrs.get("long_name", da.name or ""))
    out = da.copy()
    out.attrs = {"long_name": long_name, "units": units, "layer": str(da.name)}
    out.encoding = {}
    if out.dtype == bool:
        out = out.astype("uint8")
        out.attrs = {"long_name": long_name, "units": units, "layer": str(da.name)}
        out = out.rio.write_nodata(255, encoded=False)
    elif np.issubdtype(out.dtype, np.floating):
        out = out.rio.write_nodata(np.nan, encoded=False)
    out = out.rio.write_crs(da.rio.crs)
    with atomic_path(path) as final_tmp:
        gtiff = final_tmp.with_name(final_tmp.name + ".gtiff")
        try:
            out.rio.to_raster(gtiff, driver="GTiff", tiled=True, compress=compress, lock=True)
            with rasterio.open(gtiff, "r+") as ds:
                if da.ndim == 2:
                    ds.set_band_description(1, long_name)
                else:  # e.g. horizon (azimuth, y, x): one band per coordinate value
                    dim = da.dims[0]
                    for i, v in enumerate(np.asarray(da[dim].values)):
                        ds.set_band_description(i + 1, f"{long_name}, {dim}={v:g}")
                ds.units = (units,) * ds.count
            rasterio.shutil.copy(gtiff, final_tmp, driver="COG", compress=compress, overviews="AUTO")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(gtiff)
    return path


# --- crater catalogue I/O ---
def write_crater_catalogue(gdf, path_gpkg: str | os.PathLike, path_csv: str | os.PathLike | None = None) -> None:
    """Write a crater catalogue as a GeoPackage (layer ``craters``, the catalogue's Moon CRS) and a
    CSV (``lat, lon, diameter_m, score``), each atomically.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`lunarmap.craters.extract_craters` (Point geometry in a Moon CRS; columns
        ``lat``, ``lon`` (deg, -180..180), ``diameter_m``, ``score``).
    path_gpkg, path_csv : path-like
        Output files (the CSV is skipped when ``None``).

    Raises
    ------
    CRSError
        The catalogue has no CRS or a non-Moon CRS.
    """
    check_moon_crs(gdf.crs, what="crater catalogue", projected=None)
    path_gpkg = Path(path_gpkg)
    with atomic_path(path_gpkg) as tmp:
        # the temp name must end in .gpkg for the GPKG driver
        tmp_gpkg = tmp.with_name(tmp.name + ".gpkg")
        try:
            gdf.to_file(tmp_gpkg, layer="craters", driver="GPKG")
            os.replace(tmp_gpkg, tmp)
        finally:
            if tmp_gpkg.exists():
                tmp_gpkg.unlink()
    if path_csv is not None:
        cols = [c for c in ("lat", "lon", "diameter_m", "score") if c in gdf.columns]
        with atomic_path(path_csv) as tmp:
            gdf[cols].to_csv(tmp, index=False, float_format="%.6f")


def read_crater_catalogue(path_gpkg: str | os.PathLike):
    """Read a GeoPackage written by :func:`write_crater_catalogue` (GeoDataFrame in its Moon CRS)."""
    import geopandas as gpd

    p = Path(path_gpkg)
    if not p.exists():
        raise InputFileError(f"Crater catalogue {p} does not exist.")
    return gpd.read_file(p, layer="craters")

# --- illumination products I/O ---

#: Scaling of NASA LOLA illumination products (PDS LRO-L-LOLA-4-GDR-V1.0, "extras/illumination";
#: Mazarico et al. 2011): physical value = DN x scale + offset (the products' PDS labels).
#: ``avgvisib``: GDRVIS average solar visibility (fraction of the solar disk, time mean over one
#: 18.6-yr precession cycle); ``avgvisib_earth``: GDRVIS ``*_EARTH`` average Earth visibility
#: (same scaling assumed — check the product's label); ``lpsr``: GDRPSR permanent shadow map,
#: DN +20000 -> 1 (permanent shadow), -20000 -> 0.
ILLUMINATION_PRODUCTS = {
    "avgvisib": {"scale": 0.00004, "offset": 0.0, "layer": "illumination_fraction", "units": "1"},
    "avgvisib_earth": {"scale": 0.00004, "offset": 0.0, "layer": "earth_visibility_fraction", "units": "1"},
    "lpsr": {"scale": 0.000025, "offset": 0.5, "layer": "psr", "units": "1"},
}
#: Which product kind stands in for which lunarmap layer.
PRODUCT_KIND_FOR_LAYER = {v["layer"]: k for k, v in ILLUMINATION_PRODUCTS.items()}


def align_to_dem(da: xr.DataArray, like: xr.DataArray, *, kind: str = "avgvisib") -> xr.DataArray:
    """Reproject/resample a product onto the DEM grid ``like`` (rioxarray ``reproject_match``).

    Bilinear resampling for the continuous fractions and the LPSR value (then thresholded by the
    ``psr`` layer); NaN outside the product's extent. Both rasters need a Moon CRS.
    """
    import rioxarray  # noqa: F401
    from rasterio.enums import Resampling

    check_moon_crs(da.rio.crs, what=f"{kind} product")
    src = da.rio.write_nodata(np.nan, encoded=False) if da.dtype.kind == "f" else da
    out = src.rio.reproject_match(like, resampling=Resampling.bilinear, nodata=np.nan)
    return out.assign_coords(x=like["x"], y=like["y"])


def open_illumination_product(
    path: str | os.PathLike,
    *,
    kind: str,
    like: xr.DataArray | None = None,
    scaled: bool | None = None,
) -> xr.DataArray:
    """Read a NASA LOLA illumination product (GeoTIFF, or PDS .IMG+.LBL) as a lunarmap layer.

    Parameters
    ----------
    path : path-like
        ``AVGVISIB_*`` (GDRVIS), ``AVGVISIB_*_EARTH`` or ``LPSR_*`` (GDRPSR) raster, polar
        stereographic Moon CRS.
    kind : {"avgvisib", "avgvisib_earth", "lpsr"}
        Product type; selects the scaling in :data:`ILLUMINATION_PRODUCTS`.
    like : xarray.DataArray, optional
        DEM to align onto (:func:`align_to_dem`); default: the product's own grid.
    scaled : bool, optional
        Whether the stored values are already physical. Default: integer rasters without a
        scale/offset tag get ``DN x scale + offset``; float rasters or rasters whose file carries
        a scale/offset (applied by GDAL/rioxarray) are taken as physical.

    Returns
    -------
    xarray.DataArray, float32, dims ``("y","x")``
        ``avgvisib*``: fraction 0..1 (name ``illumination_fraction`` /
        ``earth_visibility_fraction``); ``lpsr``: LPSR value 0..1 (name ``psr``; 1 = permanent
        shadow — the ``psr`` layer thresholds it at 0.5). attrs ``units``, ``source``, ``product``.

    Raises
    ------
    InputFileError
        Missing/unreadable file, multi-band raster, unknown ``kind``.
    CRSError
        Missing or non-Moon CRS.
    """
    import rasterio
    import rioxarray

    if kind not in ILLUMINATION_PRODUCTS:
        raise InputFileError(f"Unknown illumination product kind {kind!r}; use one of {sorted(ILLUMINATION_PRODUCTS)}.")
    spec = ILLUMINATION_PRODUCTS[kind]
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"Illumination product {p} does not exist. Check the path.")
    try:
        with rasterio.open(p) as ds:
            count, dtype, crs = ds.count, ds.dtypes[0], ds.crs
            file_scaled = (ds.scales[0] not in (None, 1.0)) or (ds.offsets[0] not in (None, 0.0))
        da = rioxarray.open_rasterio(p, masked=True, mask_and_scale=True)
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"Cannot read {p} as a raster ({exc}).") from exc
    if count != 1:
        raise InputFileError(f"{p} has {count} bands; an illumination product has one.")
    check_moon_crs(crs, what=f"{kind} product {p.name}")
    da = da.squeeze("band", drop=True).astype("float64")
    if scaled is None:
        scaled = np.dtype(dtype).kind == "f" or file_scaled
    if not scaled:
        da = da * spec["scale"] + spec["offset"]
    da = da.astype("float32").rio.write_crs(standard_polar_crs(crs))
    if like is not None:
        da = align_to_dem(da, like, kind=kind)
    da.name = spec["layer"]
    da.attrs = {"units": spec["units"], "source": str(p), "product": kind}
    return da
