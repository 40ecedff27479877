"""Synthetic lunar DEM chips with craters, for training and testing the crater network.

A chip is fractal background terrain (fractional Brownian motion) on which a crater population
is rendered oldest first, each crater with published lunar morphometry, a diffusive degradation
state and the newer-on-older overprinting of a real cratered surface. The labels are crater
**rim rings** (as in DeepMoon, Silburt et al. 2019) and the list of craters.

Everything is reproducible from an integer seed: the same seed gives bit-identical arrays.

Model of a chip (all choices, with sources)
-------------------------------------------
Background terrain
    fBm by spectral synthesis, power spectrum ``P(k) ∝ k^-(2H+2)``, Hurst exponent ``H`` ~ 0.75-0.95
    (lunar highlands ~0.8-0.95 at 0.1-1 km baselines, Rosenburg et al. 2011), scaled to an RMS
    slope that falls with baseline as ``s(L) = s0 (L / L0)^(H-1)`` (self-affine scaling,
    Rosenburg et al. 2011; ``s0`` ~ 7 deg at ``L0`` = 17 m for rough highlands).
Crater sizes
    cumulative power law ``N(>D) ∝ D^-b`` with ``b`` ~ 1.8-2.6: ``b ≈ 2`` is the equilibrium slope
    of small lunar craters (Gault 1970; Trask 1966) and the production function of Neukum et al.
    (2001) has cumulative slopes ~ -2 to -3 at 1-100 km; crater densities per chip span young to
    saturated surfaces (Robbins 2019 catalogue densities). Large craters are deliberately
    over-represented (``p_large``) so a 256-px chip often holds one 40-110 px crater to learn
    from; this is a training choice, not a physical claim.
Simple craters (D < ``transition_diameter_m``, 15 km on the Moon, Pike 1977)
    parabolic bowl, depth below rim crest ``d = 0.196 D^1.010`` and rim height above the
    surroundings ``h = 0.036 D^1.014`` (D, d, h in km; Pike 1977), so ``d/D ≈ 0.2``.
Complex craters
    ``d = 1.044 D^0.301``, ``h = 0.236 D^0.399`` (km; Pike 1977), flat floor of diameter
    ``D_f = 0.187 D^1.249`` (Pike 1977, capped at 0.7 D), terraced walls (2-4 steps), and for
    D > 26 km a central peak of base diameter ~0.22 D (Hale & Head 1979) and height 0.1-0.4 d
    (the range of lunar central peaks, Hale & Head 1979; Krüger et al. 2018).
Ejecta
    thickness decays as ``(r/R)^-3`` outside the rim (McGetchin et al. 1973), continuous with the
    rim height at ``r = R`` and tapered to zero at ``r = 3R``.
Shape irregularity
    rim radius modulated by a few low azimuthal harmonics (<= 3 % of R), as real rims are not
    perfect circles.
Degradation
    linear hillslope diffusion of each crater's relief (Fassett & Thomson 2014): the solution of
    the diffusion equation after ``κt`` is a Gaussian blur with ``σ = sqrt(2 κt)``. The column
    ``degradation`` is the dimensionless ``κt / R²``. Each chip has one ``κt`` budget; crater ages
    are uniform, so small old craters are erased and large young ones stay fresh, as on the Moon.
    The blur is applied to the crater's own relief only (the background is not re-diffused).
Overprinting
    craters are rendered oldest first; a new crater replaces the older surface inside its rim
    (its floor sits at the mean pre-impact level) and erases older rims from the label mask.
Noise
    white noise of 0.3-2 m (LOLA ranging precision ~ 1 m, Smith et al. 2010) and a small
    sub-pixel blur (gridding).

Labels: ``rim_mask`` marks pixels whose distance to the crater centre is within
``rim_halfwidth_px`` (default 1 px, so rings ~2 px wide) of the crater's rim radius, for craters
with ``diameter_px`` >= ``label_min_px`` and ``degradation`` <= ``label_max_degradation``.

References
----------
- Fassett, C. I., & Thomson, B. J. (2014). Crater degradation on the lunar maria: topographic
  diffusion and the rate of erosion on the Moon. JGR Planets 119, 2255-2271.
- Gault, D. E. (1970). Saturation and equilibrium conditions for impact cratering on the lunar
  surface. Radio Science 5, 273-291.
- Hale, W., & Head, J. W. (1979). Central peaks in lunar craters: morphology and morphometry.
  Proc. Lunar Planet. Sci. Conf. 10, 2623-2633.
- Krüger, T., Hergarten, S., & Kenkmann, T. (2018). Deriving morphometric parameters and the
  simple-to-complex transition diameter from a high-resolution, global database of fresh lunar
  impact craters (D ≥ ~3 km). JGR Planets 123, 2667-2690.
- McGetchin, T. R., Settle, M., & Head, J. W. (1973). Radial thickness variation in impact
  crater ejecta: implications for lunar basin deposits. EPSL 20, 226-236.
- Neukum, G., Ivanov, B. A., & Hartmann, W. K. (2001). Cratering records in the inner solar
  system in relation to the lunar reference system. Space Sci. Rev. 96, 55-86.
- Pike, R. J. (1977). Size-dependence in the shape of fresh impact craters on the Moon. In
  Impact and Explosion Cratering, 489-509.
- Robbins, S. J. (2019). A new global database of lunar impact craters >1-2 km. JGR Planets 124,
  871-892.
- Rosenburg, M. A., et al. (2011). Global surface slopes and roughness of the Moon from the Lunar
  Orbiter Laser Altimeter. JGR 116, E02001.
- Silburt, A., et al. (2019). Lunar crater identification via deep learning. Icarus 317, 27-38.
- Smith, D. E., et al. (2010). Initial observations from the Lunar Orbiter Laser Altimeter
  (LOLA). GRL 37, L18204.
- Trask, N. J. (1966). Size and spatial distribution of craters estimated from Ranger
  photographs. JPL Tech. Rep. 32-800, 252-263.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

__all__ = [
    "SynthChip",
    "fractal_terrain",
    "lunar_rms_slope_deg",
    "crater_morphometry",
    "synth_crater_chip",
    "synth_dataset",
    "stack_chips",
    "TRANSITION_DIAMETER_M",
]

#: Simple-to-complex transition diameter on the Moon, metres (Pike 1977: ~15-20 km).
TRANSITION_DIAMETER_M = 15_000.0
#: Ejecta are tapered to zero at this many crater radii.
_EJECTA_EXTENT_R = 3.0
#: Columns of :attr:`SynthChip.craters`.
CRATER_COLUMNS = (
    "x_px", "y_px", "diameter_px", "diameter_m", "depth_m", "rim_height_m", "kind",
    "degradation", "age_rank", "labelled", "rim_visible_fraction",
)


@dataclass
class SynthChip:
    """One synthetic DEM chip and its labels.

    Attributes
    ----------
    elevation : ndarray (H, W) float32
        Heights in metres (arbitrary datum; mean ~0). Row 0 is the top (north-up raster order).
    rim_mask : ndarray (H, W) uint8
        1 on crater rim rings of the labelled craters, else 0.
    craters : pandas.DataFrame
        One row per rendered crater (oldest first), columns ``x_px, y_px`` (centre, pixel
        coordinates: column, row; pixel centres are integers), ``diameter_px``, ``diameter_m``,
        ``depth_m`` (rim crest to floor, fresh), ``rim_height_m`` (fresh), ``kind``
        ('simple'|'complex'), ``degradation`` (κt/R², dimensionless), ``age_rank`` (0 = oldest),
        ``labelled`` (bool: large and fresh enough to be labelled AND with rim-ring pixels inside
        the chip, i.e. drawn in ``rim_mask``; centres may lie up to 10 % of the chip outside it),
        ``rim_visible_fraction`` (share of its rim
        ring, inside the chip, that survives in ``rim_mask`` after younger craters; 0 when not
        labelled).
    gsd : float
        Ground sampling distance, metres per pixel.
    seed : int
        The seed that reproduces this chip.
    params : dict
        The chip-level random parameters drawn (Hurst exponent, SFD slope, ...).
    """

    elevation: np.ndarray
    rim_mask: np.ndarray
    craters: pd.DataFrame
    gsd: float
    seed: int
    params: dict = field(default_factory=dict)


def lunar_rms_slope_deg(gsd: float, *, hurst: float = 0.85, s0_deg: float = 7.0, l0_m: float = 17.0) -> float:
    """RMS slope (degrees) of self-affine lunar terrain at baseline ``gsd``.

    ``tan s(L) = tan s0 · (L / L0)^(H-1)`` (self-affine scaling of RMS slope with baseline,
    Rosenburg et al. 2011; ``s0`` ≈ 7° at 17 m is typical of rough highlands there).

    Parameters
    ----------
    gsd : float
        Baseline, metres (> 0).
    hurst, s0_deg, l0_m : float
        Hurst exponent, reference RMS slope (deg) and its baseline (m).
    """
    if not gsd > 0:
        raise ValueError(f"gsd must be > 0 metres, got {gsd!r}")
    return float(np.degrees(np.arctan(np.tan(np.radians(s0_deg)) * (gsd / l0_m) ** (hurst - 1.0))))


def fractal_terrain(
    size: int,
    gsd: float,
    *,
    seed: int | np.random.Generator,
    hurst: float = 0.85,
    rms_slope_deg: float | None = None,
) -> np.ndarray:
    """Fractal (fBm) background terrain by spectral synthesis.

    Power spectrum ``P(k) ∝ k^-(2H+2)`` with random phases (isotropic fractional Brownian
    surface), then scaled so the RMS slope between adjacent pixels equals ``rms_slope_deg``
    (Rosenburg et al. 2011 measured lunar Hurst exponents ~0.8-0.95 in the highlands).

    Parameters
    ----------
    size : int
        Chip side, pixels.
    gsd : float
        Ground sampling distance, metres per pixel.
    seed : int or numpy.random.Generator
        Randomness; the same int gives identical terrain.
    hurst : float
        Hurst exponent, 0 < H < 1.
    rms_slope_deg : float, optional
        Target RMS slope in degrees at baseline ``gsd``; default :func:`lunar_rms_slope_deg`.

    Returns
    -------
    ndarray (size, size) float64
        Heights in metres with zero mean. The field is periodic (FFT synthesis).
    """
    if not 0 < hurst < 1:
        raise ValueError(f"hurst must be in (0, 1), got {hurst!r}")
    if size < 4:
        raise ValueError(f"size must be >= 4 pixels, got {size!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if rms_slope_deg is None:
        rms_slope_deg = lunar_rms_slope_deg(gsd, hurst=hurst)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.rfftfreq(size), indexing="ij"))
    k[0, 0] = np.inf
    amp = k ** (-(hurst + 1.0))  # |F| ∝ sqrt(P) = k^-(H+1)
    spec = np.fft.rfft2(rng.standard_normal((size, size))) * amp
    z = np.fft.irfft2(spec, s=(size, size))
    gy, gx = np.gradient(z, gsd)
    rms = np.sqrt(np.mean(gx * gx + gy * gy))
    z *= np.tan(np.radians(rms_slope_deg)) / max(rms, 1e-30)
    return z - z.mean()


def crater_morphometry(diameter_m: np.ndarray | float, transition_diameter_m: float = TRANSITION_DIAMETER_M):
    """Fresh lunar crater depth, rim height and floor diameter from Pike (1977).

    Simple (D < transition): ``d = 0.196 D^1.010``, ``h = 0.036 D^1.014``; complex:
    ``d = 1.044 D^0.301``, ``h = 0.236 D^0.399``, flat floor ``D_f = 0.187 D^1.249`` (all km).

    Parameters
    ----------
    diameter_m : float or ndarray
        Rim-crest diameter, metres.
    transition_diameter_m : float
        Simple-to-complex transition, metres (15 km, Pike 1977).

    Returns
    -------
    depth_m, rim_height_m, floor_diameter_m : ndarray (float64), and ``complex`` (bool ndarray)
        Depth is rim crest to floor; floor diameter is 0 for simple craters.
    """
    d_km = np.asarray(diameter_m, dtype=float) / 1000.0
    cx = d_km * 1000.0 >= transition_diameter_m
    depth = np.where(cx, 1.044 * d_km**0.301, 0.196 * d_km**1.010)
    rim = np.where(cx, 0.236 * d_km**0.399, 0.036 * d_km**1.014)
    floor = np.where(cx, np.minimum(0.187 * d_km**1.249, 0.7 * d_km), 0.0)
    return depth * 1000.0, rim * 1000.0, floor * 1000.0, cx


def _crater_relief(rn, depth, rim, floor_frac, n_terraces, peak_h, peak_r):
    """Relief (m) relative to the pre-impact surface, on distances ``rn`` in units of R."""
    z = np.zeros_like(rn)
    inside = rn < 1.0
    if floor_frac <= 0:  # simple: parabolic bowl (d/D ~ 0.2, Pike 1977)
        z[inside] = rim - depth * (1.0 - rn[inside] ** 2)
    else:  # complex: flat floor, terraced wall, optional central peak
        s = np.clip((rn - floor_frac) / (1.0 - floor_frac), 0.0, 1.0)
        if n_terraces > 0:
            s = s - 0.8 * np.sin(2 * np.pi * n_terraces * s) / (2 * np.pi * n_terraces)
        wall = rim - depth + depth * s**1.5
        z[inside] = wall[inside]
        if peak_h > 0:
            pk = rn < peak_r
            z[pk] += peak_h * 0.5 * (1.0 + np.cos(np.pi * rn[pk] / peak_r))
    out = (rn >= 1.0) & (rn < _EJECTA_EXTENT_R)
    e = _EJECTA_EXTENT_R**-3
    z[out] = rim * (rn[out] ** -3 - e) / (1.0 - e)  # McGetchin et al. (1973) (r/R)^-3
    return z


def synth_crater_chip(
    size: int = 256,
    gsd: float = 100.0,
    *,
    seed: int,
    n_craters: float | None = None,
    sfd_slope: float | None = None,
    min_diameter_px: float = 3.0,
    max_diameter_px: float = 128.0,
    p_large: float = 0.6,
    large_range_px: tuple[float, float] = (40.0, 110.0),
    label_min_px: float = 5.0,
    label_max_degradation: float = 0.15,
    rim_halfwidth_px: float = 1.0,
    hurst: float | None = None,
    rms_slope_deg: float | None = None,
    noise_m: float | None = None,
    kappa_t_px2: float | None = None,
    tilt_deg: float | None = None,
    transition_diameter_m: float = TRANSITION_DIAMETER_M,
    craters: pd.DataFrame | None = None,
) -> SynthChip:
    """Render one synthetic DEM chip with a crater population and its rim-ring labels.

    See the module docstring for the model and its sources (Pike 1977 morphometry,
    McGetchin et al. 1973 ejecta, Fassett & Thomson 2014 diffusion, Rosenburg et al. 2011
    terrain, Silburt et al. 2019 rim labels).

    Parameters
    ----------
    size : int
        Chip side, pixels.
    gsd : float
        Ground sampling distance, metres per pixel; sets crater sizes in metres and hence their
        morphometry (simple vs complex) and the background slope.
    seed : int
        Reproducibility: the same arguments and seed give identical arrays.
    n_craters : float, optional
        Mean number of craters with D >= ``min_diameter_px`` (Poisson); default uniform 30-160.
    sfd_slope : float, optional
        ``b`` of the cumulative SFD ``N(>D) ∝ D^-b``; default uniform 1.8-2.6.
    min_diameter_px, max_diameter_px : float
        Range of rendered diameters, pixels.
    p_large : float
        Probability of adding one extra crater with diameter in ``large_range_px``.
    label_min_px, label_max_degradation : float
        Craters smaller or more degraded than this are rendered but not labelled.
    rim_halfwidth_px : float
        Half width of the rim ring label, pixels.
    hurst, rms_slope_deg, noise_m, kappa_t_px2, tilt_deg : float, optional
        Background Hurst exponent, background RMS slope (deg), white noise σ (m), the chip's
        diffusion budget κt in pixels², and a regional tilt (deg, 0-4 when drawn); drawn at random
        when omitted.
    transition_diameter_m : float
        Simple-to-complex transition diameter, metres.
    craters : pandas.DataFrame, optional
        Render exactly these craters instead of drawing a population: columns ``x_px, y_px,
        diameter_px`` and optionally ``degradation`` (default 0), in age order (oldest first).
        Used for known-answer tests (e.g. one fresh isolated crater).

    Returns
    -------
    SynthChip
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size!r}")
    if not gsd > 0:
        raise ValueError(f"gsd must be > 0 metres per pixel, got {gsd!r}")
    rng = np.random.default_rng(seed)
    hurst = float(rng.uniform(0.75, 0.95)) if hurst is None else float(hurst)
    if rms_slope_deg is None:
        rms_slope_deg = lunar_rms_slope_deg(gsd, hurst=hurst) * float(rng.uniform(0.2, 0.9))
    z = fractal_terrain(size, gsd, seed=rng, hurst=hurst, rms_slope_deg=rms_slope_deg)
    # regional tilt (polar terrain sits on large-scale slopes), 0-4 degrees
    tilt_deg = float(rng.uniform(0.0, 4.0)) if tilt_deg is None else float(tilt_deg)
    tilt = np.tan(np.radians(tilt_deg))
    az = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    z += tilt * gsd * (np.cos(az) * xx + np.sin(az) * yy)

    if craters is None:
        b = float(rng.uniform(1.8, 2.6)) if sfd_slope is None else float(sfd_slope)
        lam = float(rng.uniform(30, 160)) if n_craters is None else float(n_craters)
        n = int(rng.poisson(lam))
        u = rng.random(n)
        ratio = (min_diameter_px / max_diameter_px) ** b
        diam = min_diameter_px * (1.0 - u * (1.0 - ratio)) ** (-1.0 / b)  # inverse CDF, truncated power law
        if rng.random() < p_large:
            diam = np.append(diam, rng.uniform(*large_range_px))
        n = diam.size
        cx = rng.uniform(-0.1 * size, 1.1 * size, n)
        cy = rng.uniform(-0.1 * size, 1.1 * size, n)
        age = rng.random(n)  # 1 = oldest
        order = np.argsort(-age, kind="stable")
        diam, cx, cy, age = diam[order], cx[order], cy[order], age[order]
        kt = float(10 ** rng.uniform(np.log10(0.5), np.log10(150.0))) if kappa_t_px2 is None else float(kappa_t_px2)
        degr = np.minimum(kt * age / (diam / 2.0) ** 2, 1.0)
    else:
        b, lam, kt = float("nan"), float("nan"), float("nan")
        cx = np.asarray(craters["x_px"], dtype=float)
        cy = np.asarray(craters["y_px"], dtype=float)
        diam = np.asarray(craters["diameter_px"], dtype=float)
        degr = np.asarray(craters["degradation"], dtype=float) if "degradation" in craters else np.zeros(diam.size)
        n = diam.size

    diam_m = diam * gsd
    depth_m, rim_m, floor_m, is_cx = crater_morphometry(diam_m, transition_diameter_m)
    mask = np.zeros((size, size), dtype=bool)
    labelled = (diam >= label_min_px) & (degr <= label_max_degradation)
    harmonics = []
    for i in range(n):
        R = diam[i] / 2.0
        sigma = max(R * np.sqrt(2.0 * degr[i]), 0.35)  # diffusion: σ = sqrt(2 κt), κt = degr·R²
        half = int(np.ceil(_EJECTA_EXTENT_R * R + 2 * sigma + 2))
        x0, x1 = int(np.floor(cx[i])) - half, int(np.floor(cx[i])) + half + 1
        y0, y1 = int(np.floor(cy[i])) - half, int(np.floor(cy[i])) + half + 1
        bx0, bx1, by0, by1 = max(x0, 0), min(x1, size), max(y0, 0), min(y1, size)
        if bx0 >= bx1 or by0 >= by1:
            harmonics.append(None)
            continue
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        dx, dy = gx - cx[i], gy - cy[i]
        dist = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        k = np.arange(2, 5)
        a = rng.uniform(0, 0.03, 3) / k
        ph = rng.uniform(0, 2 * np.pi, 3)
        harmonics.append((a, ph))
        r_theta = R * (1.0 + np.sum(a[:, None, None] * np.cos(k[:, None, None] * theta + ph[:, None, None]), axis=0))
        rn = dist / r_theta
        if is_cx[i]:
            nter = int(rng.integers(2, 5))
            peak = diam_m[i] > 26_000.0
            peak_h = float(rng.uniform(0.1, 0.4)) * depth_m[i] if peak else 0.0
            rel = _crater_relief(rn, depth_m[i], rim_m[i], floor_m[i] / diam_m[i], nter, peak_h, 0.22)
        else:
            rel = _crater_relief(rn, depth_m[i], rim_m[i], 0.0, 0, 0.0, 0.0)
        w = np.clip((1.0 - rn) / 0.2, 0.0, 1.0)  # interior replaced by the new crater
        rel = gaussian_filter(rel, sigma, mode="constant", truncate=3.0)
        w = gaussian_filter(w, sigma, mode="constant", truncate=3.0)
        sy, sx = slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0)
        zb = z[by0:by1, bx0:bx1]
        win = rn[sy, sx] < 1.0
        base = float(zb[win].mean()) if win.any() else float(zb.mean())
        wb = w[sy, sx]
        z[by0:by1, bx0:bx1] = zb * (1.0 - wb) + base * wb + rel[sy, sx]
        # the new crater erases older rims inside it, then draws its own
        mb = mask[by0:by1, bx0:bx1]
        d_b, rt_b = dist[sy, sx], r_theta[sy, sx]
        mb[(d_b < rt_b - rim_halfwidth_px - 0.5) & (rn[sy, sx] < 0.9)] = False
        if labelled[i]:
            mb[np.abs(d_b - rt_b) <= rim_halfwidth_px] = True

    # how much of each labelled rim survives younger craters
    visible = np.zeros(n)
    for i in range(n):
        if not labelled[i] or harmonics[i] is None:
            labelled[i] = False  # rim entirely outside the chip: nothing was drawn
            continue
        a, ph = harmonics[i]
        R = diam[i] / 2.0
        half = int(np.ceil(R + rim_halfwidth_px + 2))
        x0, y0 = int(np.floor(cx[i])) - half, int(np.floor(cy[i])) - half
        bx0, bx1 = max(x0, 0), min(x0 + 2 * half + 1, size)
        by0, by1 = max(y0, 0), min(y0 + 2 * half + 1, size)
        if bx0 >= bx1 or by0 >= by1:
            labelled[i] = False  # rim entirely outside the chip
            continue
        gy, gx = np.mgrid[by0:by1, bx0:bx1].astype(np.float64)
        dx, dy = gx - cx[i], gy - cy[i]
        theta = np.arctan2(dy, dx)
        k = np.arange(2, 5)
        r_theta = R * (1.0 + np.sum(a[:, None, None] * np.cos(k[:, None, None] * theta + ph[:, None, None]), axis=0))
        ring = np.abs(np.hypot(dx, dy) - r_theta) <= rim_halfwidth_px
        if ring.any():
            visible[i] = float(mask[by0:by1, bx0:bx1][ring].mean())
        else:
            labelled[i] = False  # rim entirely outside the chip

    noise = float(rng.uniform(0.3, 2.0)) if noise_m is None else float(noise_m)
    z = gaussian_filter(z, 0.5, mode="nearest")  # gridding blur
    if noise > 0:
        z += rng.normal(0.0, noise, z.shape)
    z = (z - z.mean()).astype(np.float32)
    table = pd.DataFrame(
        {
            "x_px": cx, "y_px": cy, "diameter_px": diam, "diameter_m": diam_m, "depth_m": depth_m,
            "rim_height_m": rim_m, "kind": np.where(is_cx, "complex", "simple"), "degradation": degr,
            "age_rank": np.arange(n), "labelled": labelled, "rim_visible_fraction": visible,
        },
        columns=list(CRATER_COLUMNS),
    )
    params = dict(hurst=hurst, tilt_deg=tilt_deg, rms_slope_deg=float(rms_slope_deg), sfd_slope=b, n_craters_mean=lam,
                  kappa_t_px2=kt, noise_m=noise)
    return SynthChip(elevation=z, rim_mask=mask.astype(np.uint8), craters=table, gsd=float(gsd), seed=int(seed),
                     params=params)


