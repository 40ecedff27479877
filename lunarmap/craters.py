"""Crater detection on DEMs: rim probability (network), crater catalogue, crater density.

Pipeline (after Silburt et al. 2019, "Lunar crater identification via deep learning", Icarus 317,
27-38, "DeepMoon"):

1. :func:`crater_probability` runs the crater network (:mod:`lunarmap.models`) on overlapping
   DEM chips (:mod:`lunarmap.tiling`, blended, no seams) at several scales of a DEM pyramid
   (block-mean 2x downsampling per level), because one chip of 256 px cannot hold craters from a
   few px to hundreds of px across. Each level's rim probability is kept for extraction; the
   published layer is the maximum over the levels upsampled (nearest) to the DEM grid.
2. :func:`extract_craters` finds rings in each level's rim probability by normalised
   cross-correlation with ring templates of radius r (DeepMoon: target binarised at 0.1, ring
   width 2 px, match threshold 0.5), computed with FFTs (scipy), then removes duplicates
   with DeepMoon's criteria ``((x1-x2)^2 + (y1-y2)^2) / min(r1,r2)^2 < 1.8`` and
   ``|r1-r2| / min(r1,r2) < 1.0``, keeping the best match. It works per Dask chunk with an
   overlap of the largest template, keeps only detections whose centre is in the chunk's own
   core, and de-duplicates across chunks and scales globally, so a crater on a chip or chunk
   border is reported once.
3. :func:`crater_density` counts catalogue craters with D >= D_min whose centre lies within a
   radius of each pixel, per km^2 (the moving-window crater density used for crater-density maps,
   e.g. Kneissl et al. 2011, PSS 59, 1243).

Coordinates: map x/y in the DEM's projected Moon CRS (m); lat/lon planetocentric degrees,
longitude east-positive -180..180 (DESIGN.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .errors import InputFileError, LunarmapError, ModelWeightsError
from .layers import register_layer
from .tiling import check_chip, predict_tiled

#: DeepMoon (Silburt et al. 2019) template-matching hyperparameters.
TARGET_THRESH = 0.1  #: rim probability binarisation threshold
TEMPLATE_THRESH = 0.5  #: minimum normalised cross-correlation of a ring match
RING_WIDTH_PX = 2  #: ring template thickness (px)
LONGLAT_THRESH2 = 1.8  #: duplicate if squared centre distance / min(r)^2 below this
RAD_THRESH = 1.0  #: ... and |r1 - r2| / min(r) below this

#: Default pyramid: full resolution, 2x, 4x and 8x block means.
DEFAULT_SCALES = (1, 2, 4, 8)
#: Default ring radius range per level (px at that level). Level 1 uses [R_MIN_PX, R_MAX_PX];
#: coarser levels use [COARSE_R_MIN_PX, R_MAX_PX].
R_MIN_PX = 3
R_MAX_PX = 32
#: Smallest radius searched at levels > 1: with 8 (= R_MAX_PX / 4) consecutive levels overlap by a
#: factor 2 in radius, so every crater is seen at two levels (16-64 px across at one of them, the
#: size range the network sees best); the duplicates are removed.
COARSE_R_MIN_PX = 8

#: Chip sizes must be multiples of this (5-level U-Net encoder).
CHIP_MULTIPLE = 32


# ---------------------------------------------------------------------------------------------
# model access
# ---------------------------------------------------------------------------------------------
def _models_api():
    """``(load_crater_model, crater_inputs)`` from the crater-network module."""
    try:
        from .models import craters as m  # type: ignore[attr-defined]
    except ImportError:
        try:
            from . import models as m  # type: ignore[no-redef]
        except ImportError as exc:  # pragma: no cover - depends on install
            raise ModelWeightsError(
                "The crater network module (lunarmap.models) is not available in this install; "
                "pass model= explicitly or reinstall lunarmap."
            ) from exc
    return m.load_crater_model, m.crater_inputs


def _resolve_model(model, inputs_fn):
    if model is None or isinstance(model, (str, os.PathLike)):
        load, _ = _models_api()
        model = load(model)
    if inputs_fn is None:
        inputs_fn = getattr(model, "inputs", None)
        if inputs_fn is None:
            _, crater_inputs = _models_api()
            inputs_fn = crater_inputs
    return model, inputs_fn


def default_halo(model, chip: int) -> int:
    """Halo (px) for a model: half its *effective* receptive field, capped at ``chip // 8``.

    Rule: ``halo = ceil(erf / 2)`` with ``erf`` the model card's ``effective_receptive_field_px``
    (else ``receptive_field_px``), at most ``chip // 8``. Deep U-Nets have a theoretical receptive
    field wider than the chip while the *effective* one is a small central part of it (Luo et al.
    2016, NeurIPS); with the cap a 256-px chip keeps a 32-px discarded margin and a 32-px blending
    ramp (stride 160). The shipped U-Net's card gives an effective receptive field wider than a
    chip, so the cap decides; Dask chunking is still exact (:func:`lunarmap.tiling.predict_tiled`,
    ``exact=True``) and the sensitivity to chip placement is measured in docs/craters.md.
    """
    card = getattr(model, "card", None) or {}
    rf = card.get("effective_receptive_field_px") or getattr(model, "receptive_field_px", None) or chip // 4
    return int(max(1, min(math.ceil(float(rf) / 2.0), chip // 8)))


# ---------------------------------------------------------------------------------------------
# probability
# ---------------------------------------------------------------------------------------------
def _coarsen(elevation: xr.DataArray, s: int) -> xr.DataArray:
    """Block-mean downsample by ``s`` (NaN-aware, partial edge blocks kept) on a regular grid."""
    if s == 1:
        return elevation
    coarse = elevation.coarsen(y=s, x=s, boundary="pad").mean()
    gsd = float(elevation.attrs.get("gsd") or abs(float(elevation.x[1] - elevation.x[0])))
    x0 = float(elevation.x[0]) - gsd / 2.0
    y0 = float(elevation.y[0]) + gsd / 2.0
    ny, nx = coarse.sizes["y"], coarse.sizes["x"]
    coarse = coarse.assign_coords(
        x=x0 + (np.arange(nx) + 0.5) * gsd * s, y=y0 - (np.arange(ny) + 0.5) * gsd * s
    )
    coarse.attrs = {**elevation.attrs, "gsd": gsd * s}
    if elevation.rio.crs is not None:
        coarse = coarse.rio.write_crs(elevation.rio.crs)
    return coarse


#: Test-time augmentation: identity and the three axis flips (each its own inverse).
_FLIPS = (lambda a: a, lambda a: a[::-1], lambda a: a[:, ::-1], lambda a: a[::-1, ::-1])


def crater_probability_levels(
    elevation: xr.DataArray,
    *,
    model=None,
    chip: int = 256,
    stride: int | None = None,
    halo: int | None = None,
    scales: Sequence[int] = DEFAULT_SCALES,
    batch_size: int = 8,
    inputs_fn: Callable[[np.ndarray, float], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    tta: bool = False,
) -> list[xr.DataArray]:
    """Rim probability at every level of a DEM pyramid (each on its own, coarser grid).

    Parameters are those of :func:`crater_probability`.

    Returns
    -------
    list of xarray.DataArray
        One lazy float32 (y, x) rim probability 0..1 per scale, on the block-mean-downsampled
        grid of that level (``attrs['scale']``, ``attrs['gsd']`` in m), the DEM's CRS.
    """
    import rioxarray  # noqa: F401

    _check_elevation(elevation)
    model, inputs_fn = _resolve_model(model, inputs_fn)
    if halo is None:
        halo = default_halo(model, chip)
    multiple = int(getattr(model, "chip_multiple", CHIP_MULTIPLE))
    check_chip(chip, halo, multiple=multiple, stride=stride)
    gsd = float(elevation.attrs.get("gsd") or abs(float(elevation.x[1] - elevation.x[0])))
    scales = sorted({int(s) for s in scales})
    if not scales or scales[0] < 1:
        raise ValueError(f"scales must be positive integers, got {scales}")
    levels = []
    for s in scales:
        elev_s = _coarsen(elevation, s)
        gsd_s = gsd * s

        if tta:
            def _inputs(chip_arr, _g=gsd_s):
                # the 4 flips of the DEM chip, inputs computed on each (hillshade stays consistent)
                return np.concatenate([inputs_fn(np.ascontiguousarray(f(chip_arr)), _g) for f in _FLIPS])

            def _predict(batch, _c=None):
                b, c4 = batch.shape[:2]
                c = c4 // len(_FLIPS)
                x = batch.reshape(b, len(_FLIPS), c, *batch.shape[2:]).transpose(1, 0, 2, 3, 4).reshape(-1, c, *batch.shape[2:])
                y = np.asarray(model.predict(np.ascontiguousarray(x))).reshape(len(_FLIPS), b, *batch.shape[2:])
                return np.mean([f(y[k].transpose(1, 2, 0)).transpose(2, 0, 1) for k, f in enumerate(_FLIPS)], axis=0)
        else:
            def _inputs(chip_arr, _g=gsd_s):
                return inputs_fn(chip_arr, _g)

            _predict = model.predict

        p = predict_tiled(
            elev_s, _predict, chip=chip, halo=halo, stride=stride, batch_size=batch_size,
            inputs_fn=_inputs, multiple=multiple, progress=progress, name="crater_probability",
        )
        p = p.clip(0.0, 1.0)
        p.attrs = {"units": "1", "long_name": "crater rim probability", "scale": s, "gsd": gsd_s,
                   "chip": chip, "halo": halo}
        if elevation.rio.crs is not None:
            p = p.rio.write_crs(elevation.rio.crs)
        levels.append(p)
    return levels


def combine_levels(levels: Sequence[xr.DataArray], grid_like: xr.DataArray) -> xr.DataArray:
    """Maximum over pyramid levels, each upsampled (nearest) to ``grid_like``'s grid. Lazy."""
    import dask.array as dsa

    ny, nx = grid_like.sizes["y"], grid_like.sizes["x"]
    chunks = grid_like.chunks or ((ny,), (nx,))
    ups = []
    for p in levels:
        s = int(p.attrs.get("scale", 1))
        d = p.data if p.chunks is not None else dsa.from_array(np.asarray(p.values))
        if s > 1:
            d = dsa.repeat(dsa.repeat(d, s, axis=0), s, axis=1)[:ny, :nx]
        ups.append(d.rechunk(chunks))
    stacked = dsa.stack(ups)
    out = dsa.nanmax(stacked, axis=0) if len(ups) > 1 else ups[0]
    out = dsa.where(dsa.isfinite(grid_like.data if grid_like.chunks else grid_like.values), out, np.nan)
    res = xr.DataArray(out.astype("float32"), dims=("y", "x"), coords={"y": grid_like.y, "x": grid_like.x},
                       name="crater_probability")
    res.attrs = {"units": "1", "long_name": "crater rim probability (max over pyramid levels)",
                 "scales": [int(p.attrs.get("scale", 1)) for p in levels]}
    if grid_like.rio.crs is not None:
        res = res.rio.write_crs(grid_like.rio.crs)
    return res


