"""Benchmark lunarmap.horizon: speed (pixel x azimuth per second) and error against the reference.

Reports, in one process (ratios are what count on a shared machine):

* the fast method (maximum-mipmap pruned exact march), the brute-force reference (every cell) and
  the opt-in line sweep, on the real Shackleton tile (200 m) with the 480 m LOLA far field;
* the error of fast and sweep against the reference (max / mean / p99, deg), and how far a naive
  fixed-step ray march (0.5 and 0.1 px steps, bilinear samples) is from the exact reference;
* scaling with azimuth count (90..720) and DEM size (128^2, 256^2 with far field; 512^2 LDEM).

Rates are medians of ``--repeats`` runs over a window of observer pixels (the whole DEM is the
terrain); each configuration is compiled (warmed up) before timing.

    PYTHONPATH=$PWD python scripts/bench_horizon.py --threads 2 --out docs/horizon.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from lunarmap.horizon import _bilinear, _Prepared, _slab  # noqa: E402
from lunarmap.io import atomic_path, open_dem  # noqa: E402

TILES = Path(__file__).resolve().parents[1] / "tiles"


@njit(cache=True)
def _step_march(z, i0, i1, j0, j1, sin_a, cos_a, g, frac, inv2r, out):
    """Naive fixed-step ray march (no far field): bilinear samples every ``frac`` pixel."""
    ny, nx = z.shape
    for i in range(i0, i1):
        for j in range(j0, j1):
            for a in range(sin_a.shape[0]):
                ux, uy = sin_a[a], -cos_a[a]
                t0, t1 = _slab(float(j), float(i), ux, uy, nx - 1.0, ny - 1.0)
                best = -np.inf
                k = 1
                while k * frac <= t1:
                    t = k * frac
                    zs = _bilinear(z, j + t * ux, i + t * uy)
                    d = t * g
                    v = (zs - z[i, j]) / d - d * inv2r
                    if v > best:
                        best = v
                    k += 1
                out[a, i - i0, j - j0] = math.degrees(math.atan(best))


def _timed(fn, repeats):
    """Median wall time, median CPU time (all threads of this process) and the last output."""
    fn()  # warm-up (numba compile, caches)
    ts, cs = [], []
    out = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return statistics.median(ts), statistics.median(cs), out


def _window(n_dem, size):
    c = n_dem // 2
    return c - size // 2, c - size // 2 + size


def _err(a, b):
    e = np.abs(a.astype("float64") - b.astype("float64"))
    e = e[np.isfinite(e)]
    return float(e.max()), float(e.mean()), float(np.percentile(e, 99))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=48, help="observer window edge (px) for the fast rate")
    ap.add_argument("--ref-window", type=int, default=16, help="observer window edge (px) for the reference")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    ap.add_argument("--hybrid", action="store_true",
                    help="only the whole-DEM hybrid-vs-exact section (360 azimuths); written between "
                         "<!-- bench-hybrid --> markers of --out")
    args = ap.parse_args(argv)
    if args.hybrid:
        return hybrid_section(args, argv)
    th, rep = args.threads, args.repeats
    load0 = os.getloadavg()

    near = open_dem(TILES / "shackleton_ridge_lola10m_200m_51km.tif", chunks=None)
    far = open_dem(TILES / "lola_ldem80s_480m_south_pole_250km.tif", chunks=None)
    ldem = open_dem(TILES / "lola_ldem80s_480m_south_pole_250km.tif", chunks=None)
    lines = []
    P = lines.append

    def prep(dem, far_dem, n_az):
        if far_dem is None:
            return _Prepared(dem.values, dem.x.values, dem.y.values, n_azimuths=n_az)
        return _Prepared(dem.values, dem.x.values, dem.y.values, far_dem.values, far_dem.x.values,
                         far_dem.y.values, n_azimuths=n_az)

    def rate(p, w, method):
        n = p.z.shape[0]
        r0, r1 = _window(n, w)
        dt, ct, out = _timed(lambda: p.run(r0, r1, r0, r1, method=method, threads=th), rep)
        return p.n_azimuths * w * w / dt, p.n_azimuths * w * w / ct, out

    # ---- 1. main comparison: Shackleton 256^2 @ 200 m + 480 m far field, 360 azimuths -------------
    n_az = 360
    p = prep(near, far, n_az)
    rw = args.ref_window
    r_fast_w, c_fast_w, _ = rate(p, args.window, "fast")
    r_fast, c_fast, h_fast = rate(p, rw, "fast")
    r_brute, c_brute, h_ref = rate(p, rw, "brute")
    r_sweep, c_sweep, h_sweep = rate(p, rw, "sweep")
    e_fast = _err(h_fast, h_ref)
    e_sweep = _err(h_sweep, h_ref)
    # naive fixed-step march vs the exact reference (near DEM only, same window)
    pn = prep(near, None, n_az)
    r0, r1 = _window(256, rw)
    h_ref_near = pn.run(r0, r1, r0, r1, method="brute", threads=th)
    step_rows = []
    for frac in (0.5, 0.1):
        o = np.empty((n_az, rw, rw))
        dt, ct, _ = _timed(lambda: _step_march(pn.z, r0, r1, r0, r1, pn.sin_a, pn.cos_a, 200.0, frac, pn.inv2r, o), 1)
        step_rows.append((frac, n_az * rw * rw / ct, _err(o, h_ref_near)))

    P("## Speed and error (Shackleton ridge tile 256 x 256 @ 200 m + LOLA 480 m far field, 360 azimuths)")
    P("")
    P(f"Threads: {th}; median of {rep} repeats; observers: central {rw} x {rw} window (fast also "
      f"{args.window} x {args.window}). Rates in million pixel x azimuth per second (M/s): *wall* = per "
      f"second of elapsed time on the shared machine; *CPU* = per CPU-second summed over threads, i.e. "
      f"the rate of ONE dedicated core (x {th} = what {th} dedicated cores give with perfect scaling).")
    P("")
    P("| method | rate wall (M/s) | rate CPU (M/s per core) | speed vs reference (CPU) | max err (deg) | mean err (deg) | p99 err (deg) |")
    P("|---|---|---|---|---|---|---|")
    P(f"| reference (`brute`: every cell, exact on the bilinear surface) | {r_brute / 1e6:.3f} | {c_brute / 1e6:.3f} | 1.0x | 0 | 0 | 0 |")
    P(f"| **fast** (max-mipmap pruned, {rw}^2 window) | {r_fast / 1e6:.3f} | {c_fast / 1e6:.3f} | {c_fast / c_brute:.1f}x | "
      f"{e_fast[0]:.2g} | {e_fast[1]:.2g} | {e_fast[2]:.2g} |")
    P(f"| **fast** ({args.window}^2 window) | {r_fast_w / 1e6:.3f} | {c_fast_w / 1e6:.3f} | {c_fast_w / c_brute:.1f}x | = | = | = |")
    P(f"| sweep (line sweep + convex hull, 8 px exact near field, 0.5 px lines) | {r_sweep / 1e6:.3f} | {c_sweep / 1e6:.3f} | "
      f"{c_sweep / c_brute:.1f}x | {e_sweep[0]:.3f} | {e_sweep[1]:.4f} | {e_sweep[2]:.3f} |")
    for frac, r, e in step_rows:
        P(f"| naive fixed-step march, {frac} px step, near DEM only (vs reference without far field) | "
          f"n/a | {r / 1e6:.3f} | n/a | {e[0]:.3f} | {e[1]:.4f} | {e[2]:.3f} |")
    P("")

    # ---- 1b. a whole DEM in one chunk (how horizon_map runs on a small tile) ------------------------
    c = 128
    crop = near.isel(y=slice(c - 64, c + 64), x=slice(c - 64, c + 64))
    pw = prep(crop, far, 90)
    dt_f, ct_f, h_f = _timed(lambda: pw.run(0, 128, 0, 128, method="fast", threads=th), rep)
    dt_s, ct_s, h_s = _timed(lambda: pw.run(0, 128, 0, 128, method="sweep", threads=th), rep)
    e_w = _err(h_s, h_f)
    nw = 90 * 128 * 128
    P("## Whole DEM (Shackleton 128 x 128 centre crop @ 200 m + LOLA 480 m far field, 90 azimuths, all pixels)")
    P("")
    P("| method | rate wall (M/s) | rate CPU (M/s per core) | max err vs fast (= reference) | mean | p99 |")
    P("|---|---|---|---|---|---|")
    P(f"| fast | {nw / dt_f / 1e6:.3f} | {nw / ct_f / 1e6:.3f} | 0 | 0 | 0 |")
    P(f"| sweep | {nw / dt_s / 1e6:.3f} | {nw / ct_s / 1e6:.3f} | {e_w[0]:.3f} | {e_w[1]:.4f} | {e_w[2]:.3f} |")
    P("")

    # ---- 2. azimuth count ------------------------------------------------------------------------
    P("## Scaling with azimuth count (same tile + far field, fast, observers 32 x 32)")
    P("")
    P("| n_azimuths | rate wall (M/s) | rate CPU (M/s per core) | CPU time per observer pixel (ms) |")
    P("|---|---|---|---|")
    for naz in (90, 180, 360, 720):
        pa = prep(near, far, naz)
        r, c, _ = rate(pa, 32, "fast")
        P(f"| {naz} | {r / 1e6:.3f} | {c / 1e6:.3f} | {1e3 * naz / c:.2f} |")
    P("")

    # ---- 3. DEM size -----------------------------------------------------------------------------
    P("## Scaling with DEM size (90 azimuths; fast on 32 x 32 observers, reference on 12 x 12)")
    P("")
    P("| DEM | far field | fast wall (M/s) | fast CPU (M/s per core) | reference CPU (M/s per core) | speed ratio (CPU) | max err fast (deg) |")
    P("|---|---|---|---|---|---|---|")
    c = 128
    dems = [
        ("Shackleton 128^2 @ 200 m (centre crop)", near.isel(y=slice(c - 64, c + 64), x=slice(c - 64, c + 64)),
         far, "LOLA 480 m"),
        ("Shackleton 256^2 @ 200 m", near, far, "LOLA 480 m"),
        ("LOLA LDEM 512^2 @ 480 m (centre crop)", ldem.isel(y=slice(4, 516), x=slice(4, 516)), None, "none"),
    ]
    for name, dem, fdem, fname in dems:
        pd = prep(dem, fdem, 90)
        rf, cf, _ = rate(pd, 32, "fast")
        n = pd.z.shape[0]
        r0, r1 = _window(n, 12)
        _, ct_b, hb = _timed(lambda: pd.run(r0, r1, r0, r1, method="brute", threads=th), rep)
        cb = 90 * 144 / ct_b
        hf = pd.run(r0, r1, r0, r1, method="fast", threads=th)
        P(f"| {name} | {fname} | {rf / 1e6:.3f} | {cf / 1e6:.3f} | {cb / 1e6:.3f} | {cf / cb:.1f}x | {_err(hf, hb)[0]:.2g} |")
    P("")
    load1 = os.getloadavg()
    P(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
      f"1-min load average {load0[0]:.1f} at start, {load1[0]:.1f} at end (a load above {os.cpu_count()} means "
      f"the benchmark got less than {th} cores: absolute rates are low-biased, ratios measured in this run hold).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        head = args.out.read_text().split("<!-- bench -->")[0] if args.out.exists() else ""
        with atomic_path(args.out) as tmp:
            tmp.write_text(head + "<!-- bench -->\n" + f"Command: `PYTHONPATH=$PWD python {' '.join(['scripts/bench_horizon.py'] + (argv if argv is not None else sys.argv[1:]))}`\n\n" + text)
    return 0


def _err_full(h, ref):
    """max, p99.9, p99, mean |h - ref| (deg) over finite values, and max at >= 16 px from the edge."""
    e = np.abs(h.astype("float64") - ref.astype("float64"))
    n_y, n_x = e.shape[1:]
    ii, jj = np.mgrid[0:n_y, 0:n_x]
    edge = np.minimum(np.minimum(ii, n_y - 1 - ii), np.minimum(jj, n_x - 1 - jj))
    inner = e[:, edge >= 16]
    inner = inner[np.isfinite(inner)]
    nan_mismatch = int((np.isnan(h) != np.isnan(ref)).sum())
    e = e[np.isfinite(e)]
    return (float(e.max()), float(np.percentile(e, 99.9)), float(np.percentile(e, 99)), float(e.mean()),
            float(inner.max()) if inner.size else float("nan"), nan_mismatch)


def hybrid_section(args, argv):
    """Whole DEMs at 360 azimuths: hybrid vs the exact fast method (== reference) in one run."""
    th, load0 = args.threads, os.getloadavg()
    near = open_dem(TILES / "shackleton_ridge_lola10m_200m_51km.tif", chunks=None)
    far = open_dem(TILES / "lola_ldem80s_480m_south_pole_250km.tif", chunks=None)
    ldem = far.isel(y=slice(4, 516), x=slice(4, 516))
    n_az = 360
    lines = []
    P = lines.append
    P("## Whole DEMs, 360 azimuths: hybrid vs exact (every pixel)")
    P("")
    P(f"Threads: {th}; one timed run each after a compile warm-up. *exact* = `fast` (equals the brute-force "
      f"reference, max difference 0, see below); errors of `hybrid` against it over all pixels x azimuths; "
      f"'inner' = pixels >= 16 px from the DEM edge. CPU rate = per CPU-second summed over threads (one "
      f"dedicated core).")
    P("")
    P("| DEM | method | rate wall (M/s) | rate CPU (M/s per core) | speed vs exact (CPU) | max err (deg) | p99.9 | p99 | mean | max inner |")
    P("|---|---|---|---|---|---|---|---|---|---|")
    cases = [("Shackleton 256^2 @ 200 m + LOLA 480 m far field", near, far),
             ("LOLA LDEM 512^2 @ 480 m (centre crop), no far field", ldem, None)]
    for name, dem, fdem in cases:
        if fdem is None:
            p = _Prepared(dem.values, dem.x.values, dem.y.values, n_azimuths=n_az)
        else:
            p = _Prepared(dem.values, dem.x.values, dem.y.values, fdem.values, fdem.x.values, fdem.y.values,
                          n_azimuths=n_az)
        ny, nx = p.z.shape
        nv = n_az * ny * nx
        for m in ("fast", "hybrid"):
            p.run(0, 2, 0, 2, method=m, threads=th)  # compile
        t, c = time.perf_counter(), time.process_time()
        h_ex = p.run(0, ny, 0, nx, method="fast", threads=th)
        dt_ex, ct_ex = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        h_hy = p.run(0, ny, 0, nx, method="hybrid", threads=th)
        dt_hy, ct_hy = time.perf_counter() - t, time.process_time() - c
        e = _err_full(h_hy, h_ex)
        P(f"| {name} | exact (`fast`) | {nv / dt_ex / 1e6:.3f} | {nv / ct_ex / 1e6:.3f} | 1.0x | 0 | 0 | 0 | 0 | 0 |")
        P(f"| {name} | **hybrid** | {nv / dt_hy / 1e6:.3f} | {nv / ct_hy / 1e6:.3f} | {ct_ex / ct_hy:.1f}x | "
          f"{e[0]:.3f} | {e[1]:.4f} | {e[2]:.4f} | {e[3]:.5f} | {e[4]:.3f} |")
        if e[5]:
            P(f"| {name} | (NaN pattern differs at {e[5]} values) | | | | | | | | |")
        # direct check against the brute-force reference on a central window
        r0, r1 = _window(ny, 12)
        h_b = p.run(r0, r1, r0, r1, method="brute", threads=th)
        eb = _err_full(h_hy[:, r0:r1, r0:r1], h_b)
        ef = _err_full(h_ex[:, r0:r1, r0:r1], h_b)
        P(f"| {name} | (central 12^2 vs `brute` itself: exact max {ef[0]:.2g}, hybrid max {eb[0]:.3f}) | | | | | | | | |")
        print("\n".join(lines[-3:]), flush=True)
    load1 = os.getloadavg()
    P("")
    P(f"1-min load average {load0[0]:.1f} at start, {load1[0]:.1f} at end on {os.cpu_count()} cores.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        old = args.out.read_text()
        cmd = " ".join(["scripts/bench_horizon.py"] + (argv if argv is not None else sys.argv[1:]))
        block = f"<!-- bench-hybrid -->\nCommand: `PYTHONPATH=$PWD python {cmd}`\n\n{text}<!-- /bench-hybrid -->\n"
        if "<!-- bench-hybrid -->" in old:
            a = old.index("<!-- bench-hybrid -->")
            b = old.index("<!-- /bench-hybrid -->") + len("<!-- /bench-hybrid -->\n")
            new = old[:a] + block + old[b:]
        else:
            a = old.index("<!-- bench -->")
            new = old[:a] + block + "\n" + old[a:]
        with atomic_path(args.out) as tmp:
            tmp.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