def chip_seed(seed: int, index: int) -> int:
    """Seed of chip ``index`` in a dataset with master ``seed`` (independent streams, NumPy SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def synth_dataset(
    n: int,
    *,
    size: int = 256,
    gsd_range: tuple[float, float] = (20.0, 500.0),
    seed: int = 0,
    start: int = 0,
    **chip_kwargs,
) -> Iterator[SynthChip]:
    """Yield ``n`` synthetic chips; chip ``i`` depends only on ``(seed, start + i)``.

    Parameters
    ----------
    n : int
        Number of chips.
    size : int
        Chip side, pixels.
    gsd_range : (float, float)
        GSD drawn log-uniformly in this range, metres per pixel (the crater population in pixels
        is the same at every GSD; the GSD sets metres and therefore simple/complex morphometry).
    seed : int
        Master seed.
    start : int
        Index of the first chip (to split one deterministic stream into train/validation parts or
        workers).
    **chip_kwargs
        Passed to :func:`synth_crater_chip`.

    Yields
    ------
    SynthChip
    """
    lo, hi = float(gsd_range[0]), float(gsd_range[1])
    if not 0 < lo <= hi:
        raise ValueError(f"gsd_range must be 0 < low <= high, got {gsd_range!r}")
    for i in range(start, start + n):
        s = chip_seed(seed, i)
        gsd = float(np.exp(np.random.default_rng([s, 1]).uniform(np.log(lo), np.log(hi))))
        yield synth_crater_chip(size, gsd, seed=s, **chip_kwargs)


def stack_chips(chips) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack chips into arrays: elevation (N,H,W) float32 m, rim_mask (N,H,W) uint8, gsd (N,) float64."""
    chips = list(chips)
    return (
        np.stack([c.elevation for c in chips]),
        np.stack([c.rim_mask for c in chips]),
        np.array([c.gsd for c in chips], dtype=np.float64),
    )