def crater_probability(
    elevation: xr.DataArray,
    *,
    model=None,
    chip: int = 256,
    stride: int | None = None,
    halo: int | None = None,
    scales: Sequence[int] = DEFAULT_SCALES,
    batch_size: int = 8,
    inputs_fn: Callable[[np.ndarray, float], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    tta: bool = False,
) -> xr.DataArray:
    """Crater-rim probability of a DEM from the crater network, tiled and multi-scale. Lazy.

    Parameters
    ----------
    elevation : xarray.DataArray
        DEM, dims ``("y", "x")``, float, metres, projected Moon CRS (:func:`lunarmap.io.open_dem`),
        Dask or numpy, NaN = nodata, any size.
    model : CraterModel, path or None
        Object with ``predict(chips (B, C, H, W) float32) -> (B, H, W)`` rim probability and
        ``receptive_field_px``; a path to weights, or ``None`` for the shipped weights
        (:func:`lunarmap.models.load_crater_model`).
    chip : int
        Chip edge (px), multiple of 32.
    stride, halo : int, optional
        Tiling (:class:`lunarmap.tiling.TileGrid`); default halo :func:`default_halo`, default
        stride ``chip - 3*halo``.
    scales : sequence of int
        Pyramid levels (block-mean downsampling factors). Rims of radius 3-32 px are searched at
        level 1, 16-64 px at level 2, 32-128 px at level 4, ... (:data:`R_MIN_PX`,
        :data:`R_MAX_PX`, :data:`COARSE_R_MIN_PX`).
    batch_size : int
        Chips per forward pass.
    inputs_fn : callable, optional
        ``(elevation_chip (H, W) m, gsd m) -> (C, H, W)`` float32; default
        :func:`lunarmap.models.crater_inputs`.
    progress : callable, optional
        Called with the number of chips done after each batch.
    tta : bool
        Test-time augmentation: average the network over the DEM chip and its three axis flips
        (inputs recomputed per flip so the hillshade stays consistent); 4x the compute. On the
        real 1600 m DEM it raised F1 from 0.33 to 0.37 (HKPolyU) and 0.46 to 0.56 (Head 2010) with
        the development model (docs/craters.md).

    Returns
    -------
    xarray.DataArray
        ``crater_probability``, float32 0..1, dims/coords/CRS of ``elevation``, lazy; the maximum
        over the pyramid levels upsampled (nearest) to the DEM grid; NaN where the DEM is NaN.

    Raises
    ------
    ChipSizeError
        ``chip`` not a multiple of 32 or not larger than twice the halo.
    CRSError, ModelWeightsError
        Bad DEM CRS; missing/corrupt weights.

    References
    ----------
    Silburt et al. 2019, Icarus 317, 27-38 (DEM U-Net rim segmentation).
    """
    levels = crater_probability_levels(
        elevation, model=model, chip=chip, stride=stride, halo=halo, scales=scales,
        batch_size=batch_size, inputs_fn=inputs_fn, progress=progress, tta=tta,
    )
    return combine_levels(levels, elevation)


def _check_elevation(elevation) -> None:
    from .crs import check_moon_crs

    if not isinstance(elevation, xr.DataArray) or tuple(elevation.dims) != ("y", "x"):
        raise InputFileError(
            "elevation must be a DataArray with dims ('y', 'x') from lunarmap.io.open_dem "
            f"(got {type(elevation).__name__} {getattr(elevation, 'dims', '')})."
        )
    import rioxarray  # noqa: F401

    check_moon_crs(elevation.rio.crs, what="DEM")


# ---------------------------------------------------------------------------------------------
# ring template matching (DeepMoon) with FFTs
# ---------------------------------------------------------------------------------------------
def ring_template(r: int, width: int = RING_WIDTH_PX) -> np.ndarray:
    """Odd-sized square template with a ring of radius ``r`` px and thickness ``width`` px (1 on the
    ring, 0 elsewhere), centred on its middle pixel."""
    h = int(r + width + 1)
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
    d = np.hypot(yy, xx)
    return (np.abs(d - r) <= width / 2.0).astype("float64")


class _BoxSums:
    """Window sums of an array over k x k windows centred on each pixel (k odd, zero outside),
    from one integral image shared by every window size up to ``2 * hmax + 1``."""

    def __init__(self, a: np.ndarray, hmax: int):
        self.h = int(hmax)
        self.shape = a.shape
        p = np.pad(a.astype("float64"), ((self.h + 1, self.h), (self.h + 1, self.h)))
        self.c = p.cumsum(0).cumsum(1)

    def __call__(self, k: int) -> np.ndarray:
        h, H = k // 2, self.h
        ny, nx = self.shape
        c = self.c
        hi = slice(H + 1 + h, H + 1 + h + ny), slice(H + 1 + h, H + 1 + h + nx)
        lo_r = slice(H - h, H - h + ny)
        lo_c = slice(H - h, H - h + nx)
        return c[hi[0], hi[1]] - c[lo_r, hi[1]] - c[hi[0], lo_c] + c[lo_r, lo_c]


def _box_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum over a k x k window centred on each pixel (k odd), zero outside."""
    return _BoxSums(a, k // 2)(k)


def match_rings(target: np.ndarray, radii: Sequence[int], *, width: int = RING_WIDTH_PX) -> np.ndarray:
    """Normalised cross-correlation of ``target`` with ring templates, one map per radius.

    Equivalent to ``skimage.feature.match_template(target, ring, pad_input=True)`` (zero padding,
    result centred on the ring centre) for each radius, computed with real FFTs (the target's
    transform is computed once and reused for every radius).

    Parameters
    ----------
    target : ndarray (ny, nx)
        Binarised rim map (0/1), NaN treated as 0.
    radii : sequence of int
        Ring radii (px).

    Returns
    -------
    ndarray (len(radii), ny, nx) float32
        Pearson correlation -1..1 between the template and the window centred on each pixel.
    """
    from scipy import fft as sfft

    t = np.nan_to_num(np.asarray(target, dtype="float64"))
    ny, nx = t.shape
    out = np.zeros((len(radii), ny, nx), dtype="float32")
    if len(radii) == 0:
        return out
    hmax = int(max(radii) + width + 1)
    shape = (sfft.next_fast_len(ny + 2 * hmax, real=True), sfft.next_fast_len(nx + 2 * hmax, real=True))
    ft = sfft.rfft2(t.astype("float32"), s=shape)
    box1 = _BoxSums(t, hmax)
    binary = bool(np.isin(t, (0.0, 1.0)).all())
    box2 = box1 if binary else _BoxSums(t * t, hmax)  # t^2 == t for a 0/1 map
    for i, r in enumerate(radii):
        tmpl = ring_template(int(r), width)
        k = tmpl.shape[0]
        h = k // 2
        n = tmpl.size
        tz = tmpl - tmpl.mean()
        # correlation = convolution with the flipped template; the template is symmetric
        fk = sfft.rfft2(tz[::-1, ::-1].astype("float32"), s=shape)
        full = sfft.irfft2(ft * fk, s=shape)
        num = full[h : h + ny, h : h + nx]
        s1 = box1(k)
        s2 = s1 if binary else box2(k)
        var = np.maximum(s2 - s1 * s1 / n, 0.0)
        den = np.sqrt(var * float((tz * tz).sum()))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(den > 1e-6, num / den, 0.0)
    return out


def _candidates(ncc: np.ndarray, radii: Sequence[int], thresh: float, core: tuple[slice, slice]):
    """Local maxima (3x3 in space) of each radius' NCC map above ``thresh`` inside ``core``."""
    from scipy.ndimage import maximum_filter

    rows, cols, rs, sc = [], [], [], []
    for i, r in enumerate(radii):
        m = ncc[i]
        peak = (m > thresh) & (m >= maximum_filter(m, size=3, mode="constant", cval=-1.0))
        mask = np.zeros_like(peak)
        mask[core] = peak[core]
        yy, xx = np.nonzero(mask)
        rows.append(yy)
        cols.append(xx)
        rs.append(np.full(yy.size, r, dtype="float64"))
        sc.append(m[yy, xx].astype("float64"))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(rs), np.concatenate(sc)


def dedupe_craters(x, y, r, score, *, longlat_thresh2: float = LONGLAT_THRESH2, rad_thresh: float = RAD_THRESH) -> np.ndarray:
    """Greedy de-duplication of circles, best ``score`` first (DeepMoon criteria).

    Two circles are duplicates when ``((x1-x2)^2 + (y1-y2)^2) / min(r1, r2)^2 < longlat_thresh2``
    and ``|r1 - r2| / min(r1, r2) < rad_thresh`` (Silburt et al. 2019; any consistent unit).

    Returns
    -------
    ndarray of int
        Indices of the circles kept, in descending score order.
    """
    from scipy.spatial import cKDTree

    x, y, r, score = (np.asarray(a, dtype="float64") for a in (x, y, r, score))
    if x.size == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(-score, kind="stable")
    tree = cKDTree(np.column_stack([x, y]))
    alive = np.ones(x.size, dtype=bool)
    keep = []
    reach = math.sqrt(longlat_thresh2)
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        alive[i] = False
        nb = np.asarray(tree.query_ball_point([x[i], y[i]], reach * r[i] + 1e-9), dtype=int)
        if nb.size == 0:
            continue
        nb = nb[alive[nb]]
        if nb.size == 0:
            continue
        mr = np.minimum(r[nb], r[i])
        d2 = (x[nb] - x[i]) ** 2 + (y[nb] - y[i]) ** 2
        dup = (d2 / mr**2 < longlat_thresh2) & (np.abs(r[nb] - r[i]) / mr < rad_thresh)
        alive[nb[dup]] = False
    return np.asarray(keep, dtype=int)


def _level_radii(scale: int, r_min_px: int, r_max_px: int, coarse_r_min_px: int | None = None) -> list[int]:
    lo = r_min_px if scale == 1 else max(r_min_px, COARSE_R_MIN_PX if coarse_r_min_px is None else coarse_r_min_px)
    return list(range(int(lo), int(r_max_px) + 1))


def _extract_block(block: np.ndarray, radii, target_thresh, template_thresh, depth, block_shape, offset):
    """Candidates of one (overlap-extended) block in block-core pixel coordinates + offset."""
    target = (np.nan_to_num(block, nan=0.0) >= target_thresh).astype("float64")
    ncc = match_rings(target, radii)
    core = (slice(depth, depth + block_shape[0]), slice(depth, depth + block_shape[1]))
    rows, cols, rs, sc = _candidates(ncc, radii, template_thresh, core)
    return np.column_stack([rows - depth + offset[0], cols - depth + offset[1], rs, sc])


def _level_candidates(prob: xr.DataArray, radii, target_thresh, template_thresh) -> np.ndarray:
    """(row, col, r_px, score) candidates of one level, block-wise with overlap, computed."""
    import dask
    import dask.array as dsa

    depth = int(max(radii) + RING_WIDTH_PX + 3)
    data = prob.data if prob.chunks is not None else dsa.from_array(np.asarray(prob.values), chunks=-1)
    if any(min(c) < depth for c in data.chunks):
        data = data.rechunk({i: max(depth, max(c)) for i, c in enumerate(data.chunks)})
        if any(min(c) < depth for c in data.chunks):
            data = data.rechunk(-1)
    if data.numblocks == (1, 1):  # one block (also when smaller than the depth): plain numpy
        arr = np.pad(np.asarray(data.compute(), dtype="float64"), depth, constant_values=0.0)
        return _extract_block(arr, radii, target_thresh, template_thresh, depth, data.shape, (0, 0))
    ext = dsa.overlap.overlap(data, depth={0: depth, 1: depth}, boundary={0: 0.0, 1: 0.0})
    blocks = ext.to_delayed()
    parts = []
    oy = np.concatenate([[0], np.cumsum(data.chunks[0])])
    ox = np.concatenate([[0], np.cumsum(data.chunks[1])])
    for i in range(blocks.shape[0]):
        for j in range(blocks.shape[1]):
            shape = (data.chunks[0][i], data.chunks[1][j])
            parts.append(dask.delayed(_extract_block)(blocks[i, j], radii, target_thresh, template_thresh, depth,
                                                      shape, (oy[i], ox[j])))
    res = dask.compute(*parts)
    return np.concatenate(res) if res else np.zeros((0, 4))


CATALOGUE_COLUMNS = ["lat", "lon", "x", "y", "diameter_m", "score", "level", "radius_px"]


def extract_craters(
    prob: xr.DataArray | Sequence[xr.DataArray],
    *,
    r_min_px: int = R_MIN_PX,
    r_max_px: int = R_MAX_PX,
    coarse_r_min_px: int | None = None,
    target_thresh: float = TARGET_THRESH,
    template_thresh: float = TEMPLATE_THRESH,
    longlat_thresh2: float = LONGLAT_THRESH2,
    rad_thresh: float = RAD_THRESH,
    crs=None,
):
    """Crater catalogue from rim probability by ring template matching (DeepMoon). Computes.

    Parameters
    ----------
    prob : xarray.DataArray or list of them
        Rim probability 0..1, dims ``("y","x")``, regular grid in a projected Moon CRS (m); a list
        is a pyramid from :func:`crater_probability_levels` (``attrs['scale']`` selects the radius
        range of each level). NaN counts as "no rim".
    r_min_px, r_max_px : int
        Ring radius range (px) at level 1; coarser levels search ``[coarse_r_min_px, r_max_px]``.
    coarse_r_min_px : int, optional
        Smallest radius searched at levels > 1 (default :data:`COARSE_R_MIN_PX` = 8: levels
        overlap by a factor 2 in radius; duplicates across levels are removed).
    target_thresh, template_thresh : float
        Binarisation threshold of the rim map and minimum normalised cross-correlation
        (DeepMoon: 0.1 and 0.5).
    longlat_thresh2, rad_thresh : float
        Duplicate criteria (DeepMoon: 1.8 and 1.0), see :func:`dedupe_craters`; applied across
        chips, chunks and levels.
    crs : CRS-like, optional
        CRS of the grid when ``prob`` carries none.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per crater: ``lat``, ``lon`` (deg, -180..180), ``x``, ``y`` (m, map CRS),
        ``diameter_m`` (true rim diameter on the 1737.4 km sphere: 2 r gsd / k, k the map scale
        factor, :func:`map_scale_factor`), ``score`` (template correlation 0.5..1),
        ``level`` (pyramid downsampling factor it was found at), ``radius_px`` (at full resolution); Point geometry in the map CRS;
        sorted by descending score.

    References
    ----------
    Silburt et al. 2019, Icarus 317, 27-38, section 2.3 (template matching, thresholds).
    """
    import geopandas as gpd
    import rioxarray  # noqa: F401

    from .crs import check_moon_crs, xy_to_lonlat

    levels = [prob] if isinstance(prob, xr.DataArray) else list(prob)
    if not levels:
        raise ValueError("prob is empty")
    if crs is None:
        crs = levels[0].rio.crs
    crs = check_moon_crs(crs, what="crater probability raster")
    if r_min_px < 1 or r_max_px < r_min_px:
        raise ValueError(f"need 1 <= r_min_px <= r_max_px, got {r_min_px}, {r_max_px}")
    xs, ys, rs_m, sc, lv, r1 = [], [], [], [], [], []
    gsd1 = None
    for p in levels:
        s = int(p.attrs.get("scale", 1))
        gsd = float(abs(float(p.x[1] - p.x[0]))) if p.sizes["x"] > 1 else float(p.attrs["gsd"])
        dy = float(p.y[1] - p.y[0]) if p.sizes["y"] > 1 else -gsd
        if gsd1 is None:
            gsd1 = gsd / s
        radii = _level_radii(s, r_min_px, r_max_px, coarse_r_min_px)
        c = _level_candidates(p, radii, target_thresh, template_thresh)
        if c.size == 0:
            continue
        xs.append(float(p.x[0]) + c[:, 1] * gsd)
        ys.append(float(p.y[0]) + c[:, 0] * dy)
        rs_m.append(c[:, 2] * gsd)
        sc.append(c[:, 3])
        lv.append(np.full(len(c), s))
    if xs:
        x, y, r, score, scale = (np.concatenate(a) for a in (xs, ys, rs_m, sc, lv))
        keep = dedupe_craters(x, y, r, score, longlat_thresh2=longlat_thresh2, rad_thresh=rad_thresh)
        x, y, r, score, scale = x[keep], y[keep], r[keep], score[keep], scale[keep]
    else:
        x = y = r = score = np.zeros(0)
        scale = np.zeros(0, dtype=int)
    lon, lat = xy_to_lonlat(x, y, crs) if x.size else (np.zeros(0), np.zeros(0))
    k = map_scale_factor(x, y, crs) if x.size else np.ones(0)
    df = pd.DataFrame({
        "lat": np.asarray(lat, dtype="float64"), "lon": np.asarray(lon, dtype="float64"),
        "x": x, "y": y, "diameter_m": 2.0 * r / k, "score": score, "level": scale.astype(int),
        "radius_px": r / (gsd1 or 1.0),
    })
    return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df.x, df.y), crs=crs.to_wkt())


