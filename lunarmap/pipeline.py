"""End-to-end jobs behind the CLI and the notebooks: ``rank``, ``layers``, ``explain``.

This module decides when Dask graphs are computed and what is written; the compute modules
stay lazy. Outputs of :func:`run_rank` in ``out_dir``:

``ranking.csv``        one row per site: rank, score, label, constraint pass/fail, features,
                       top SHAP factors, status (sites that could not be evaluated included)
``ranking.geojson``    the same, footprints in lon/lat (IAU_2015:30100; GeoJSON cannot name it)
``ranking.gpkg``       the same, footprints in the DEM's Moon CRS
``layers/NAME.tif``    Cloud-Optimized GeoTIFF per 2-D layer
``map.html``           self-contained offline map (layers + ranked sites)
``model.json``         the fitted XGBoost model; ``run.json``: parameters, notes, timings
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import LunarmapError, SitesError
from .features import site_features
from .io import atomic_path, open_dem, write_cog
from .layers import compute_layers, default_layers, load_providers
from .ranking import LanderConstraints, RankResult, rank_sites
from .sites import DEFAULT_PAD_RADIUS_M, build_footprints, default_dem_path, default_footprints, read_sites

DEFAULT_OUT = "lunarmap_out"


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(msg, highlight=False)


@contextlib.contextmanager
def dask_scheduler(scheduler: str | None, *, progress: bool = True):
    """Run Dask work on ``scheduler``: ``None``/"threads", "synchronous", or a ``tcp://`` address.

    A ``tcp://host:port`` address connects a :class:`distributed.Client` to an existing
    ``dask.distributed`` cluster for the duration of the block.
    """
    import dask

    if scheduler and "://" in scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            yield client
        return
    name = scheduler or "threads"
    if name not in ("threads", "synchronous", "processes"):
        raise LunarmapError(f"Unknown --scheduler {scheduler!r}: use threads, synchronous, processes or tcp://HOST:PORT.")
    with dask.config.set(scheduler=name):
        yield None


def _compute(obj, *, label: str, quiet: bool, client=None):
    """Compute a Dask-backed xarray object with a progress bar."""
    if client is not None:
        fut = client.compute(obj)
        if not quiet:
            from distributed import progress

            progress(fut)
        return fut.result()
    if quiet:
        return obj.compute()
    import sys

    _log(f"[bold]{label}[/bold]", quiet)
    if not sys.stderr.isatty():  # logs and pipes get start/end lines, not a redrawn bar
        t = time.perf_counter()
        res = obj.compute()
        _log(f"  done in {time.perf_counter() - t:.1f} s", quiet)
        return res
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0, out=sys.stderr):
        return obj.compute()


def auto_grid_spacing(area_m2: float, pad_radius_m: float) -> float:
    """Pad spacing for ``--grid auto``: about 1000 pads over the candidate area, 2 pad radii to 2 km, 50 m steps."""
    s = math.sqrt(max(area_m2, 1.0) / 1000.0)
    s = min(max(s, 2.0 * pad_radius_m), 2000.0)
    return float(max(50.0, round(s / 50.0) * 50.0))


@dataclass
class RankOutputs:
    """What :func:`run_rank` produced."""

    result: RankResult
    table: pd.DataFrame
    layers: xr.Dataset
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def prepare_sites(elevation, *, sites_path=None, grid="auto", pad_radius_m=DEFAULT_PAD_RADIUS_M):
    """Footprints for the job: user sites or the Artemis III regions on the DEM, with the grid rule.

    ``grid``: ``"auto"`` (polygons are filled with pads at :func:`auto_grid_spacing`), a number of
    metres, or ``0``/``None`` (polygons stay whole sites). ``sites_path="dem"`` fills the whole DEM
    with pads. Returns (footprints, notes).
    """
    notes = []
    if sites_path is not None and str(sites_path).lower() == "dem":
        area = float(_dem_box(elevation).area)
        spacing = _grid_value(grid, area, pad_radius_m) or auto_grid_spacing(area, pad_radius_m)
        fps = build_footprints(None, elevation, pad_radius_m=pad_radius_m, grid_spacing_m=spacing)
        notes.append("Candidate sites: landing pads over the whole DEM (--sites dem).")
    elif sites_path is None:
        probe = default_footprints(elevation, pad_radius_m=pad_radius_m)
        used = probe.attrs.get("regions_used", [])
        regions_area = float(probe.geometry.intersection(_dem_box(elevation)).area.sum())
        spacing = _grid_value(grid, regions_area, pad_radius_m)
        fps = default_footprints(elevation, pad_radius_m=pad_radius_m, grid_spacing_m=spacing)
        if used:
            notes.append(f"Candidate sites: NASA Artemis III regions overlapping the DEM: {', '.join(used)}.")
        else:
            notes.append("No NASA Artemis III region overlaps this DEM; the whole DEM is the candidate area.")
    else:
        sites = read_sites(sites_path)
        polys = sites.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
        area = float(sites[polys].to_crs(elevation.rio.crs).geometry.intersection(_dem_box(elevation)).area.sum()) if polys.any() else 0.0
        spacing = _grid_value(grid, area, pad_radius_m) if polys.any() else None
        fps = build_footprints(sites, elevation, pad_radius_m=pad_radius_m, grid_spacing_m=spacing)
        notes.append(f"Candidate sites: {len(sites)} from {sites_path}.")
    if spacing:
        notes.append(f"Regions filled with landing pads of radius {pad_radius_m:g} m every {spacing:g} m ({int((fps['kind'] == 'pad').sum())} pads).")
    return fps, notes


#: Embedded regional DEMs used as far field by ``far_field="auto"``, finest first.
FAR_FIELD_CANDIDATES = ("lola_ldem80s_480m_south_pole_250km.tif", "lola_ldem256_south_polarstereo_1600m.tif")


def resolve_far_field(elevation, far_field="auto"):
    """The far-field DEM for horizon-based layers.

    ``"auto"``: the finest embedded regional LOLA DEM (tiles/, 480 m to ~86 deg S, then 1600 m to
    ~62 deg S) that contains the DEM, is coarser than it and shares its CRS; ``None``/``"none"``:
    no far field (edge pixels then have unknown horizons); a path or DataArray: that DEM.
    Returns (DataArray or None, note).
    """
    import xarray as xr

    from .sites import tiles_dir

    if far_field is None or (isinstance(far_field, str) and far_field.lower() in ("none", "off", "")):
        return None, "No far-field DEM: horizons see only terrain inside the DEM."
    if isinstance(far_field, xr.DataArray):
        return far_field, "Far field: DataArray given by the caller."
    if not (isinstance(far_field, str) and far_field == "auto"):
        return open_dem(far_field), f"Far field: {far_field}."
    from .crs import lonlat_to_xy, xy_to_lonlat

    left, bottom, right, top = elevation.rio.bounds()
    gsd = float(elevation.attrs.get("gsd", 0.0))
    try:
        folder = tiles_dir()
    except LunarmapError:
        return None, "No far-field DEM (embedded tiles not found): horizons see only terrain inside the DEM."
    for name in FAR_FIELD_CANDIDATES:
        cand = open_dem(folder / name)
        if float(cand.attrs["gsd"]) <= gsd:
            continue
        # bring the DEM corners into the candidate's CRS (same body; may be the other pole's grid)
        lon, lat = xy_to_lonlat([left, right, left, right], [bottom, bottom, top, top], elevation.rio.crs)
        cx, cy = lonlat_to_xy(lon, lat, cand.rio.crs)
        cl, cb, cr, ct = cand.rio.bounds()
        if all(cl <= x <= cr for x in cx) and all(cb <= y <= ct for y in cy) and np.all(np.isfinite(cx)):
            if cand.rio.crs.to_wkt() != elevation.rio.crs.to_wkt():
                continue  # the horizon engine needs the same CRS
            return cand, f"Far field: embedded {name} (auto)."
    return None, "No embedded far-field DEM covers this DEM: horizons see only terrain inside it (pass --far-field)."


def _dem_box(elevation):
    from .sites import dem_bounds_polygon

    return dem_bounds_polygon(elevation)


def _grid_value(grid, area_m2, pad_radius_m):
    if grid in (None, 0, "0", "none", "off"):
        return None
    if grid == "auto":
        return auto_grid_spacing(area_m2, pad_radius_m)
    try:
        v = float(grid)
    except (TypeError, ValueError):
        raise SitesError(f"--grid must be 'auto', 0 or a spacing in metres, got {grid!r}.") from None
    return v if v > 0 else None


def run_rank(
    dem: str | os.PathLike | None = None,
    *,
    sites: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = DEFAULT_OUT,
    grid="auto",
    pad_radius_m: float = DEFAULT_PAD_RADIUS_M,
    layers: list[str] | None = None,
    constraints: LanderConstraints | None = None,
    labels_column: str = "label",
    layer_options: dict | None = None,
    scheduler: str | None = None,
    write_layers: bool = True,
    write_map: bool = True,
    seed: int = 0,
    quiet: bool = False,
) -> RankOutputs:
    """Rank candidate landing sites on a DEM and write the results (see module docs).

    Parameters
    ----------
    dem : path, optional
        DEM (GeoTIFF/COG/PDS). Default: the embedded LOLA Shackleton 200 m tile.
    sites : path, optional
        GeoJSON/GeoPackage/CSV of sites; default: Artemis III regions overlapping the DEM.
    grid : "auto", float or 0
        Fill polygon sites with landing pads (see :func:`prepare_sites`).
    layers : list of str, optional
        Layers to compute (default: every registered default layer).
    constraints : LanderConstraints, optional
        Lander thresholds (HLS defaults).
    labels_column : str
        Sites column holding user labels; used instead of the rule labels when present.
    layer_options : dict
        Passed to layer functions (``far_field``, ``observer_height_m``, ...).
    scheduler : str, optional
        Dask scheduler: threads (default), synchronous, processes, or ``tcp://HOST:PORT``.

    Raises
    ------
    LunarmapError
        Any bad input (CRS, files, sites, labels), with a message saying how to fix it.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    constraints = constraints or LanderConstraints()
    dem_path = Path(dem) if dem is not None else default_dem_path()
    elevation = open_dem(dem_path)
    _log(f"DEM {dem_path} ({elevation.sizes['x']}x{elevation.sizes['y']} px, {elevation.attrs['gsd']:g} m/px)", quiet)
    fps, notes = prepare_sites(elevation, sites_path=sites, grid=grid, pad_radius_m=pad_radius_m)
    for n in notes:
        _log(n, quiet)
    names = list(layers) if layers else default_layers()
    layer_options = dict(layer_options or {})
    layer_options["far_field"], ff_note = resolve_far_field(elevation, layer_options.get("far_field", "auto"))
    lazy = compute_layers(elevation, names, **layer_options)
    if "horizon" in lazy.attrs["layers_computed"]:
        notes.append(ff_note)
        _log(ff_note, quiet)
    timings["setup_s"] = time.perf_counter() - t0
    with dask_scheduler(scheduler) as client:
        t = time.perf_counter()
        ds = _compute(lazy, label=f"Computing layers: {', '.join(v for v in lazy.data_vars if v != 'elevation')}", quiet=quiet, client=client)
        timings["layers_s"] = time.perf_counter() - t
    t = time.perf_counter()
    feats = site_features(ds, fps, buffered=constraints.buffered_stats(), progress=not quiet)
    labels = fps[labels_column] if labels_column in fps.columns and fps[labels_column].notna().any() else None
    result = rank_sites(fps, feats, constraints=constraints, labels=labels, seed=seed)
    from .explain import add_top_factors

    table = add_top_factors(result.table, result.model, result.feature_names)
    timings["rank_s"] = time.perf_counter() - t
    notes = notes + result.notes
    files: dict[str, Path] = {}
    t = time.perf_counter()
    files.update(write_ranking(table, out, crs=elevation.rio.crs))
    with atomic_path(out / "model.json") as tmp:
        result.model.save_model(str(tmp))
    files["model"] = out / "model.json"
    if write_layers:
        files.update(write_layers_dir(ds, out / "layers", quiet=quiet))
    timings["write_s"] = time.perf_counter() - t
    if write_map:
        t = time.perf_counter()
        from .maps import save_map, site_map

        m = site_map(ds, table, title=f"lunarmap - {dem_path.name}")
        files["map"] = save_map(m, out / "map.html")
        timings["map_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    meta = {
        "dem": str(dem_path),
        "sites": str(sites) if sites else "Artemis III regions (tiles/artemis3_regions.geojson)",
        "grid": grid,
        "pad_radius_m": pad_radius_m,
        "layers": [v for v in ds.data_vars],
        "feature_names": result.feature_names,
        "constraints": asdict(constraints),
        "constraints_evaluated": result.table.attrs.get("constraints_evaluated", []),
        "label_source": result.label_source,
        "layer_options": {k: (v.attrs.get("source", "DataArray") if isinstance(v, xr.DataArray) else v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in layer_options.items()},
        "notes": notes,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "seed": seed,
        "n_sites": int(len(table)),
        "n_ranked": int(table["rank"].notna().sum()),
    }
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str))
    files["run"] = out / "run.json"
    return RankOutputs(result=result, table=table, layers=ds, out_dir=out, files=files, timings=timings, notes=notes)


