"""Per-site features: zonal statistics of every layer over each site's footprint.

Which statistics a layer yields is declared where the layer is registered
(:class:`lunarmap.layers.LayerSpec` ``stats``/``fractions``), so a new layer becomes new feature
columns here without changes to this module or to the ranking.

Column names: ``<layer>_<stat>`` (``slope_mean``, ``slope_p95``, ``illumination_fraction_min``),
``<layer>_frac_<op>_<threshold>`` (``slope_frac_gt_8``: fraction of footprint pixels with
slope > 8 deg), and buffered statistics requested by the ranking
``<layer>_<stat>_within_<buffer>m`` (``slope_max_within_100m``: max slope over the pad and
100 m around it).

Pixels belong to a footprint when the footprint touches them (``all_touched``), so a 100 m pad
on a 200 m DEM still gets the 2x2..3x3 pixels it overlaps; ``n_pixels`` says how many.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from .layers import LAYERS, load_providers
from .sites import STATUS_NODATA, STATUS_OK, STATUS_OUTSIDE, STATUS_PARTIAL

_OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal}


@dataclass(frozen=True)
class BufferedStat:
    """A statistic of ``layer`` over the footprint grown by ``buffer_m`` metres."""

    layer: str
    stat: str
    buffer_m: float

    @property
    def column(self) -> str:
        return f"{self.layer}_{self.stat}_within_{self.buffer_m:g}m"


def _stat(values: np.ndarray, stat: str) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return np.nan
    if stat == "mean":
        return float(v.mean())
    if stat == "min":
        return float(v.min())
    if stat == "max":
        return float(v.max())
    if stat == "std":
        return float(v.std())
    if stat.startswith("p") and stat[1:].isdigit():
        return float(np.percentile(v, float(stat[1:])))
    raise ValueError(f"Unknown statistic {stat!r} (use mean, min, max, std or pNN)")


def feature_columns(layer_names, buffered: tuple[BufferedStat, ...] = ()) -> list[str]:
    """Feature column names produced for the given layers (registry order), plus buffered stats."""
    specs = load_providers()
    cols: list[str] = []
    for name in layer_names:
        spec = specs.get(name)
        if spec is None:
            continue
        cols += [f"{name}_{s}" for s in spec.stats]
        cols += [f"{name}_frac_{op}_{thr:g}" for op, thr in spec.fractions]
    cols += [b.column for b in buffered if b.layer in layer_names]
    return cols


def site_features(
    layers: xr.Dataset,
    footprints,
    *,
    buffered: tuple[BufferedStat, ...] = (),
    progress: bool = False,
) -> pd.DataFrame:
    """Zonal statistics of each registered 2-D layer over each footprint.

    Parameters
    ----------
    layers : xarray.Dataset
        Layers on the DEM grid (dims ``("y","x")``; variables with other dims, like
        ``horizon``, are skipped). Dask-backed layers are computed once here (persist them
        first on a cluster).
    footprints : geopandas.GeoDataFrame
        From :mod:`lunarmap.sites`, in the layers' CRS.
    buffered : tuple of BufferedStat
        Extra statistics over grown footprints (the ranking's clearance constraint).

    Returns
    -------
    pandas.DataFrame
        One row per footprint (same index and order), with ``n_pixels``, ``valid_fraction``
        (share of footprint pixels with valid elevation), the feature columns and an updated
        ``status`` (``on nodata`` when no pixel is valid).
    """
    from rasterio.features import geometry_mask
    from rasterio.windows import Window, from_bounds

    specs = load_providers()
    names = [n for n in layers.data_vars if n in specs and layers[n].dims == ("y", "x")]
    transform = layers.rio.transform()
    height, width = layers.sizes["y"], layers.sizes["x"]
    arrays = {n: np.asarray(layers[n].values) for n in names}
    elev = np.asarray(layers["elevation"].values)
    rows = []
    it = footprints.itertuples(index=False)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(footprints), desc="site features", unit="site")
    geom_idx = list(footprints.columns).index("geometry")
    status_idx = list(footprints.columns).index("status")
    for rec in it:
        geom, status = rec[geom_idx], rec[status_idx]
        row: dict[str, float | str] = {"status": status}
        if status == STATUS_OUTSIDE:
            row.update({"n_pixels": 0, "valid_fraction": 0.0})
            rows.append(row)
            continue

        def window_values(g):
            win = from_bounds(*g.bounds, transform=transform).round_offsets(op="floor").round_lengths(op="ceil")
            win = Window(win.col_off, win.row_off, win.width + 1, win.height + 1).intersection(Window(0, 0, width, height))
            r0, c0, h, w = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            wt = rasterio_window_transform(transform, r0, c0)
            mask = ~geometry_mask([g], out_shape=(h, w), transform=wt, all_touched=True)
            return (slice(r0, r0 + h), slice(c0, c0 + w)), mask

        try:
            (ys, xs), mask = window_values(geom)
        except Exception:  # window entirely off the raster
            row.update({"n_pixels": 0, "valid_fraction": 0.0, "status": STATUS_OUTSIDE})
            rows.append(row)
            continue
        ev = elev[ys, xs][mask]
        row["n_pixels"] = int(mask.sum())
        row["valid_fraction"] = float(np.isfinite(ev).mean()) if ev.size else 0.0
        if row["valid_fraction"] == 0.0:
            row["status"] = STATUS_NODATA if status in (STATUS_OK, STATUS_PARTIAL) else status
            rows.append(row)
            continue
        for n in names:
            vals = arrays[n][ys, xs][mask].astype("float64")
            spec = specs[n]
            for s in spec.stats:
                row[f"{n}_{s}"] = _stat(vals, s)
            fin = vals[np.isfinite(vals)]
            for op, thr in spec.fractions:
                row[f"{n}_frac_{op}_{thr:g}"] = float(_OPS[op](fin, thr).mean()) if fin.size else np.nan
        for b in buffered:
            if b.layer not in arrays:
                continue
            (bys, bxs), bmask = window_values(geom.buffer(b.buffer_m))
            row[b.column] = _stat(arrays[b.layer][bys, bxs][bmask].astype("float64"), b.stat)
        rows.append(row)
    out = pd.DataFrame(rows, index=footprints.index)
    for c in feature_columns(names, buffered):
        if c not in out.columns:
            out[c] = np.nan
    return out


def rasterio_window_transform(transform, row_off: int, col_off: int):
    """Affine transform of a window starting at (row_off, col_off)."""
    return transform @ transform.translation(col_off, row_off)


__all__ = ["BufferedStat", "feature_columns", "site_features", "LAYERS"]