def map_scale_factor(x, y, crs) -> np.ndarray:
    """Point scale factor k of the map projection at (x, y); see :func:`lunarmap.crs.scale_factor_at`.

    Used to turn map diameters into true diameters (true = map / k).
    """
    from .crs import scale_factor_at

    return scale_factor_at(x, y, crs)


@dataclass
class CraterDetection:
    """Result of :func:`detect_craters`."""

    probability: xr.DataArray  #: lazy max-over-levels rim probability on the DEM grid
    levels: list  #: per-level rim probability (lazy)
    catalogue: Any  #: GeoDataFrame (computed)


def detect_craters(elevation: xr.DataArray, **kwargs) -> CraterDetection:
    """Run :func:`crater_probability_levels` and :func:`extract_craters` (keyword arguments are split
    between them). The levels are computed once (persisted) and reused for the layer."""
    ex_keys = {"r_min_px", "r_max_px", "coarse_r_min_px", "target_thresh", "template_thresh", "longlat_thresh2", "rad_thresh"}
    ex = {k: kwargs.pop(k) for k in list(kwargs) if k in ex_keys}
    levels = crater_probability_levels(elevation, **kwargs)
    levels = [lv.persist() for lv in levels]
    cat = extract_craters(levels, crs=elevation.rio.crs, **ex)
    return CraterDetection(probability=combine_levels(levels, elevation), levels=levels, catalogue=cat)


