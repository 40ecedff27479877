"""``lunarmap`` command line: rank sites, export layers, explain a coordinate.

Every command prints where it wrote its results. Bad input exits with status 2 and a short
message saying what is wrong and how to fix it (no traceback); ``LUNARMAP_DEBUG=1`` shows the
traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch/xgboost busy-wait otherwise (ENVIRONMENT.md)

import typer

from .errors import LunarmapError

app = typer.Typer(
    name="lunarmap",
    help=(
        "Lunar south-pole landing-site analysis: hazard layers, a ranked site table and SHAP explanations.\n\n"
        "Examples:\n\n"
        "  lunarmap rank                                   # embedded LOLA Shackleton DEM, Artemis III regions\n\n"
        "  lunarmap rank --dem my_dem.tif --sites sites.geojson --out results/\n\n"
        "  lunarmap layers --dem my_dem.tif --layers slope,roughness --out layers/\n\n"
        "  lunarmap explain --lat -89.45 --lon -137"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DemOpt = typer.Option(None, "--dem", help="DEM GeoTIFF/COG or PDS .IMG in a projected Moon CRS (metres). Default: embedded LOLA Shackleton 200 m tile.")
OutOpt = typer.Option(Path("lunarmap_out"), "--out", help="Output folder.")
SchedOpt = typer.Option(None, "--scheduler", help="Dask scheduler: threads (default), synchronous, processes, or tcp://HOST:PORT of a dask.distributed cluster.")


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def handle_errors(func):
    """Turn LunarmapError (and missing files) into a one-paragraph message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (LunarmapError, FileNotFoundError, PermissionError) as exc:
            if os.environ.get("LUNARMAP_DEBUG"):
                raise
            _console().print(f"[bold red]lunarmap: error:[/bold red] {exc}", highlight=False)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            _console().print("[yellow]Interrupted; no partial output was left in place.[/yellow]")
            raise typer.Exit(code=130) from None

    return wrapper


def _short(failed: str) -> str:
    """Short constraint names for the terminal table."""
    return failed.replace("earth_visibility", "earth").replace("illumination", "sun").replace("nan", "")


def _split(names: Optional[str]) -> Optional[list[str]]:
    if not names:
        return None
    return [n.strip() for n in names.split(",") if n.strip()]


def _layer_options(far_field: str, observer_height: Optional[float], start: Optional[str] = None,
                   end: Optional[str] = None, step: Optional[float] = None, n_azimuths: Optional[int] = None,
                   products: Optional[list[str]] = None) -> dict:
    opts: dict = {"far_field": far_field}
    if products:
        prod = {}
        for item in products:
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise LunarmapError(
                    f"--illumination-product takes LAYER=PATH (e.g. illumination_fraction=AVGVISIB_85S_060M.TIF), got {item!r}."
                )
            prod[name.strip()] = path.strip()
        opts["illumination_products"] = prod
    for key, val in (("observer_height_m", observer_height), ("start", start), ("end", end),
                     ("step_hours", step), ("n_azimuths", n_azimuths)):
        if val is not None:
            opts[key] = val
    return opts


FarFieldOpt = typer.Option("auto", "--far-field", help="Regional DEM for distant horizons: a path, 'auto' (embedded 480 m / 1600 m LOLA DEM that covers the DEM) or 'none'.")
StartOpt = typer.Option(None, "--start", help="Illumination window start, UTC (default 2025-01-01: one 18.6-yr nodal cycle).")
EndOpt = typer.Option(None, "--end", help="Illumination window end, UTC (default 2043-08-12).")
StepOpt = typer.Option(None, "--step", help="Illumination time step in hours (default 6).")
NazOpt = typer.Option(None, "--n-azimuths", help="Horizon azimuths (default 360).")
ProductOpt = typer.Option(None, "--illumination-product", help="Use a NASA product instead of computing a layer: LAYER=PATH, LAYER one of illumination_fraction (GDRVIS AVGVISIB), earth_visibility_fraction (AVGVISIB_*_EARTH), psr (GDRPSR LPSR). Repeatable.")