OUTPUT_COLUMNS_FIRST = ["rank", "site_id", "name", "score", "label", "feasible", "failed_constraints", "tie", "status", "kind", "region", "lat", "lon", "x", "y"]


def tidy_table(table: pd.DataFrame) -> pd.DataFrame:
    """Order columns for output: identity and verdict first, then constraints, features, SHAP."""
    cols = [c for c in OUTPUT_COLUMNS_FIRST if c in table.columns]
    cols += sorted(c for c in table.columns if c.startswith("pass_"))
    cols += [c for c in ("suitability_index", "user_label", "top_factors") if c in table.columns]
    rest = [c for c in table.columns if c not in cols and c not in ("geometry", "top_factors_json", "_f")]
    return table[cols + rest + (["top_factors_json"] if "top_factors_json" in table.columns else [])]


def write_ranking(table, out: Path, *, crs) -> dict[str, Path]:
    """Write ranking.csv, ranking.geojson (lon/lat) and ranking.gpkg (DEM CRS), atomically."""
    import geopandas as gpd

    from .crs import MOON_GEOGRAPHIC

    files = {}
    t = tidy_table(pd.DataFrame(table))
    for c in t.columns:
        if str(t[c].dtype) == "boolean":
            t[c] = t[c].astype(object).where(t[c].notna(), None)
    with atomic_path(out / "ranking.csv") as tmp:
        t.to_csv(tmp, index=False, float_format="%.6g")
    files["csv"] = out / "ranking.csv"
    g = gpd.GeoDataFrame(t, geometry=table.geometry.values, crs=crs)
    with atomic_path(out / "ranking.gpkg") as tmp:
        g.to_file(tmp, driver="GPKG", layer="ranking")
    files["gpkg"] = out / "ranking.gpkg"
    gll = g.to_crs(MOON_GEOGRAPHIC)
    with atomic_path(out / "ranking.geojson") as tmp, warnings.catch_warnings():
        # GeoJSON cannot name a Moon CRS (RFC 7946 is WGS84-only); the docs say it is IAU_2015:30100
        warnings.filterwarnings("ignore", message=".*not representable in URN OGC format.*")
        tmp.write_text(gll.to_json(drop_id=True, na="null"))
    files["geojson"] = out / "ranking.geojson"
    return files