# ---------------------------------------------------------------------------------------------
# crater density
# ---------------------------------------------------------------------------------------------
def _density_block(xb: np.ndarray, yb: np.ndarray, tree, radius_m: float, n_craters: int) -> np.ndarray:
    X, Y = np.meshgrid(xb, yb)
    if n_craters == 0:
        counts = np.zeros(X.shape)
    else:
        counts = tree.query_ball_point(np.column_stack([X.ravel(), Y.ravel()]), radius_m, return_length=True)
        counts = np.asarray(counts, dtype="float64").reshape(X.shape)
    return (counts / (math.pi * (radius_m / 1000.0) ** 2)).astype("float32")


def crater_density(catalogue, grid_like: xr.DataArray, *, d_min_m: float | None = None,
                   radius_m: float | None = None) -> xr.DataArray:
    """Craters with D >= ``d_min_m`` per km^2 whose centre is within ``radius_m`` of each pixel.

    Parameters
    ----------
    catalogue : DataFrame/GeoDataFrame, or a dask ``Delayed`` of one
        Columns ``x``, ``y`` (m, in ``grid_like``'s CRS) and ``diameter_m``
        (:func:`extract_craters`). A Delayed catalogue keeps the result lazy (layer graph).
    grid_like : xarray.DataArray
        Target grid, dims ``("y","x")`` (coords in m); Dask chunks are kept.
    d_min_m : float, optional
        Minimum crater diameter (m). Default ``10 * gsd`` (craters >= 10 px across, the size
        the detector resolves reliably).
    radius_m : float, optional
        Counting radius (m). Default ``max(25 * gsd, 2 * d_min_m)``.

    Returns
    -------
    xarray.DataArray
        ``crater_density``, float32, km^-2 (count / (pi radius^2)), lazy when ``grid_like`` is
        Dask-backed; craters outside the grid but within ``radius_m`` of a pixel are counted.
        Not masked at nodata (the catalogue, not the DEM, is the input).

    References
    ----------
    Moving-window crater density as in Kneissl et al. 2011, PSS 59, 1243-1254.
    """
    import dask.array as dsa
    from scipy.spatial import cKDTree

    gsd = float(grid_like.attrs.get("gsd") or abs(float(grid_like.x[1] - grid_like.x[0])))
    if d_min_m is None:
        d_min_m = 10.0 * gsd
    if radius_m is None:
        radius_m = max(25.0 * gsd, 2.0 * d_min_m)
    if radius_m <= 0:
        raise ValueError(f"radius_m must be > 0, got {radius_m}")
    from dask.delayed import Delayed

    if isinstance(catalogue, Delayed):  # lazy catalogue (layer graph): one task for the whole grid
        import dask

        xc_all = np.asarray(grid_like.x.values, dtype="float64")
        yc_all = np.asarray(grid_like.y.values, dtype="float64")
        arr = dsa.from_delayed(
            dask.delayed(_density_from_catalogue)(catalogue, xc_all, yc_all, d_min_m, radius_m),
            shape=(yc_all.size, xc_all.size), dtype="float32", meta=np.array((), dtype="float32"),
        )
        if grid_like.chunks is not None:
            arr = arr.rechunk(grid_like.chunks)
        return _density_da(arr, grid_like, d_min_m, radius_m)
    for col in ("x", "y", "diameter_m"):
        if col not in catalogue:
            raise LunarmapError(f"crater catalogue lacks column {col!r} (need x, y, diameter_m in the grid's CRS).")
    sel = np.asarray(catalogue["diameter_m"], dtype="float64") >= d_min_m
    pts = np.column_stack([np.asarray(catalogue["x"], dtype="float64")[sel], np.asarray(catalogue["y"], dtype="float64")[sel]])
    tree = cKDTree(pts) if len(pts) else None
    xc = np.asarray(grid_like.x.values, dtype="float64")
    yc = np.asarray(grid_like.y.values, dtype="float64")
    if grid_like.chunks is None:
        data = _density_block(xc, yc, tree, radius_m, len(pts))
    else:
        cy, cx = grid_like.chunks

        def _blk(block_info=None):
            (y0, y1), (x0, x1) = block_info[None]["array-location"]
            return _density_block(xc[x0:x1], yc[y0:y1], tree, radius_m, len(pts))

        data = dsa.map_blocks(_blk, chunks=(cy, cx), dtype="float32", meta=np.array((), dtype="float32"))
    return _density_da(data, grid_like, d_min_m, radius_m)


