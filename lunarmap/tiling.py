"""Tiled inference: cut a raster into overlapping chips, run a model on batches, blend back.

A network sees a fixed-size ``chip``; its output is unreliable within its receptive field of the
chip border (the network "sees" padding there). :class:`TileGrid` therefore places chips with a
stride smaller than the chip so that every output pixel comes from the *interior* of at least one
chip, and stitches the chips with a weight window that is

* zero in a margin of ``halo`` pixels at each chip border (outputs there are never used),
* a linear ramp of ``ramp`` pixels inside that margin, and
* one in the chip centre,

so overlapping ramps of neighbouring chips sum to one (a partition of unity when
``stride = chip - 2*halo - ramp``): no seams at chip borders. This is the rule of TorchGeo's
``GridGeoSampler`` ("overlap approximately the receptive field", ``torchgeo/samplers/single.py``),
with the overlap split into a discarded margin (``halo``) and a blending ramp.

:func:`predict_tiled` applies this per Dask chunk: each chunk is extended with its neighbours'
pixels (``dask.array.overlap``, mirrored at the raster edge) and its chips are placed on the chip
lattice of the *whole* raster. With ``exact=True`` (default) the overlap depth is
``chip - halo``, so every chip that influences a chunk is computed whole inside that chunk and the
result equals the single-block result for ANY model (per-chip normalisation and receptive fields
wider than the halo included): chunk borders leave no trace in the output (tested; measured on a
real DEM with the crater U-Net in docs/craters.md). ``exact=False`` uses ``depth = halo`` (as
``map_overlap(depth=halo)`` in xarray-spatial), cheaper, and exact only for models whose
receptive-field radius is at most ``halo``.

The module is model-agnostic: the crater network (:mod:`lunarmap.craters`) and the hazard
network reuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import xarray as xr

from .errors import ChipSizeError

PredictFn = Callable[[np.ndarray], np.ndarray]
"""``predict_fn(chips (B, C, chip, chip) float32) -> (B, chip, chip)`` (or ``(B, K, chip, chip)``)."""

InputsFn = Callable[[np.ndarray], np.ndarray]
"""``inputs_fn(raster_chip (chip, chip) float) -> (C, chip, chip) float32`` (model inputs)."""


def default_stride(chip: int, halo: int) -> int:
    """Stride giving a partition-of-unity blend: ``chip - 2*halo - ramp`` with ``ramp = halo``.

    Falls back to ``chip - 2*halo`` (no blending ramp, plain cropping) when the chip is too small
    for a ramp, and never returns less than 1.
    """
    inner = chip - 2 * halo
    ramp = min(halo, inner // 2)
    return max(1, inner - ramp)


def check_chip(chip: int, halo: int, *, multiple: int = 1, stride: int | None = None) -> None:
    """Validate a chip/halo/stride combination; raise :class:`ChipSizeError` saying how to fix it."""
    if not isinstance(chip, (int, np.integer)) or chip <= 0:
        raise ChipSizeError(f"chip must be a positive integer number of pixels, got {chip!r}.")
    if halo < 0:
        raise ChipSizeError(f"halo must be >= 0 pixels, got {halo}.")
    if multiple > 1 and chip % multiple:
        lo = (chip // multiple) * multiple
        hi = lo + multiple
        raise ChipSizeError(
            f"chip={chip} px is not a multiple of {multiple}, which the model requires (its encoder "
            f"downsamples {int(math.log2(multiple))} times). Use chip={hi}"
            + (f" or chip={lo}" if lo > 2 * halo else "")
            + "."
        )
    if chip <= 2 * halo:
        need = 2 * halo + 1
        if multiple > 1:
            need = int(math.ceil(need / multiple) * multiple)
        raise ChipSizeError(
            f"chip={chip} px is not larger than twice the halo ({halo} px, the part of each chip "
            f"border discarded because the model's receptive field reaches past it): no pixel would "
            f"be predicted. Use chip >= {need} px (typically 4-8x the halo), or a smaller halo."
        )
    if stride is not None:
        if stride < 1 or stride > chip - 2 * halo:
            raise ChipSizeError(
                f"stride={stride} px must be between 1 and chip - 2*halo = {chip - 2 * halo} px so that "
                f"every pixel lies in the valid interior of some chip (default: "
                f"{default_stride(chip, halo)} px)."
            )


def _ramp_window_1d(chip: int, halo: int, stride: int) -> np.ndarray:
    """1-D blending weights: 0 in the halo margins, linear ramps where neighbours overlap, 1 inside."""
    inner = chip - 2 * halo
    ramp = max(0, min(inner - stride, inner // 2))
    w = np.zeros(chip, dtype="float64")
    core = np.ones(inner, dtype="float64")
    if ramp > 0:
        up = (np.arange(ramp) + 0.5) / ramp  # > 0 everywhere: every interior pixel has weight
        core[:ramp] = up
        core[inner - ramp :] = up[::-1]
    w[halo : halo + inner] = core
    return w


def _origins(n: int, chip: int, stride: int) -> list[int]:
    """Chip origins along one axis of length ``n >= chip``: 0, stride, ..., last aligned to the end."""
    if n <= chip:
        return [0]
    o = list(range(0, n - chip + 1, stride))
    if o[-1] != n - chip:
        o.append(n - chip)
    return o


def _lattice_origins(n: int, chip: int, stride: int, offset: int, global_len: int) -> list[int]:
    """Origins (local coords) of the chips of a *global* chip lattice that fit in a local array.

    The global lattice is ``_origins(global_len, chip, stride)`` in global padded coordinates; the
    local array starts at global coordinate ``offset``. Only lattice chips lying fully inside
    ``[0, n)`` are used (no extra chips: they would change results), so the caller must give the
    array enough context (``depth >= chip - halo``) for the lattice to cover its core; the
    uncovered margins come out NaN and are trimmed.
    """
    if n <= chip:
        return [0]
    loc = [g - offset for g in _origins(global_len, chip, stride) if 0 <= g - offset <= n - chip]
    return loc or [0]


@dataclass(frozen=True)
class TileGrid:
    """Overlapping chips over a 2-D array that already carries ``halo`` pixels of context.

    The array handed to :meth:`predict` is either a Dask block extended by ``map_overlap``
    (``pad=False``) or a whole raster, which :meth:`predict` pads with ``halo`` reflected pixels
    (``pad=True``). Arrays smaller than a chip are reflect-padded up to the chip size.

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` of the array (without padding).
    chip : int
        Chip edge in pixels (square chips). Must exceed ``2*halo`` and be a multiple of
        ``multiple``.
    halo : int
        Pixels at each chip border whose outputs are discarded (receptive-field radius of the
        model, or the stated rule of the caller).
    stride : int, optional
        Chip step in pixels, ``1 <= stride <= chip - 2*halo``. Default
        :func:`default_stride` (``chip - 3*halo``: overlap = halo margins + blending ramp).
    multiple : int
        Chip sizes must be multiples of this (e.g. 32 for a 5-level U-Net encoder).
    pad : bool
        Whether :meth:`predict` reflect-pads the array by ``halo`` on every side.
    lattice : ((offset_y, len_y), (offset_x, len_x)), optional
        Place chips on the lattice of a larger raster: the array starts at global (padded)
        coordinates ``offset`` of a padded raster of length ``len`` per axis; chips then coincide
        with those of a whole-raster grid (used per Dask chunk so chunking does not change results).

    Raises
    ------
    ChipSizeError
        ``chip <= 2*halo``, ``chip`` not a multiple of ``multiple``, or a stride that leaves gaps.
    """

    shape: tuple[int, int]
    chip: int
    halo: int
    stride: int | None = None
    multiple: int = 1
    pad: bool = True
    lattice: tuple | None = None

    def __post_init__(self):
        check_chip(self.chip, self.halo, multiple=self.multiple, stride=self.stride)
        if self.stride is None:
            object.__setattr__(self, "stride", default_stride(self.chip, self.halo))

    # -- geometry -------------------------------------------------------------------------------
    @property
    def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((top, bottom), (left, right))`` pixels added around the array before chipping."""
        p = self.halo if self.pad else 0
        out = []
        for n in self.shape:
            extra = max(0, self.chip - (n + 2 * p))
            out.append((p, p + extra))
        return tuple(out)  # type: ignore[return-value]

    @property
    def padded_shape(self) -> tuple[int, int]:
        (t, b), (l, r) = self.padding
        return (self.shape[0] + t + b, self.shape[1] + l + r)

    @property
    def origins(self) -> list[tuple[int, int]]:
        """Upper-left ``(row, col)`` of every chip in padded-array coordinates, row-major."""
        ny, nx = self.padded_shape
        if self.lattice is None:
            rows = _origins(ny, self.chip, self.stride)
            cols = _origins(nx, self.chip, self.stride)
        else:
            (oy, gy), (ox, gx) = self.lattice
            rows = _lattice_origins(ny, self.chip, self.stride, oy, gy)
            cols = _lattice_origins(nx, self.chip, self.stride, ox, gx)
        return [(r, c) for r in rows for c in cols]

    def __len__(self) -> int:
        return len(self.origins)

    def window(self) -> np.ndarray:
        """``(chip, chip)`` float64 blending weights (outer product of the 1-D ramp windows)."""
        w = _ramp_window_1d(self.chip, self.halo, self.stride)
        return np.outer(w, w)

    # -- data -----------------------------------------------------------------------------------
    def pad_array(self, arr: np.ndarray) -> np.ndarray:
        """Reflect-pad ``arr`` (NaN-aware: NaNs stay NaN and are filled per chip later)."""
        arr = np.asarray(arr)
        if arr.shape[-2:] != tuple(self.shape):
            raise ValueError(f"array shape {arr.shape[-2:]} != grid shape {self.shape}")
        pads = [(0, 0)] * (arr.ndim - 2) + list(self.padding)
        if not any(a or b for a, b in pads):
            return arr
        return np.pad(arr, pads, mode="symmetric")

    def iter_batches(self, padded: np.ndarray, batch_size: int) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
        """Yield ``(origins, chips)`` with ``chips`` of shape ``(B, ..., chip, chip)`` (B <= batch_size)."""
        origins = self.origins
        c = self.chip
        for i in range(0, len(origins), batch_size):
            batch = origins[i : i + batch_size]
            yield batch, np.stack([padded[..., r : r + c, q : q + c] for r, q in batch])

    def predict(
        self,
        arr: np.ndarray,
        predict_fn: PredictFn,
        *,
        batch_size: int = 8,
        inputs_fn: InputsFn | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Run ``predict_fn`` on every chip of ``arr`` and blend the outputs back.

        Parameters
        ----------
        arr : numpy.ndarray, shape (ny, nx)
            The raster (any float units; NaN = nodata).
        predict_fn : callable
            ``(B, C, chip, chip) float32 -> (B, chip, chip)`` or ``(B, K, chip, chip)``.
        batch_size : int
            Chips per ``predict_fn`` call.
        inputs_fn : callable, optional
            ``(chip, chip) -> (C, chip, chip)`` float32 model inputs from a raster chip (after NaNs
            are filled with the chip's mean). Default: the chip itself as one channel.
        progress : callable, optional
            Called with the number of chips done after every batch.

        Returns
        -------
        numpy.ndarray, float32, shape (ny, nx) or (K, ny, nx)
            Blended outputs; NaN where the input is NaN (and for chips that are all nodata).
        """
        arr = np.asarray(arr, dtype="float32")
        padded = self.pad_array(arr)
        w = self.window()
        acc = None
        wsum = np.zeros(self.padded_shape, dtype="float64")
        c = self.chip
        for origins, chips in self.iter_batches(padded, batch_size):
            valid = np.isfinite(chips)
            keep = valid.any(axis=(1, 2))
            inputs = []
            for ch, v in zip(chips, valid):
                if not v.all():
                    ch = np.where(v, ch, np.nanmean(ch) if v.any() else 0.0).astype("float32")
                x = inputs_fn(ch) if inputs_fn is not None else ch[None]
                inputs.append(np.asarray(x, dtype="float32"))
            batch = np.stack(inputs)
            if keep.any():
                out = np.asarray(predict_fn(batch[keep]), dtype="float64")
            else:
                out = np.zeros((0, c, c))
            if out.ndim == 3:
                out = out[:, None]
            if acc is None:
                acc = np.zeros((out.shape[1], *self.padded_shape), dtype="float64")
            j = 0
            for (r, q), k in zip(origins, keep):
                if not k:
                    continue
                acc[:, r : r + c, q : q + c] += out[j] * w
                wsum[r : r + c, q : q + c] += w
                j += 1
            if progress is not None:
                progress(len(origins))
        if acc is None:  # pragma: no cover - every grid has >= 1 chip
            acc = np.zeros((1, *self.padded_shape))
        with np.errstate(invalid="ignore", divide="ignore"):
            res = acc / wsum
        res[:, wsum == 0] = np.nan
        (t, _), (l, _) = self.padding
        res = res[:, t : t + self.shape[0], l : l + self.shape[1]]
        res[:, ~np.isfinite(arr)] = np.nan
        res = res.astype("float32")
        return res[0] if res.shape[0] == 1 else res


def predict_tiled(
    da: xr.DataArray,
    predict_fn: PredictFn,
    *,
    chip: int,
    halo: int,
    stride: int | None = None,
    batch_size: int = 8,
    inputs_fn: InputsFn | None = None,
    multiple: int = 1,
    progress: Callable[[int], None] | None = None,
    name: str | None = None,
    exact: bool = True,
) -> xr.DataArray:
    """Apply a chip model to a whole raster, lazily, per Dask chunk, with blended stitching.

    Parameters
    ----------
    da : xarray.DataArray
        dims ``("y", "x")``, any size, Dask- or numpy-backed (numpy is wrapped as one chunk).
        NaN = nodata.
    predict_fn : callable
        ``(B, C, chip, chip) float32 -> (B, chip, chip)`` single-band output (e.g. a probability).
    chip, halo, stride, multiple : int
        See :class:`TileGrid`. Chunks are extended by ``depth`` pixels from their neighbours
        (``dask.array.overlap``, reflected at the raster edge; chunks smaller than ``depth`` are
        merged first) and chips are placed on the whole raster's chip lattice.
    exact : bool
        ``True`` (default): ``depth = chip - halo``, so every chip that influences a chunk is
        computed whole and the result is identical to a single-block run for ANY model (no seams
        at chunk borders, at the cost of recomputing chips near chunk borders: ~1.4x chips for
        1024-px chunks and 256-px chips). ``False``: ``depth = halo`` (cheaper; identical only for
        models whose receptive-field radius is <= ``halo``).
    batch_size : int
        Chips per ``predict_fn`` call.
    inputs_fn : callable, optional
        ``(chip, chip) -> (C, chip, chip)`` model inputs from a raster chip.
    progress : callable, optional
        Called with the number of chips finished after every batch (thread-safe callables only
        when Dask runs chunks in parallel).
    name : str, optional
        Name of the returned DataArray.

    Returns
    -------
    xarray.DataArray
        Lazy (Dask) float32, same dims/coords/CRS as ``da``; NaN where ``da`` is NaN. Nothing is
        computed until ``.compute()``/writing.

    Raises
    ------
    ChipSizeError
        Invalid chip/halo/stride (see :func:`check_chip`).
    """
    import dask.array as dsa
    import rioxarray  # noqa: F401 - registers the .rio accessor

    if da.ndim != 2 or tuple(da.dims) != ("y", "x"):
        raise ValueError(f"predict_tiled needs a 2-D DataArray with dims ('y', 'x'), got {da.dims}")
    check_chip(chip, halo, multiple=multiple, stride=stride)
    stride_ = stride or default_stride(chip, halo)
    if da.chunks is None:
        da = da.chunk({"y": -1, "x": -1})
    data = da.data.astype("float32")
    ny, nx = data.shape
    depth = (chip - halo) if exact else halo

    def _whole(block: np.ndarray) -> np.ndarray:
        grid = TileGrid(block.shape, chip=chip, halo=halo, stride=stride, multiple=multiple, pad=True)
        return grid.predict(block, predict_fn, batch_size=batch_size, inputs_fn=inputs_fn, progress=progress)

    if data.numblocks == (1, 1) or min(ny, nx) < 2 * depth:
        out = data.rechunk(-1).map_blocks(_whole, dtype="float32", meta=np.array((), dtype="float32"))
        if da.chunks is not None:
            out = out.rechunk(da.data.chunks)
    else:
        data = _rechunk_for_halo(data, depth)
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in data.chunks]
        glen = (ny + 2 * halo, nx + 2 * halo)

        def _block(block: np.ndarray, block_info=None) -> np.ndarray:
            i, j = block_info[0]["chunk-location"]
            lattice = None
            if exact:
                lattice = ((int(starts[0][i]) - depth + halo, glen[0]), (int(starts[1][j]) - depth + halo, glen[1]))
            grid = TileGrid(block.shape, chip=chip, halo=halo, stride=stride, multiple=multiple, pad=False,
                            lattice=lattice)
            out = grid.predict(block, predict_fn, batch_size=batch_size, inputs_fn=inputs_fn, progress=progress)
            return out.astype("float32")

        ext = dsa.overlap.overlap(data, depth={0: depth, 1: depth}, boundary={0: "reflect", 1: "reflect"})
        out = ext.map_blocks(_block, dtype="float32", meta=np.array((), dtype="float32"))
        out = dsa.overlap.trim_internal(out, {0: depth, 1: depth}, boundary={0: "reflect", 1: "reflect"})
    res = xr.DataArray(out, dims=da.dims, coords=da.coords, name=name or da.name)
    res.attrs = {k: v for k, v in da.attrs.items() if k in ("gsd", "source")}
    res.attrs.update({"chip": int(chip), "halo": int(halo), "stride": int(stride_)})
    if hasattr(da, "rio") and da.rio.crs is not None:
        res = res.rio.write_crs(da.rio.crs)
    return res


def _merge_small(chunks: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Merge chunks smaller than ``size`` into a neighbour (the previous one, else the next)."""
    out: list[int] = []
    for c in chunks:
        if out and (c < size or out[-1] < size):
            out[-1] += c
        else:
            out.append(c)
    return tuple(out)


def _rechunk_for_halo(data, halo: int):
    """Merge chunks so every chunk is at least ``halo`` wide (``map_overlap`` needs it)."""
    if halo > 0 and any(min(c) < halo for c in data.chunks):
        data = data.rechunk(tuple(_merge_small(c, halo) for c in data.chunks))
    return data


def n_chips(shape: tuple[int, int], chunks: tuple[tuple[int, ...], tuple[int, ...]] | None, *, chip: int, halo: int,
            stride: int | None = None, exact: bool = True) -> int:
    """Number of chips :func:`predict_tiled` runs for a raster of ``shape`` and Dask ``chunks``
    (for progress bars)."""
    ny, nx = shape
    depth = (chip - halo) if exact else halo
    if chunks is None or (len(chunks[0]) == 1 and len(chunks[1]) == 1) or min(ny, nx) < 2 * depth:
        return len(TileGrid(shape, chip=chip, halo=halo, stride=stride, pad=True))
    cy, cx = (_merge_small(c, depth) for c in chunks)
    sy = np.concatenate([[0], np.cumsum(cy)[:-1]])
    sx = np.concatenate([[0], np.cumsum(cx)[:-1]])
    total = 0
    for a, y0 in zip(cy, sy):
        for b, x0 in zip(cx, sx):
            lattice = ((int(y0) - depth + halo, ny + 2 * halo), (int(x0) - depth + halo, nx + 2 * halo)) if exact else None
            total += len(TileGrid((a + 2 * depth, b + 2 * depth), chip=chip, halo=halo, stride=stride, pad=False,
                                  lattice=lattice))
    return total