@app.command()
@handle_errors
def rank(
    dem: Optional[Path] = DemOpt,
    sites: Optional[str] = typer.Option(None, "--sites", help="GeoJSON/GeoPackage (points or polygons, 'name' property) or CSV (lat, lon, name[, radius_m, label]); 'dem' fills the whole DEM with pads. Default: NASA Artemis III regions overlapping the DEM."),
    out: Path = OutOpt,
    grid: str = typer.Option("auto", "--grid", help="Fill polygon sites with landing pads every SPACING metres; 'auto' (about 1000 pads) or 0 to rank polygons whole."),
    pad_radius: float = typer.Option(100.0, "--pad-radius", help="Landing pad radius (m)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layers to compute (default: all default layers; see `lunarmap list-layers`)."),
    far_field: str = FarFieldOpt,
    observer_height: Optional[float] = typer.Option(None, "--observer-height", help="Observer height above ground (m) for horizon-based layers (default 2)."),
    start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt,
    step: Optional[float] = StepOpt,
    n_azimuths: Optional[int] = NazOpt,
    illumination_product: Optional[list[str]] = ProductOpt,
    slope_max: float = typer.Option(8.0, "--slope-max", help="Lander slope limit over the pad (deg; HLS 8)."),
    slope_clearance: float = typer.Option(100.0, "--slope-clearance", help="Required distance from steeper ground (m; HLS 100)."),
    sun_min: float = typer.Option(0.33, "--sun-min", help="Minimum illumination fraction (HLS 0.33)."),
    earth_min: float = typer.Option(0.50, "--earth-min", help="Minimum Earth visibility fraction (HLS 0.50)."),
    labels_column: str = typer.Option("label", "--labels-column", help="Sites column with your own labels (numbers, higher = better, or good/marginal/poor/infeasible); replaces the rule labels."),
    no_map: bool = typer.Option(False, "--no-map", help="Do not write map.html."),
    no_layers: bool = typer.Option(False, "--no-layers", help="Do not write the layer GeoTIFFs."),
    scheduler: Optional[str] = SchedOpt,
    seed: int = typer.Option(0, "--seed", help="Random seed of the ranking model."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
):
    """Rank candidate landing sites and write ranking.csv/.geojson/.gpkg, layer COGs and map.html.

    Example: lunarmap rank --dem tiles/shackleton_zoom_lola10m_40m_10km.tif --grid 500 --out zoom_results
    """
    from rich.console import Console
    from rich.table import Table

    from .pipeline import run_rank
    from .ranking import LanderConstraints

    res = run_rank(
        dem,
        sites=sites,
        out_dir=out,
        grid=grid,
        pad_radius_m=pad_radius,
        layers=_split(layers),
        constraints=LanderConstraints(slope_max_deg=slope_max, slope_clearance_m=slope_clearance, illumination_min=sun_min, earth_visibility_min=earth_min),
        labels_column=labels_column,
        layer_options=_layer_options(far_field, observer_height, start, end, step, n_azimuths, illumination_product),
        scheduler=scheduler,
        write_map=not no_map,
        write_layers=not no_layers,
        seed=seed,
        quiet=quiet,
    )
    con = Console()
    ranked = res.table[res.table["rank"].notna()]
    t = Table(title=f"Top sites ({len(ranked)} ranked of {len(res.table)})")
    for c in ("rank", "name", "score", "label", "fails", "lat, lon", "main SHAP factor"):
        t.add_column(c, overflow="fold")
    for _, r in ranked.head(10).iterrows():
        main = str(r.get("top_factors", "")).split(";")[0]
        t.add_row(str(r["rank"]), str(r["name"]), f"{r['score']:.3f}", str(r["label"]), _short(str(r.get("failed_constraints", "") or "")) or "-",
                  f"{r['lat']:.3f}, {r['lon']:.2f}", main)
    con.print(t)
    for n in res.notes:
        con.print(f"- {n}", highlight=False)
    con.print(f"Results in {res.out_dir}/ : " + ", ".join(sorted({p.name if p.parent == res.out_dir else f'{p.parent.name}/' for p in res.files.values()})))
    con.print(f"Wall time {res.timings['total_s']:.1f} s")


@app.command()
@handle_errors
def layers(
    dem: Optional[Path] = DemOpt,
    layers: str = typer.Option("slope,aspect,roughness,hillshade", "--layers", help="Comma-separated layer names (see `lunarmap list-layers`)."),
    out: Path = typer.Option(Path("lunarmap_layers"), "--out", help="Output folder: one DIR/NAME.tif COG per layer."),
    far_field: str = FarFieldOpt,
    observer_height: Optional[float] = typer.Option(None, "--observer-height", help="Observer height above ground (m; default 2)."),
    start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt,
    step: Optional[float] = StepOpt,
    n_azimuths: Optional[int] = NazOpt,
    illumination_product: Optional[list[str]] = ProductOpt,
    scheduler: Optional[str] = SchedOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Compute layers on a DEM and write each as a Cloud-Optimized GeoTIFF (Moon CRS, units, description).

    Example: lunarmap layers --dem tiles/shackleton_ridge_lola10m_200m_51km.tif --layers slope,roughness --out layers/
    """
    from rich.console import Console

    from .pipeline import run_layers
    from .sites import default_dem_path

    names = _split(layers) or []
    files = run_layers(dem or default_dem_path(), names, out, layer_options=_layer_options(far_field, observer_height, start, end, step, n_azimuths, illumination_product), scheduler=scheduler, quiet=quiet)
    for k, p in files.items():
        Console().print(f"{k.split(':', 1)[-1]}: {p}")


@app.command("list-layers")
def list_layers():
    """List the layers lunarmap can compute, with units."""
    from .layers import load_providers

    for name, spec in sorted(load_providers().items()):
        typer.echo(f"{name:28s} {spec.units:8s} {'(default) ' if spec.default else ''}{spec.long_name}")


@app.command()
@handle_errors
def explain(
    lat: float = typer.Option(..., "--lat", help="Planetocentric latitude (deg), e.g. -89.45.", allow_dash=True),
    lon: float = typer.Option(..., "--lon", help="East longitude (deg, -180..180 or 0..360)."),
    dem: Optional[Path] = DemOpt,
    out: Path = typer.Option(Path("lunarmap_out"), "--out", help="Results folder of a previous `lunarmap rank` (it is run there first if missing)."),
    pad_radius: float = typer.Option(100.0, "--pad-radius", help="Pad radius (m)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Where to write the SHAP waterfall PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Score a landing pad centred on a coordinate and explain the score with SHAP.

    Example: lunarmap explain --lat -89.45 --lon -137
    """
    from rich.console import Console
    from rich.table import Table

    from .pipeline import run_explain

    e = run_explain(lat, lon, dem=dem, results_dir=out, pad_radius_m=pad_radius, png=png, quiet=quiet or as_json)
    if as_json:
        typer.echo(e.to_json())
        return
    con = Console()
    con.print(f"Pad at lat {lat:.4f}, lon {lon:.4f} (radius {pad_radius:g} m): score [bold]{e.score:.3f}[/bold], "
              f"would rank {e.rank_equivalent} of {e.n_ranked + 1}; feasible: {e.feasible}")
    con.print("Constraints: " + ", ".join(f"{k}: {'not evaluated' if v is None else ('pass' if v else 'FAIL')}" for k, v in e.constraints.items()))
    t = Table(title=f"SHAP contributions (log-odds; base value {e.base_value:+.3f})")
    t.add_column("feature")
    t.add_column("value", justify="right")
    t.add_column("contribution", justify="right")
    for r in e.table.itertuples():
        t.add_row(r.feature, "nan" if r.value != r.value else f"{r.value:.4g}", f"{r.shap:+.3f}")
    con.print(t)
    for n in e.notes:
        con.print(f"- {n}", highlight=False)
    con.print(f"Waterfall plot: {e.png}")


@app.command("craters")
@handle_errors
def craters_cmd(
    dem: Path = typer.Option(..., "--dem", help="DEM GeoTIFF/COG in a projected Moon CRS (metres)."),
    out: Path = typer.Option(Path("lunarmap_craters"), "--out", help="Output folder."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Crater-network weights (.safetensors); default: shipped."),
    chip: int = typer.Option(256, "--chip", help="Chip edge in pixels (multiple of 32)."),
    scales: str = typer.Option("1,2,4,8", "--scales", help="DEM pyramid levels (downsampling factors), comma-separated."),
    batch_size: int = typer.Option(8, "--batch-size", help="Chips per forward pass."),
    d_min: Optional[float] = typer.Option(None, "--d-min", help="crater_density: minimum diameter (m); default 10 x GSD."),
    radius: Optional[float] = typer.Option(None, "--radius", help="crater_density: counting radius (m); default max(25 x GSD, 2 x D_min)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar over chips."),
    tta: bool = typer.Option(False, "--tta", help="Test-time augmentation (average over 4 flips; 4x slower, better recall)."),
) -> None:
    """Detect craters on a DEM: crater_probability.tif, craters.gpkg, craters.csv, crater_density.tif.

    Example: lunarmap craters --dem tiles/lola_ldem256_south_polarstereo_1600m.tif --out craters/
    """
    from .craters import run_craters

    try:
        sc = tuple(int(s) for s in scales.split(",") if s.strip())
    except ValueError:
        raise LunarmapError(f"--scales must be comma-separated integers such as 1,2,4, got {scales!r}") from None
    res = run_craters(dem, out, model=weights, chip=chip, scales=sc, batch_size=batch_size, d_min_m=d_min,
                      radius_m=radius, progress=progress, tta=tta)
    typer.echo(f"{res['n_craters']} craters")
    for p in res["paths"].values():
        typer.echo(f"wrote {p}")

# --- command: sun (from branch illumination) ---
@app.command("sun")
@handle_errors
def sun(
    lat: float = typer.Option(..., "--lat", help="Latitude (deg, planetocentric; south negative)."),
    lon: float = typer.Option(..., "--lon", help="East longitude (deg, -180..180 or 0..360)."),
    dem: Optional[Path] = typer.Option(None, "--dem", help="DEM in a projected Moon CRS. Default: embedded LOLA 480 m south-pole DEM with the 1600 m polar DEM as far field."),
    far_field: Optional[Path] = typer.Option(None, "--far-field", help="Coarser regional DEM (same CRS) for distant horizons."),
    start: Optional[str] = typer.Option(None, "--start", help="UTC start (default 2025-01-01: one 18.6-yr nodal cycle)."),
    end: Optional[str] = typer.Option(None, "--end", help="UTC end, exclusive (default 2043-08-12)."),
    step: Optional[float] = typer.Option(None, "--step", help="Time step in hours (default 6)."),
    observer_height: float = typer.Option(2.0, "--observer-height", help="Observer height above ground (m); 2 m as in Glaser et al. 2014."),
    out: Path = typer.Option(Path("sun_timeline"), "--out", help="Output folder (CSV, PNG, JSON)."),
):
    """Sun and Earth above the local horizon at one coordinate over time (CSV + PNG + summary).

    Example: lunarmap sun --lat -89.45 --lon -137 --start 2025-01-01 --end 2026-01-01 --out ridge/
    """
    from .illumination import run_sun_timeline

    df, files = run_sun_timeline(lat, lon, dem=dem, far_field=far_field, start=start, end=end, step_hours=step,
                                 observer_height_m=observer_height, out=out)
    s = df.attrs["summary"]
    typer.echo(
        f"Pixel {s['lat']:.4f}, {s['lon']:.4f}E (elevation {s['elevation_m']:.0f} m, observer +{s['observer_height_m']:g} m), "
        f"{s['start']} .. {s['end']} every {s['step_hours']:g} h:\n"
        f"  Sun visible (mean disk fraction) {100 * s['illumination_fraction']:.1f} %, longest night {s['longest_night_h']:.0f} h "
        f"(resolution {s['step_hours']:g} h), permanently shadowed: {s['psr']}\n"
        f"  Earth visible {100 * s['earth_visibility_fraction']:.1f} %, Sun and Earth {100 * s['sun_earth_fraction']:.1f} %"
    )
    for k, p in files.items():
        typer.echo(f"Wrote {k}: {p}")
# --- end command: sun ---


def main():  # pragma: no cover
    app(prog_name="lunarmap")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