def _density_from_catalogue(catalogue, xc, yc, d_min_m, radius_m) -> np.ndarray:
    from scipy.spatial import cKDTree

    sel = np.asarray(catalogue["diameter_m"], dtype="float64") >= d_min_m
    pts = np.column_stack([np.asarray(catalogue["x"], dtype="float64")[sel], np.asarray(catalogue["y"], dtype="float64")[sel]])
    tree = cKDTree(pts) if len(pts) else None
    return _density_block(xc, yc, tree, radius_m, len(pts))


def _density_da(data, grid_like, d_min_m, radius_m) -> xr.DataArray:
    out = xr.DataArray(data, dims=("y", "x"), coords={"y": grid_like.y, "x": grid_like.x}, name="crater_density")
    out.attrs = {"units": "km^-2", "long_name": f"craters >= {d_min_m:g} m per km^2 within {radius_m:g} m",
                 "d_min_m": float(d_min_m), "radius_m": float(radius_m)}
    if grid_like.rio.crs is not None:
        out = out.rio.write_crs(grid_like.rio.crs)
    return out


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------
_CTX_KEY = "_crater_levels"


def _ctx_levels(ctx) -> list:
    """Lazy pyramid of rim probabilities for a layer context (built once per context)."""
    levels = ctx.options.get(_CTX_KEY)
    if levels is None:
        kw = {k[len("crater_"):]: v for k, v in ctx.options.items()
              if k in ("crater_model", "crater_chip", "crater_scales", "crater_batch_size", "crater_inputs_fn", "crater_tta")}
        levels = crater_probability_levels(ctx.elevation, **kw)
        ctx.options[_CTX_KEY] = levels
    return levels


