"""Crater-rim segmentation network: inputs, architecture, shipped weights, prediction.

The network is a U-Net (Ronneberger et al. 2015) from segmentation-models-pytorch with a small
MobileNetV3-Small "minimal" encoder (Howard et al. 2019, via timm: no squeeze-excitation, so no
global pooling and a finite receptive field, which seamless tiled inference needs), trained from scratch on synthetic DEM
chips (:mod:`lunarmap.synth`) to mark crater **rims** (rings, as DeepMoon does, Silburt et al.
2019). Its weights ship with the package as ``weights/crater_unet.safetensors`` next to a JSON
model card; ``scripts/train_craters.py`` re-trains them from scratch.

References
----------
- Ronneberger, O., Fischer, P., & Brox, T. (2015). U-Net: convolutional networks for biomedical
  image segmentation. MICCAI.
- Howard, A., et al. (2019). Searching for MobileNetV3. ICCV.
- Silburt, A., et al. (2019). Lunar crater identification via deep learning. Icarus 317, 27-38.
- Horn, B. K. P. (1981). Hill shading and the reflectance map. Proc. IEEE 69, 14-47.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from lunarmap.errors import ChipSizeError, ModelWeightsError

__all__ = [
    "INPUT_CHANNELS",
    "DEFAULT_ENCODER",
    "DEFAULT_DECODER_CHANNELS",
    "CHIP_MULTIPLE",
    "WEIGHTS_PATH",
    "crater_inputs",
    "build_crater_net",
    "load_crater_model",
    "CraterModel",
    "file_sha256",
]

#: Input channels, in order (see :func:`crater_inputs`).
INPUT_CHANNELS = ("elevation_standardized", "slope_over_45deg", "hillshade_315_45_centered")
DEFAULT_ENCODER = "tu-tf_mobilenetv3_small_minimal_100"
DEFAULT_DECODER_CHANNELS = (64, 32, 24, 16, 16)
DEFAULT_ENCODER_DEPTH = 5
#: Chip height and width must be multiples of this (encoder output stride, 2**depth).
CHIP_MULTIPLE = 32
WEIGHTS_PATH = Path(__file__).with_name("weights") / "crater_unet.safetensors"
_Z_CLIP = 8.0


def crater_inputs(elevation_chip: np.ndarray, gsd: float) -> np.ndarray:
    """Network inputs for one DEM chip, with per-chip normalisation.

    Channels (``INPUT_CHANNELS``):

    0. ``elevation_standardized``: ``(z - nanmean(z)) / nanstd(z)`` (std 1 when the chip is
       flat), clipped to ±8;
    1. ``slope_over_45deg``: slope in degrees / 45, from central differences of ``z`` at
       ``gsd`` (the rim-to-floor walls of fresh craters are ~20-35°, Pike 1977);
    2. ``hillshade_315_45_centered``: Lambertian hillshade for a light at azimuth 315°,
       elevation 45° (Horn 1981), mapped to ``2·hs - 1``. Computed from the DEM, so it does not
       depend on the real illumination of the scene.

    NaN (nodata) pixels are filled with the chip mean before differencing and all channels are
    0 there; an all-NaN chip gives zeros.

    Parameters
    ----------
    elevation_chip : ndarray (H, W)
        Heights in metres, any float dtype, NaN for nodata. Rows run along -y (north-up raster).
    gsd : float
        Ground sampling distance of the chip, metres per pixel (> 0).

    Returns
    -------
    ndarray (3, H, W) float32
    """
    z = np.asarray(elevation_chip, dtype=np.float64)
    if z.ndim != 2:
        raise ChipSizeError(f"crater_inputs expects one 2-D elevation chip (H, W), got shape {z.shape}")
    if not (np.isfinite(gsd) and gsd > 0):
        raise ValueError(f"gsd must be a positive number of metres per pixel, got {gsd!r}")
    valid = np.isfinite(z)
    out = np.zeros((3,) + z.shape, dtype=np.float32)
    if not valid.any():
        return out
    mean = float(z[valid].mean())
    std = float(z[valid].std())
    std = std if std > 1e-6 else 1.0
    zf = np.where(valid, z, mean)
    if min(z.shape) >= 2:
        gy, gx = np.gradient(zf, gsd)  # gy along rows (down = south), gx along columns (east)
    else:
        gy = gx = np.zeros_like(zf)
    grad = np.hypot(gx, gy)
    slope = np.arctan(grad)
    # Horn (1981) hillshade; aspect with rows increasing southwards: dz/dnorth = -gy
    az, alt = np.radians(315.0), np.radians(45.0)
    dzdn = -gy
    lx, ly = np.sin(az) * np.cos(alt), np.cos(az) * np.cos(alt)  # light direction (east, north)
    hs = (np.sin(alt) - lx * gx - ly * dzdn) / np.sqrt(1.0 + grad * grad)
    hs = np.clip(hs, 0.0, 1.0)
    out[0] = np.clip((zf - mean) / std, -_Z_CLIP, _Z_CLIP)
    out[1] = np.degrees(slope) / 45.0
    out[2] = 2.0 * hs - 1.0
    out[:, ~valid] = 0.0
    return out


def build_crater_net(
    in_channels: int = len(INPUT_CHANNELS),
    encoder: str = DEFAULT_ENCODER,
    *,
    encoder_depth: int = DEFAULT_ENCODER_DEPTH,
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS,
):
    """The crater U-Net (segmentation-models-pytorch ``Unet``), randomly initialised.

    ``encoder_weights=None``: nothing is downloaded. One output channel (rim logit).

    Parameters
    ----------
    in_channels : int
        Number of input channels (3 for :func:`crater_inputs`).
    encoder : str
        smp encoder name (default MobileNetV3-Small-minimal via timm, ~0.9 M parameters in
        total; it has no squeeze-excitation, i.e. no global pooling, so the receptive field is
        finite).
    encoder_depth : int
        Encoder stages; chips must be multiples of ``2**encoder_depth``.
    decoder_channels : tuple of int
        Decoder widths, one per stage.

    Returns
    -------
    torch.nn.Module
    """
    from lunarmap._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name=encoder,
        encoder_weights=None,
        encoder_depth=encoder_depth,
        decoder_channels=tuple(decoder_channels),
        in_channels=in_channels,
        classes=1,
    )


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _card_path(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


class CraterModel:
    """A loaded crater-rim network and its model card.

    Attributes
    ----------
    net : torch.nn.Module
        The U-Net, in eval mode.
    card : dict
        The JSON model card.
    in_channels : int
    receptive_field_px : int
        Width (pixels) of the input window that can influence one output pixel (from the card;
        tiles should overlap by at least half of it on each side).
    """

    def __init__(self, net, card: dict, device: str = "cpu"):
        self.net = net.eval().to(device)
        self.card = card
        self.device = device
        self.in_channels = int(card["input"]["in_channels"])
        self.receptive_field_px = int(card["receptive_field_px"])
        self.chip_multiple = int(card.get("chip_multiple", CHIP_MULTIPLE))

    def __repr__(self) -> str:
        return (f"CraterModel(encoder={self.card['architecture']['encoder']!r}, in_channels={self.in_channels}, "
                f"receptive_field_px={self.receptive_field_px})")

    def predict(self, chips: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
        """Rim probability for a batch of input chips.

        Parameters
        ----------
        chips : ndarray (B, C, H, W) float32
            Stacked outputs of :func:`crater_inputs`; ``C == in_channels``; ``H`` and ``W``
            multiples of 32. NaN is treated as 0.
        batch_size : int
            Chips per forward pass.

        Returns
        -------
        ndarray (B, H, W) float32 in 0..1
            Probability that a pixel lies on a crater rim (ring ~2 px wide).

        Raises
        ------
        ChipSizeError
            Wrong number of dimensions or channels, or H/W not a multiple of 32.
        """
        import torch

        x = np.asarray(chips)
        if x.ndim != 4:
            raise ChipSizeError(f"predict expects chips of shape (B, C, H, W), got {x.shape}; "
                                "stack crater_inputs(...) outputs with np.stack")
        b, c, h, w = x.shape
        if c != self.in_channels:
            raise ChipSizeError(f"the crater model takes {self.in_channels} input channels, got {c}; "
                                "build inputs with lunarmap.models.crater_inputs")
        m = self.chip_multiple
        if h % m or w % m or h == 0 or w == 0:
            ph, pw = (-h) % m, (-w) % m
            raise ChipSizeError(
                f"chip height and width must be positive multiples of {m} (U-Net encoder stride); got {h}x{w}. "
                f"Pad by ({ph}, {pw}) pixels, e.g. np.pad(chips, ((0, 0), (0, 0), (0, {ph}), (0, {pw})), "
                "mode='reflect'), and crop the prediction back")
        out = np.empty((b, h, w), dtype=np.float32)
        x = np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0)
        with torch.inference_mode():
            for i in range(0, b, batch_size):
                t = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(self.device)
                out[i:i + batch_size] = torch.sigmoid(self.net(t))[:, 0].float().cpu().numpy()
        return out


def load_crater_model(path: str | os.PathLike | None = None, *, device: str = "cpu") -> CraterModel:
    """Load the crater network, verifying its weights against the model card.

    Parameters
    ----------
    path : str or path-like, optional
        A ``.safetensors`` weights file with its card at the same path with suffix ``.json``.
        Default: the weights shipped in ``lunarmap/models/weights/crater_unet.safetensors``.
    device : str
        torch device ('cpu', 'cuda').

    Returns
    -------
    CraterModel

    Raises
    ------
    ModelWeightsError
        The weights or card are missing or unreadable, the file's sha256 differs from the
        card's, or the tensors do not fit the architecture the card describes.
    """
    wpath = Path(path) if path is not None else WEIGHTS_PATH
    cpath = _card_path(wpath)
    fix = "re-install lunarmap or re-train with `python scripts/train_craters.py`"
    if not wpath.is_file():
        raise ModelWeightsError(f"crater model weights not found at {wpath}; {fix}")
    if not cpath.is_file():
        raise ModelWeightsError(f"model card {cpath} (JSON next to the weights) not found; {fix}")
    try:
        card = json.loads(cpath.read_text())
        arch = card["architecture"]
        want = card["weights_sha256"]
        in_ch = int(card["input"]["in_channels"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelWeightsError(f"model card {cpath} is unreadable or incomplete ({e}); {fix}") from e
    got = file_sha256(wpath)
    if got != want:
        raise ModelWeightsError(f"crater model weights {wpath} are corrupt or not the ones the card describes: "
                                f"sha256 {got} != card's {want}; {fix}")
    try:
        from safetensors.torch import load_file

        state = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error types
        raise ModelWeightsError(f"cannot read weights {wpath} ({e}); {fix}") from e
    try:
        net = build_crater_net(in_ch, arch["encoder"], encoder_depth=int(arch["encoder_depth"]),
                               decoder_channels=tuple(arch["decoder_channels"]))
        net.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ModelWeightsError(f"weights {wpath} do not fit the architecture in {cpath} ({e}); {fix}") from e
    return CraterModel(net, card, device=device)
