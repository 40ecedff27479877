"""Make ``torchvision`` importable next to a CPU-only ``torch``.

Why this module exists
----------------------
``segmentation-models-pytorch`` and ``timm`` import ``torchvision``. On machines with the CPU
wheel of torch 2.13 the only torchvision on the package registry (0.28.0) is a CUDA build whose
compiled extension needs ``libtorch_cuda``; importing it fails with
``RuntimeError: operator torchvision::nms does not exist`` because the extension never
registered its operators. There is no CPU torchvision wheel to install instead.

The fix (measured on the project machines, see ``ENVIRONMENT.md``): if loading the extension
fails, register the operator schemas torchvision's Python side needs at import time
(``torchvision::nms`` and ``torchvision::qnms``, whose fake kernels torchvision registers
itself) with a pure-torch CPU kernel, then import. Everything lunarmap uses
(``torchvision.models``, every smp encoder, ``timm.create_model``) works afterwards;
``torchvision.ops`` (it checks for the compiled extension) and ``torchvision.io`` decoding
do not; lunarmap uses neither.

When the real extension loads (a CUDA machine with a matching torch), this does nothing.
Call :func:`ensure_torchvision` before importing smp/timm/torchvision; ``lunarmap.models``
does so.
"""

from __future__ import annotations

import importlib.util

_DONE = False
_LIB = None  # keep the torch.library.Library alive


def _nms_cpu(boxes, scores, iou_threshold: float):
    """Greedy non-maximum suppression in plain torch (CPU fallback for ``torchvision::nms``).

    Parameters
    ----------
    boxes : Tensor (N, 4) float, ``x1, y1, x2, y2``
    scores : Tensor (N,) float
    iou_threshold : float

    Returns
    -------
    Tensor (K,) int64 indices of kept boxes, by decreasing score.
    """
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        xx1 = torch.maximum(x1[idx], x1)
        yy1 = torch.maximum(y1[idx], y1)
        xx2 = torch.minimum(x2[idx], x2)
        yy2 = torch.minimum(y2[idx], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[idx] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)


def _extension_loads() -> bool:
    """True when torchvision's compiled extension registers its operators."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return True  # nothing to patch; the import error will be the real one
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access is the probe
        return True
    except (AttributeError, RuntimeError):
        pass
    import glob
    import os

    pkg_dir = os.path.dirname(spec.origin)
    for so in glob.glob(os.path.join(pkg_dir, "_C*.so")) + glob.glob(os.path.join(pkg_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(so)
            torch.ops.torchvision.nms  # noqa: B018
            return True
        except (OSError, RuntimeError, AttributeError):
            return False
    return False


def ensure_torchvision() -> None:
    """Register a CPU ``torchvision::nms`` if torchvision's extension cannot load. Idempotent."""
    global _DONE, _LIB
    if _DONE:
        return
    _DONE = True
    if _extension_loads():
        return
    import torch

    _LIB = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        _LIB.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.impl(name, _nms_cpu, "CPU")