@register_layer("crater_probability", units="1", long_name="crater rim probability (crater network)",
                stats=("mean", "p95"), default=True, higher_is_better=False)
def _crater_probability_layer(ctx):
    return combine_levels(_ctx_levels(ctx), ctx.elevation)


@register_layer("crater_density", units="km^-2", long_name="crater density (craters >= D_min per km^2 within a radius)",
                stats=("mean", "max"), default=True, higher_is_better=False)
def _crater_density_layer(ctx):
    import dask

    levels = _ctx_levels(ctx)
    catalogue = dask.delayed(_extract_levels)(levels, ctx.elevation.rio.crs)
    return crater_density(catalogue, ctx.elevation, d_min_m=ctx.options.get("crater_d_min_m"),
                          radius_m=ctx.options.get("crater_radius_m"))


def _extract_levels(levels, crs):
    import dask

    with dask.config.set(scheduler="synchronous"):  # already inside a Dask task
        return extract_craters(levels, crs=crs)


# ---------------------------------------------------------------------------------------------
# command logic (CLI: `lunarmap craters`)
# ---------------------------------------------------------------------------------------------
def run_craters(dem: str | os.PathLike, out_dir: str | os.PathLike, *, model=None, chip: int = 256,
                scales: Sequence[int] = DEFAULT_SCALES, batch_size: int = 8, d_min_m: float | None = None,
                radius_m: float | None = None, progress: bool = True, tta: bool = False) -> dict[str, Any]:
    """Detect craters on a DEM file and write the products into ``out_dir``.

    Writes ``crater_probability.tif`` and ``crater_density.tif`` (COGs), ``craters.gpkg``
    (GeoPackage, the DEM's Moon CRS) and ``craters.csv`` (lat, lon, diameter_m, score), all
    atomically.

    Returns
    -------
    dict
        ``catalogue`` (GeoDataFrame), ``paths`` (dict name -> Path), ``n_craters``.

    Raises
    ------
    InputFileError, CRSError, NoDataError, UnitsError
        From :func:`lunarmap.io.open_dem`.
    ChipSizeError, ModelWeightsError
        Bad chip size; missing/corrupt weights.
    """
    from . import io as lio
    from .tiling import n_chips

    elevation = lio.open_dem(dem)
    out = Path(out_dir)
    model, inputs_fn = _resolve_model(model, None)
    halo = default_halo(model, chip)
    bar = None
    cb = None
    if progress:
        from tqdm.auto import tqdm

        total = 0
        for s in sorted({int(s) for s in scales}):
            ny = -(-elevation.sizes["y"] // s)
            nx = -(-elevation.sizes["x"] // s)
            ch = elevation.chunks
            chunks = None if ch is None else (tuple(-(-c // s) for c in ch[0]), tuple(-(-c // s) for c in ch[1]))
            total += n_chips((ny, nx), chunks, chip=chip, halo=halo)
        bar = tqdm(total=total, desc="crater chips", unit="chip")
        cb = bar.update
    try:
        det = detect_craters(elevation, model=model, inputs_fn=inputs_fn, chip=chip, halo=halo, scales=scales,
                             batch_size=batch_size, progress=cb, tta=tta)
    finally:
        if bar is not None:
            bar.close()
    dens = crater_density(det.catalogue, elevation, d_min_m=d_min_m, radius_m=radius_m)
    paths = {
        "crater_probability": out / "crater_probability.tif",
        "crater_density": out / "crater_density.tif",
        "gpkg": out / "craters.gpkg",
        "csv": out / "craters.csv",
    }
    lio.write_cog(det.probability, paths["crater_probability"])
    lio.write_cog(dens, paths["crater_density"])
    lio.write_crater_catalogue(det.catalogue, paths["gpkg"], paths["csv"])
    return {"catalogue": det.catalogue, "paths": paths, "n_craters": int(len(det.catalogue))}
