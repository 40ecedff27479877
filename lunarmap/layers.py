"""The layer catalogue: named raster layers computed lazily from the DEM, on one grid.

Every layer lunarmap can compute is registered here (by the module that computes it) with its
units, long name, dependencies and the per-site features it yields. :func:`compute_layers`
resolves dependencies and returns one ``xarray.Dataset``; :mod:`lunarmap.features` turns each
registered layer's ``features`` into per-site columns. Adding a layer therefore adds features
without touching the ranking code.

Registering a layer (in the module that computes it)::

    from .layers import register_layer

    @register_layer("slope", units="deg", long_name="Horn (1981) slope",
                    stats=("mean", "p95", "max"), fractions=(("gt", 8.0),))
    def _slope_layer(ctx):
        return slope(ctx.elevation)

``ctx`` is a :class:`LayerContext`: ``ctx.elevation`` (the DEM DataArray), ``ctx.get(name)``
(another layer, computed once and cached), ``ctx.options`` (user options such as
``observer_height_m`` or ``far_field``: a coarser regional DEM DataArray).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from .errors import LunarmapError


@dataclass(frozen=True)
class LayerSpec:
    """A registered layer.

    Attributes
    ----------
    name : str
        Variable name in the layer Dataset (DESIGN.md catalogue; names are API).
    func : callable
        ``func(ctx: LayerContext) -> xarray.DataArray`` on the DEM grid (dims ``("y","x")``,
        or ``(extra, "y", "x")`` for e.g. ``horizon``), lazy where possible.
    units, long_name : str
    requires : tuple of str
        Layers this one needs (computed first).
    stats : tuple of str
        Per-site zonal statistics: ``"mean"``, ``"min"``, ``"max"``, ``"std"``, ``"p05"``,
        ``"p95"`` (any ``"pNN"``). Empty for layers that are not site features.
    fractions : tuple of (op, threshold)
        Per-site fraction of footprint pixels with ``layer op threshold`` (``op`` in
        ``"gt"``, ``"ge"``, ``"lt"``, ``"le"``), e.g. ``(("gt", 8.0),)`` for slope.
    default : bool
        Part of the default layer set of ``lunarmap rank``.
    higher_is_better : bool or None
        Direction used in docs/maps (informational; the ranking model learns its own).
    merit : (worst, best) or None
        Figure of merit for the rule-based suitability label: the site mean of this layer is
        mapped linearly from ``worst`` (0) to ``best`` (1), clipped. ``None``: not a merit.
    """

    name: str
    func: Callable[["LayerContext"], xr.DataArray]
    units: str
    long_name: str
    requires: tuple[str, ...] = ()
    stats: tuple[str, ...] = ("mean", "p95")
    fractions: tuple[tuple[str, float], ...] = ()
    default: bool = True
    higher_is_better: bool | None = None
    merit: tuple[float, float] | None = None


LAYERS: dict[str, LayerSpec] = {}

# Modules that register layers; imported on first use so `import lunarmap.layers` stays light.
_PROVIDERS = (
    "lunarmap.terrain",
    "lunarmap.illumination",
    "lunarmap.craters",
)


def register_layer(
    name: str,
    *,
    units: str,
    long_name: str,
    requires: tuple[str, ...] = (),
    stats: tuple[str, ...] = ("mean", "p95"),
    fractions: tuple[tuple[str, float], ...] = (),
    default: bool = True,
    higher_is_better: bool | None = None,
    merit: tuple[float, float] | None = None,
):
    """Decorator registering ``func(ctx) -> DataArray`` as layer ``name`` (see module docs)."""

    def deco(func):
        LAYERS[name] = LayerSpec(
            name=name,
            func=func,
            units=units,
            long_name=long_name,
            requires=tuple(requires),
            stats=tuple(stats),
            fractions=tuple(fractions),
            default=default,
            higher_is_better=higher_is_better,
            merit=None if merit is None else (float(merit[0]), float(merit[1])),
        )
        return func

    return deco


def load_providers() -> dict[str, LayerSpec]:
    """Import every module that registers layers; return the registry."""
    for mod in _PROVIDERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside the module
                raise
    return LAYERS


def available_layers() -> list[str]:
    """Names of all registered layers."""
    return sorted(load_providers())


def default_layers() -> list[str]:
    """Names of the layers ``lunarmap rank`` computes by default."""
    return [n for n, s in load_providers().items() if s.default]


class UnknownLayerError(LunarmapError):
    """A requested layer name is not registered."""


@dataclass
class LayerContext:
    """What a layer function sees: the DEM, other layers (cached), and user options."""

    elevation: xr.DataArray
    options: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, xr.DataArray] = field(default_factory=dict)
    _stack: list[str] = field(default_factory=list)

    def get(self, name: str) -> xr.DataArray:
        """Return layer ``name`` (lazy), computing its graph once."""
        if name == "elevation":
            return self.elevation
        if name in self._cache:
            return self._cache[name]
        specs = load_providers()
        if name not in specs:
            raise UnknownLayerError(
                f"Unknown layer {name!r}. Available layers: {', '.join(['elevation', *sorted(specs)])}."
            )
        if name in self._stack:
            raise LunarmapError(f"Layer dependency cycle: {' -> '.join([*self._stack, name])}")
        spec = specs[name]
        self._stack.append(name)
        try:
            for dep in spec.requires:
                self.get(dep)
            da = spec.func(self)
        finally:
            self._stack.pop()
        da = da.rename(name)
        da.attrs = {**da.attrs, "units": spec.units, "long_name": spec.long_name}
        if self.elevation.rio.crs is not None and da.rio.crs is None:
            da = da.rio.write_crs(self.elevation.rio.crs)
        self._cache[name] = da
        return da


def compute_layers(
    elevation: xr.DataArray,
    names: list[str] | tuple[str, ...] | None = None,
    **options: Any,
) -> xr.Dataset:
    """Build the lazy layer Dataset for ``names`` (default: :func:`default_layers`).

    Parameters
    ----------
    elevation : xarray.DataArray
        DEM from :func:`lunarmap.io.open_dem` (dims ``("y","x")``, m, projected Moon CRS).
    names : list of str, optional
        Layer names; ``"elevation"`` is always included.
    **options
        Passed to layer functions via ``ctx.options`` (e.g. ``observer_height_m``,
        ``far_field``, ``roughness_window_m``).

    Returns
    -------
    xarray.Dataset
        ``elevation``, each requested layer and the dependencies that are site features, lazy
        (Dask). ``attrs["layers_computed"]`` names every layer in the graph, intermediates such
        as ``horizon`` included.

    Raises
    ------
    UnknownLayerError
        A name is not registered.
    """
    ctx = LayerContext(elevation=elevation, options=dict(options))
    names = default_layers() if names is None else list(names)
    specs = load_providers()
    out = {"elevation": elevation}
    for n in names:
        out[n] = ctx.get(n)
    # dependencies computed on the way are kept when they are site features (2-D, with stats);
    # intermediate cubes such as ``horizon`` stay lazy inside their consumers' graphs instead of
    # being materialised and written
    for n, da in ctx._cache.items():
        spec = specs.get(n)
        if n not in out and spec is not None and (spec.stats or spec.fractions):
            out[n] = da
    ds = xr.Dataset(out)
    if elevation.rio.crs is not None:
        ds = ds.rio.write_crs(elevation.rio.crs)
    ds.attrs["gsd"] = elevation.attrs.get("gsd")
    ds.attrs["layers_computed"] = sorted(ctx._cache)  # every layer in the graph, intermediates included
    return ds