def write_layers_dir(ds: xr.Dataset, out: Path, *, names=None, quiet: bool = False) -> dict[str, Path]:
    """Write each layer of ``ds`` as ``out/NAME.tif`` (COG; 3-D layers such as ``horizon`` as multi-band)."""
    names = [n for n in (names or list(ds.data_vars)) if ds[n].dims[-2:] == ("y", "x") and ds[n].ndim in (2, 3)]
    files = {}
    it = names
    if not quiet:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="writing COGs", unit="layer")
    for n in it:
        files[f"layer:{n}"] = write_cog(ds[n], out / f"{n}.tif")
    return files


def run_layers(dem, names: list[str], out_dir, *, layer_options=None, scheduler=None, quiet=False) -> dict[str, Path]:
    """Compute the named layers on ``dem`` and write ``out_dir/NAME.tif`` for each (COG).

    ``layer_options["far_field"]`` defaults to ``"auto"`` (see :func:`resolve_far_field`).
    """
    elevation = open_dem(dem)
    layer_options = dict(layer_options or {})
    layer_options["far_field"], ff_note = resolve_far_field(elevation, layer_options.get("far_field", "auto"))
    lazy = compute_layers(elevation, names, **layer_options)
    if "horizon" in lazy.attrs["layers_computed"]:
        _log(ff_note, quiet)
    with dask_scheduler(scheduler) as client:
        ds = _compute(lazy[[n for n in names]], label=f"Computing {', '.join(names)}", quiet=quiet, client=client)
    ds = ds.rio.write_crs(elevation.rio.crs)
    return write_layers_dir(ds, Path(out_dir), names=names, quiet=quiet)


