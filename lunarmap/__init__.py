"""lunarmap: where it is safe and useful to land near the Moon's poles, and why.

Submodules (imported on demand, so ``import lunarmap`` stays light):

- :mod:`lunarmap.io` — open DEMs as Dask-chunked xarray (Moon CRS checked), write COGs
- :mod:`lunarmap.terrain` — slope, aspect, roughness, hillshade
- :mod:`lunarmap.horizon`, :mod:`lunarmap.ephemeris`, :mod:`lunarmap.illumination` — horizons,
  Sun/Earth from SPICE kernels, illumination fraction, longest night, PSR, Earth visibility
- :mod:`lunarmap.synth`, :mod:`lunarmap.models`, :mod:`lunarmap.tiling`, :mod:`lunarmap.craters` —
  synthetic training data, the crater U-Net, tiled inference, crater catalogue and density
- :mod:`lunarmap.maps` — self-contained offline folium maps in polar map coordinates
- :mod:`lunarmap.layers` — the layer registry and :func:`~lunarmap.layers.compute_layers`
- :mod:`lunarmap.sites`, :mod:`lunarmap.features`, :mod:`lunarmap.ranking`, :mod:`lunarmap.explain`
- :mod:`lunarmap.pipeline` — the ``rank``/``layers``/``explain`` jobs; :mod:`lunarmap.cli` the CLI
"""

__version__ = "0.1.0"

from .errors import LunarmapError  # noqa: E402,F401
