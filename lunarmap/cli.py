"""``lunarmap`` command line (minimal stand-in in branch crater-inference; main owns this file)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch busy-waits otherwise (ENVIRONMENT.md)

import typer

app = typer.Typer(name="lunarmap", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _main() -> None:
    """Lunar south-pole landing-site analysis."""


# --- command: craters (from branch crater-inference) ---
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402


@app.command("craters")
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

    Example: lunarmap craters --dem tiles/shackleton_ridge_lola10m_200m_51km.tif --out craters/
    """
    from .craters import run_craters
    from .errors import LunarmapError

    try:
        sc = tuple(int(s) for s in scales.split(",") if s.strip())
    except ValueError:
        typer.echo(f"lunarmap: error: --scales must be comma-separated integers such as 1,2,4, got {scales!r}", err=True)
        raise typer.Exit(code=2) from None
    try:
        res = run_craters(dem, out, model=weights, chip=chip, scales=sc, batch_size=batch_size, d_min_m=d_min,
                          radius_m=radius, progress=progress, tta=tta)
    except (LunarmapError, FileNotFoundError) as exc:
        if os.environ.get("LUNARMAP_DEBUG"):
            raise
        typer.echo(f"lunarmap: error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{res['n_craters']} craters")
    for p in res["paths"].values():
        typer.echo(f"wrote {p}")