@dataclass
class Explanation:
    lat: float
    lon: float
    score: float
    base_value: float
    rank_equivalent: int | None
    n_ranked: int
    feasible: bool
    constraints: dict
    table: pd.DataFrame
    png: Path | None
    notes: list[str]

    def to_json(self) -> str:
        d = {
            "lat": self.lat,
            "lon": self.lon,
            "score": self.score,
            "base_value": self.base_value,
            "rank_equivalent": self.rank_equivalent,
            "n_ranked": self.n_ranked,
            "feasible": self.feasible,
            "constraints": self.constraints,
            "contributions": [
                {"feature": r.feature, "value": None if pd.isna(r.value) else float(r.value), "shap": float(r.shap)}
                for r in self.table.itertuples()
            ],
            "waterfall_png": str(self.png) if self.png else None,
            "notes": self.notes,
        }
        return json.dumps(d, indent=2)


def run_explain(
    lat: float,
    lon: float,
    *,
    dem=None,
    results_dir=DEFAULT_OUT,
    pad_radius_m: float = DEFAULT_PAD_RADIUS_M,
    png: str | os.PathLike | None = None,
    quiet: bool = False,
    **rank_kwargs,
) -> Explanation:
    """Score and explain a landing pad centred at ``lat``, ``lon`` (deg).

    Reuses the model and layers of a previous :func:`run_rank` in ``results_dir`` when they exist
    and were made from the same DEM; otherwise runs the ranking there first.

    Raises
    ------
    CoordinateError
        The coordinate is invalid or off the DEM.
    """
    from .explain import explanation_table, waterfall_png
    from .ranking import evaluate_constraints
    from .sites import pad_at

    results = Path(results_dir)
    dem_path = Path(dem) if dem is not None else default_dem_path()
    elevation = open_dem(dem_path)
    pad = pad_at(lat, lon, elevation, radius_m=pad_radius_m)  # validates the coordinate first
    meta_p = results / "run.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else None
    if meta is None or Path(meta["dem"]).resolve() != dem_path.resolve() or not (results / "model.json").exists():
        _log(f"No ranking for {dem_path.name} in {results}/: running `lunarmap rank` first.", quiet)
        run_rank(dem_path, out_dir=results, quiet=quiet, **rank_kwargs)
        meta = json.loads(meta_p.read_text())
    import xgboost as xgb

    model = xgb.XGBRegressor()
    model.load_model(str(results / "model.json"))
    ds = load_layers_dir(results / "layers", elevation)
    cons = LanderConstraints(**meta["constraints"])
    feats = site_features(ds, pad, buffered=cons.buffered_stats())
    row = pad.drop(columns=["status"]).join(feats)
    row, notes = evaluate_constraints(row, cons)
    names = meta["feature_names"]
    for c in names:
        if c not in row.columns:
            row[c] = np.nan
    tab, base, score = explanation_table(model, row.iloc[0], names)
    ranking = pd.read_csv(results / "ranking.csv")
    ranked = ranking[ranking["rank"].notna()]
    feasible = bool(row["feasible"].iloc[0])
    peers = ranked[ranked["feasible"].astype(str).str.lower() == str(feasible).lower()]
    better = int((ranked["feasible"].astype(str).str.lower() == "true").sum()) if not feasible else 0
    rank_eq = better + int((peers["score"] > score).sum()) + 1
    cons_out = {c[len("pass_"):]: (None if pd.isna(row[c].iloc[0]) else bool(row[c].iloc[0])) for c in row.columns if c.startswith("pass_")}
    png_path = Path(png) if png else results / f"explain_{lat:.4f}_{lon:.4f}.png"
    waterfall_png(tab, base, score, png_path, title=f"Pad at {lat:.4f}, {lon:.4f}: score {score:.3f}")
    return Explanation(lat=lat, lon=lon, score=score, base_value=base, rank_equivalent=rank_eq, n_ranked=len(ranked),
                       feasible=feasible, constraints=cons_out, table=tab, png=png_path, notes=notes)


def load_layers_dir(layers_dir: Path, elevation) -> xr.Dataset:
    """Read the COG layers written by :func:`run_rank` back onto the DEM grid."""
    import rioxarray

    specs = load_providers()
    out = {"elevation": elevation.compute()}
    for p in sorted(Path(layers_dir).glob("*.tif")):
        name = p.stem
        if name == "elevation" or name not in specs or not (specs[name].stats or specs[name].fractions):
            continue  # not a site feature (e.g. the multi-band ``horizon``)
        da = rioxarray.open_rasterio(p, masked=True).squeeze("band", drop=True)
        da = da.assign_coords(x=elevation.x, y=elevation.y) if da.shape == elevation.shape else da.rio.reproject_match(elevation)
        out[name] = da.astype("float32").compute()
    ds = xr.Dataset(out).rio.write_crs(elevation.rio.crs)
    return ds
