#!/usr/bin/env python
"""Train the crater-rim U-Net from scratch on synthetic and real DEM chips; write weights + model card.

Training data: synthetic chips (``lunarmap.synth``) and, with ``--n-real`` > 0, real LOLA chips
labelled with the Head et al. (2010) catalogue's rims (``lunarmap.catalog_chips``, DeepMoon's
recipe) from the global 0.25 deg LDEM in ``tiles/``, excluding everything south of 58 deg S so the
south-polar evaluation (``scripts/eval_craters.py``) stays unseen.

Reproducible: fixed seeds (numpy streams per chip via lunarmap.synth, torch.manual_seed),
deterministic data order and augmentation. CPU works (the shipped weights were trained on 2 CPU
threads); ``--device cuda`` is just faster.

    PYTHONPATH=$PWD OMP_WAIT_POLICY=PASSIVE python scripts/train_craters.py            # shipped recipe
    PYTHONPATH=$PWD python scripts/train_craters.py --n-train 64 --n-val 16 --epochs 2 \
        --out /tmp/smoke/crater_unet.safetensors                                      # 2-min smoke run

Writes ``<out>`` (safetensors) and ``<out minus .safetensors>.json`` (the model card) atomically
after every epoch, so an interrupted run still leaves a consistent, loadable pair.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from scipy.ndimage import binary_dilation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lunarmap import catalog_chips, synth  # noqa: E402
from lunarmap.io import atomic_path  # noqa: E402
from lunarmap.models import craters as cm  # noqa: E402

VAL_START = 1_000_000  # validation chips come from the same master seed, far from the training indices


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def make_data(n: int, start: int, args):
    """(elevation, rim_mask, gsd, crater tables) of ``n`` chips from index ``start``."""
    chips = list(synth.synth_dataset(n, size=args.chip, gsd_range=tuple(args.gsd_range), seed=args.seed,
                                     start=start, label_max_degradation=args.label_max_degradation))
    return (*synth.stack_chips(chips), [c.craters for c in chips])


SIZE_BINS_PX = (5, 10, 20, 40, 80, 130)


def recall_by_size(prob: np.ndarray, tables, thr: float = 0.5, halfwidth: float = 1.0) -> dict:
    """Per crater-diameter bin: mean share of each visible labelled rim ring (inside the chip) that has a
    prediction >= thr within 1 px, and the share of craters with >= 50 % of their ring recovered."""
    st = np.ones((3, 3), bool)
    out = {}
    rows = {b: [] for b in range(len(SIZE_BINS_PX) - 1)}
    n, h, w = prob.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for j in range(n):
        hit = binary_dilation(prob[j] >= thr, structure=st)
        t = tables[j]
        t = t[t.labelled & (t.rim_visible_fraction >= 0.5)]
        for _, c in t.iterrows():
            b = np.searchsorted(SIZE_BINS_PX, c.diameter_px, side="right") - 1
            if not 0 <= b < len(SIZE_BINS_PX) - 1:
                continue
            ring = np.abs(np.hypot(xx - c.x_px, yy - c.y_px) - c.diameter_px / 2) <= halfwidth
            if ring.sum() < 8:
                continue
            rows[b].append(float(hit[ring].mean()))
    for b, v in rows.items():
        key = f"{SIZE_BINS_PX[b]}-{SIZE_BINS_PX[b + 1]}px"
        out[key] = {"n_craters": len(v), "mean_ring_recall": round(float(np.mean(v)), 3) if v else None,
                    "share_ring_recall_ge_0.5": round(float(np.mean(np.array(v) >= 0.5)), 3) if v else None}
    return out


def make_real_data(n: int, start: int, dem, cat, args):
    """(elevation, rim_mask, gsd, crater tables) of ``n`` real catalogue chips from index ``start``."""
    chips = list(catalog_chips.catalog_dataset(
        n, dem, cat, size=args.real_chip, gsd_range=tuple(args.real_gsd_range), seed=args.seed, start=start,
        exclude_lat_below=args.real_exclude_lat_below, complete_diameter_m=args.real_complete_m))
    return (np.stack([c.elevation for c in chips]), np.stack([c.rim_mask for c in chips]),
            np.array([c.gsd for c in chips]), [c.craters for c in chips])


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/reflections of the square (k in 0..7) of an (H, W) array."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


def batch_inputs(pools, items, rng, augment: bool, crop: int):
    """Inputs and targets for ``items`` = [(pool, chip index)], ``pools`` = [(elevation, mask, gsd)]:
    random dihedral transform and random ``crop``-px window."""
    xs, ys = [], []
    for p, i in items:
        elev, mask, gsd = pools[p]
        size = elev.shape[-1]
        k = int(rng.integers(0, 8)) if augment else 0
        r0, c0 = (int(v) for v in rng.integers(0, size - crop + 1, 2))
        z = dihedral(elev[i], k)[r0:r0 + crop, c0:c0 + crop]
        m = dihedral(mask[i], k)[r0:r0 + crop, c0:c0 + crop]
        xs.append(cm.crater_inputs(z, gsd[i]))
        ys.append(m[None].astype(np.float32))
    return np.stack(xs), np.stack(ys)


def rim_metrics(prob: np.ndarray, mask: np.ndarray, thr: float = 0.5) -> dict:
    """Pixel precision/recall/F1/IoU of rims, strict and with 1-px tolerance."""
    pred = prob >= thr
    lab = mask.astype(bool)
    tp = float(np.sum(pred & lab))
    fp = float(np.sum(pred & ~lab))
    fn = float(np.sum(~pred & lab))
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    st = np.zeros((1, 3, 3), bool)
    st[0] = True
    lab_d = binary_dilation(lab, structure=st)
    pred_d = binary_dilation(pred, structure=st)
    pt = float(np.sum(pred & lab_d)) / max(float(pred.sum()), 1)
    rt = float(np.sum(lab & pred_d)) / max(float(lab.sum()), 1)
    return {
        "threshold": thr,
        "pixel_precision": round(p, 4), "pixel_recall": round(r, 4),
        "pixel_f1": round(2 * p * r / max(p + r, 1e-12), 4), "pixel_iou": round(tp / max(tp + fp + fn, 1), 4),
        "tolerant1px_precision": round(pt, 4), "tolerant1px_recall": round(rt, 4),
        "tolerant1px_f1": round(2 * pt * rt / max(pt + rt, 1e-12), 4),
        "rim_pixel_fraction": round(float(lab.mean()), 5),
    }


def receptive_field(net, in_channels: int, size: int = 640) -> tuple[int, int]:
    """(theoretical, effective) receptive-field width in pixels, measured by back-propagation.

    theoretical: width of the input window with any non-zero gradient of the centre output pixel
    (in eval mode); effective: width of the centred square holding 95 % of the |gradient| mass.
    """
    import torch

    net.eval()
    x = torch.randn(1, in_channels, size, size, requires_grad=True)
    y = net(x)
    y[0, 0, size // 2, size // 2].backward()
    g = x.grad.abs().sum(1)[0].numpy()
    ys, xs = np.nonzero(g > 0)
    theo = int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)
    c = size // 2
    total = g.sum()
    eff = size
    for h in range(1, size // 2):
        if g[c - h:c + h + 1, c - h:c + h + 1].sum() >= 0.95 * total:
            eff = 2 * h + 1
            break
    return theo, eff


def write_outputs(net, out: Path, card: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model": "lunarmap crater rim U-Net"})
    card["weights_file"] = out.name
    card["weights_sha256"] = cm.file_sha256(out)
    card["weights_bytes"] = out.stat().st_size
    with atomic_path(out.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--n-val", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chip", type=int, default=256, help="side of the generated chips, px")
    ap.add_argument("--crop", type=int, default=128, help="side of the random training crops, px (multiple of 32)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--gsd-range", type=float, nargs=2, default=(20.0, 500.0))
    ap.add_argument("--label-max-degradation", type=float, default=0.15,
                    help="label rims of craters with degradation kappa*t/R^2 <= this (synth.synth_crater_chip)")
    ap.add_argument("--n-real", type=int, default=1200,
                    help="real LOLA chips labelled with the Head et al. 2010 catalogue (lunarmap.catalog_chips)")
    ap.add_argument("--n-real-val", type=int, default=60)
    ap.add_argument("--real-dem", type=Path, default=ROOT / "tiles" / "lola_ldem256_global_eqc_0p25deg.tif")
    ap.add_argument("--real-catalogue", type=Path, default=ROOT / "tiles" / "head2010_craters_ge20km_global.csv")
    ap.add_argument("--real-chip", type=int, default=128, help="side of the real chips, px (>= --crop)")
    ap.add_argument("--real-gsd-range", type=float, nargs=2, default=(5000.0, 15000.0))
    ap.add_argument("--real-exclude-lat-below", type=float, default=-58.0,
                    help="no real chip pixel south of this latitude (keeps the south-polar evaluation unseen)")
    ap.add_argument("--real-complete-m", type=float, default=20000.0,
                    help="catalogue completeness diameter, m (Head et al. 2010: 20 km)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=cm.WEIGHTS_PATH)
    ap.add_argument("--data-cache", type=Path, help="npz to load the generated chips from, or save them to")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t_start = time.time()

    log(f"generating {args.n_train} training + {args.n_val} validation chips ({args.chip} px, seed {args.seed})")
    cache = args.data_cache
    key = (f"{args.n_train}-{args.n_val}-{args.chip}-{args.gsd_range[0]}-{args.gsd_range[1]}-{args.seed}"
           f"-{args.label_max_degradation}")
    if cache is not None and cache.is_file() and str(np.load(cache)["key"]) == key:
        d = np.load(cache)
        tr_e, tr_m, tr_g = d["tr_e"], d["tr_m"], d["tr_g"]
        va_e, va_m, va_g, va_t = make_data(args.n_val, VAL_START, args)
        log(f"training chips loaded from {cache}")
    else:
        tr_e, tr_m, tr_g, _ = make_data(args.n_train, 0, args)
        va_e, va_m, va_g, va_t = make_data(args.n_val, VAL_START, args)
        if cache is not None:
            with atomic_path(cache) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, tr_e=tr_e, tr_m=tr_m, tr_g=tr_g, key=key)
    t_data = time.time() - t_start
    log(f"data ready in {t_data:.0f} s; rim pixel fraction train {tr_m.mean():.4f}")
    va_x = np.stack([cm.crater_inputs(z, g) for z, g in zip(va_e, va_g)])
    pools = [(tr_e, tr_m, tr_g)]
    if args.n_real > 0:
        if args.real_chip < args.crop:
            ap.error("--real-chip must be >= --crop")
        t_real = time.time()
        dem = catalog_chips.load_global_dem(args.real_dem)
        cat = catalog_chips.load_catalogue(args.real_catalogue)
        re_e, re_m, re_g, _ = make_real_data(args.n_real, 0, dem, cat, args)
        rv_e, rv_m, rv_g, _ = make_real_data(args.n_real_val, VAL_START, dem, cat, args)
        rv_x = np.stack([cm.crater_inputs(z, g) for z, g in zip(rv_e, rv_g)])
        pools.append((re_e, re_m, re_g))
        log(f"{args.n_real} + {args.n_real_val} real chips in {time.time() - t_real:.0f} s; "
            f"rim pixel fraction {re_m.mean():.4f}")
        t_data = time.time() - t_start
    items_all = [(0, i) for i in range(args.n_train)] + [(1, i) for i in range(max(args.n_real, 0))]

    net = cm.build_crater_net(len(cm.INPUT_CHANNELS)).to(args.device)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.crop % cm.CHIP_MULTIPLE or args.crop > args.chip:
        ap.error(f"--crop must be a multiple of {cm.CHIP_MULTIPLE} and <= --chip")
    steps_per_epoch = len(items_all) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps_per_epoch * args.epochs,
                                                pct_start=0.15)
    bce = torch.nn.BCEWithLogitsLoss()

    def loss_fn(logits, target):
        p = torch.sigmoid(logits)
        inter = (p * target).sum()
        dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
        return bce(logits, target) + dice

    card = {
        "name": "lunarmap crater rim U-Net",
        "task": "per-pixel probability that a pixel lies on a crater rim ring (~2 px wide)",
        "classes": ["rim"],
        "architecture": {
            "library": "segmentation-models-pytorch", "class": "Unet", "encoder": cm.DEFAULT_ENCODER,
            "encoder_depth": cm.DEFAULT_ENCODER_DEPTH, "decoder_channels": list(cm.DEFAULT_DECODER_CHANNELS),
            "encoder_weights": None, "classes": 1, "activation": "sigmoid (applied in CraterModel.predict)",
            "n_parameters": n_params,
        },
        "chip_multiple": cm.CHIP_MULTIPLE,
        "input": {
            "in_channels": len(cm.INPUT_CHANNELS), "channels": list(cm.INPUT_CHANNELS),
            "function": "lunarmap.models.crater_inputs(elevation_chip, gsd)",
            "normalisation": ("per chip: ch0 = (z - nanmean z) / nanstd z clipped to +-8 (std 1 if flat); "
                              "ch1 = slope_deg / 45 (central differences at gsd); ch2 = 2*hillshade - 1 "
                              "(Horn 1981, azimuth 315, elevation 45); NaN pixels filled with the mean, "
                              "all channels 0 there"),
            "elevation_units": "m", "gsd_units": "m/pixel",
        },
        "training_data": {
            "generator": "lunarmap.synth.synth_dataset (synthetic DEMs; see lunarmap/synth.py docstring)",
            "chip_px": args.chip, "gsd_range_m": list(args.gsd_range), "gsd_sampling": "log-uniform",
            "crater_diameter_px_rendered": [3.0, 128.0], "crater_diameter_px_labelled_min": 5.0,
            "trained_for_diameters_px": [5, 110],
            "label": ("rim ring |dist - R(theta)| <= 1 px for craters >= 5 px with degradation kappa*t/R^2 <= "
                      f"{args.label_max_degradation} (overprinted rim parts removed: partial rims kept)"),
            "label_max_degradation": args.label_max_degradation,
            "n_train": args.n_train, "n_val": args.n_val, "seed": args.seed,
            "train_indices": [0, args.n_train], "val_indices": [VAL_START, VAL_START + args.n_val],
            "augmentation": "8 dihedral transforms of the elevation before computing inputs",
            "training_crop_px": args.crop,
            "validation_chip_px": args.chip,
        },
        "training_data_real": None if args.n_real <= 0 else {
            "generator": "lunarmap.catalog_chips.catalog_dataset (DeepMoon recipe: real DEM + catalogue rim rings)",
            "dem": f"{args.real_dem.name} (sha256 {cm.file_sha256(args.real_dem)})",
            "catalogue": f"{args.real_catalogue.name} (sha256 {cm.file_sha256(args.real_catalogue)})",
            "catalogue_complete_diameter_m": args.real_complete_m,
            "projection": "azimuthal equidistant centred on each chip, random rotation, bilinear resampling",
            "chip_px": args.real_chip, "gsd_range_m": list(args.real_gsd_range), "gsd_sampling": "log-uniform",
            "excluded": f"every chip lies entirely north of {args.real_exclude_lat_below} deg latitude "
                        "(the south-polar evaluation region is never seen)",
            "label": "rim ring |dist - R| <= 1 px of catalogue craters 5-128 px across",
            "n_train": args.n_real, "n_val": args.n_real_val, "train_indices": [0, args.n_real],
            "val_indices": [VAL_START, VAL_START + args.n_real_val],
            "mixing": "synthetic and real chips shuffled together, each epoch visits every chip once",
        },
        "training": {
            "epochs": args.epochs, "batch_size": args.batch, "optimizer": "AdamW", "lr_max": args.lr,
            "weight_decay": args.weight_decay, "schedule": "OneCycleLR pct_start=0.15",
            "loss": "BCE + soft Dice on rim masks (DeepMoon, Silburt et al. 2019, used BCE on rim rings)",
            "seed": args.seed, "device": args.device, "torch_threads": args.threads,
            "hardware": f"{cpu_model()}, {os.cpu_count()} logical CPUs (shared with other jobs)" if args.device == "cpu"
            else f"{args.device}: " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"),
            "torch_version": torch.__version__,
            "command": "PYTHONPATH=$PWD python scripts/train_craters.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
        "license": ("BSD-3-Clause (same as lunarmap); trained on synthetic data" + (
            " and on NASA LOLA LDEM_256 (public domain) with rims from Head et al. 2010 (Science 329)"
            if args.n_real > 0 else " only")),
        "references": [
            "Silburt et al. (2019) Lunar crater identification via deep learning. Icarus 317, 27-38.",
            "Ronneberger et al. (2015) U-Net. MICCAI.",
            "Howard et al. (2019) Searching for MobileNetV3. ICCV. (timm tf_mobilenetv3_small_minimal_100: no SE, ReLU, 3x3)",
            "Pike (1977) Size-dependence in the shape of fresh impact craters on the Moon.",
            "McGetchin et al. (1973) Radial thickness variation in impact crater ejecta. EPSL 20.",
            "Fassett & Thomson (2014) Crater degradation on the lunar maria. JGR Planets 119.",
            "Rosenburg et al. (2011) Global surface slopes and roughness of the Moon from LOLA. JGR 116.",
            "Neukum et al. (2001) Cratering records in the inner solar system. Space Sci. Rev. 96.",
            "Robbins (2019) A new global database of lunar impact craters >1-2 km. JGR Planets 124.",
        ],
    }

    rng = np.random.default_rng([args.seed, 7])
    step = 0
    history = []
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(len(items_all))
        t_ep = time.time()
        run_loss = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            xb, yb = batch_inputs(pools, [items_all[j] for j in idx], rng, augment=True, crop=args.crop)
            xb, yb = torch.from_numpy(xb).to(args.device), torch.from_numpy(yb).to(args.device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            run_loss += float(loss.detach())
            if (s + 1) % args.log_every == 0:
                log(f"epoch {epoch + 1}/{args.epochs} step {s + 1}/{steps_per_epoch} loss {run_loss / args.log_every:.4f} "
                    f"({(time.time() - t_ep) / (s + 1):.2f} s/step)")
                run_loss = 0.0
        net.eval()
        model = cm.CraterModel(net, {"input": {"in_channels": len(cm.INPUT_CHANNELS)}, "receptive_field_px": 0},
                               device=args.device)
        prob = model.predict(va_x)
        met = rim_metrics(prob, va_m)
        met_thr = {f"{t:.1f}": rim_metrics(prob, va_m, t)["tolerant1px_f1"] for t in (0.3, 0.4, 0.5, 0.6, 0.7)}
        by_size = recall_by_size(prob, va_t)
        history.append({"epoch": epoch + 1, "seconds": round(time.time() - t_ep, 1), **met})
        if args.n_real > 0:
            met_real = rim_metrics(model.predict(rv_x), rv_m)
            history[-1]["real_val"] = met_real
            card["metrics_real_val"] = {**met_real, "set": (
                f"{args.n_real_val} real chips (indices {VAL_START}..) from the same global DEM and catalogue as "
                "training: other centres/rotations/GSDs, but overlapping terrain, so NOT independent; the "
                "independent real-data evaluation is scripts/eval_craters.py (south polar cap)")}
            log(f"real validation (not independent): {met_real}")
        log(f"ring recall by size: {by_size}")
        log(f"epoch {epoch + 1} done in {time.time() - t_ep:.0f} s: val {met}; tolerant F1 by threshold {met_thr}")
        theo, eff = receptive_field(net, len(cm.INPUT_CHANNELS))
        net.eval()
        card["receptive_field_px"] = theo
        card["effective_receptive_field_px"] = eff
        card["receptive_field_note"] = ("receptive_field_px: width of the input window with non-zero gradient for "
                                        "one output pixel; effective: centred window with 95% of |gradient|")
        card["metrics_synthetic_val"] = {**met, "tolerant1px_f1_by_threshold": met_thr,
                                         "ring_recall_by_diameter": by_size,
                                         "set": f"{args.n_val} held-out synthetic chips"}
        card["training"]["epochs_completed"] = epoch + 1
        card["training"]["history"] = history
        card["training"]["wall_seconds"] = round(time.time() - t_start, 1)
        card["training"]["data_generation_seconds"] = round(t_data, 1)
        card["training"]["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        write_outputs(net, args.out, card)
        log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and its card")
    log(f"done in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
