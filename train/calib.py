"""Is the breast detector's malignancy output calibrated well enough to
suggest a BI-RADS-style category? Measured per site on held-out patients.

    /usr/bin/python3 -m train.calib --model out/breast-ms.pt \\
        --site busi:train/splits/busi.json --site busbra:train/splits/busbra.json \\
        --png models/breast-reliability.png --json out/calib.json

For every labelled validation lesion, the malignancy logit is read at its
ground-truth box as the Go decoder reads a detection's. Calibrators (a
temperature, and Platt's affine a*z + b) are fitted on one part of the
validation lesions and judged on another, never on the same lesions:
two-fold cross-fitting over patients within the pooled sites, and one site
to the other (what a new hospital would see). Reported: expected
calibration error (ECE, 10 equal-width bins) with a bootstrap 95% interval,
Brier score, AUC, and, on BUS-BRA, agreement of the category the
probability maps to (ACR likelihood of malignancy: 3 <= 2%, 4A <= 10%, 4B
<= 50%, 4C < 95%, 5 >= 95%) with the radiologists' BI-RADS, as a linearly
weighted kappa on three ordered levels (3 or lower / 4 / 5: BUS-BRA has no
4A-4C subcategories). The issue's bar for showing a category is ECE <= 0.05.
"""

import argparse
import json
import math
import os
import random
import sys

import numpy as np
import torch

from . import data as D
from .evaluate import auc, evaluate, fit_temperature
from .export import load_net
from .train import set_threads

# ACR BI-RADS likelihood-of-malignancy ranges (upper bounds).
BIRADS = [("3", 0.02), ("4A", 0.10), ("4B", 0.50), ("4C", 0.95), ("5", 1.01)]


def log(msg):
    print(f"[calib] {msg}", file=sys.stderr, flush=True)


def category(p):
    for name, hi in BIRADS:
        if p < hi or (name == "3" and p <= hi):
            return name
    return "5"


def level(cat):
    """Three ordered levels: 0 = BI-RADS 2/3, 1 = 4 (any of 4A-4C), 2 = 5."""
    c = str(cat)
    return 0 if c in ("2", "3") else (2 if c == "5" else 1)


def weighted_kappa(a, b, k=3):
    """Linearly weighted Cohen's kappa of two ratings on 0..k-1."""
    a, b = np.asarray(a), np.asarray(b)
    n = len(a)
    if n == 0:
        return float("nan")
    obs = np.zeros((k, k))
    for i, j in zip(a, b):
        obs[i, j] += 1
    obs /= n
    exp = np.outer(obs.sum(1), obs.sum(0))
    w = np.abs(np.subtract.outer(np.arange(k), np.arange(k))) / (k - 1)
    den = (w * exp).sum()
    return float(1 - (w * obs).sum() / den) if den > 0 else float("nan")


def ece(p, y, bins=10):
    p, y = np.asarray(p, float), np.asarray(y, float)
    e = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if sel.any():
            e += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return float(e)


def boot_ci(p, y, f, n=1000, seed=1):
    rng = np.random.default_rng(seed)
    p, y = np.asarray(p), np.asarray(y)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(p), len(p))
        v = f(p[i], y[i])
        if not math.isnan(v):
            vals.append(v)
    vals.sort()
    return [round(vals[int(0.025 * len(vals))], 4), round(vals[min(len(vals) - 1, int(0.975 * len(vals)))], 4)] if vals else None


def fit_platt(z, y):
    """Platt scaling: sigmoid(a z + b) by NLL (LBFGS)."""
    z = torch.tensor(np.asarray(z, np.float32))
    y = torch.tensor(np.asarray(y, np.float32))
    a = torch.ones(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * z + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(a), float(b)


CALIBRATORS = {
    "temperature": (lambda z, y: fit_temperature(z, y)[0], lambda c, z: 1 / (1 + np.exp(-np.asarray(z) / c))),
    "platt": (fit_platt, lambda c, z: 1 / (1 + np.exp(-(c[0] * np.asarray(z) + c[1])))),
}


def lesions(net, spec, split_file, S):
    """(logits, labels, birads, patient) of the validation lesions of one site."""
    cmap = D.ClassMap(net_names(net), None, (["benign"], ["malignant"]))
    recs, ann = D.load_coco(spec, cmap, 640, None, log)
    with open(split_file) as f:
        split = json.load(f)
    _, va = D.split_from_json(recs, split)
    val = [recs[i] for i in va]
    with open(ann) as f:
        meta = {im["file_name"]: im for im in json.load(f)["images"]}
    _, (z, y) = evaluate(net, D.Detections(val, 1, S, augment=False))
    birads, patient = [], []
    for r in val:  # evaluate reads the labelled boxes in this order
        im = meta[r["file"]]
        for m in r["mal"]:
            if m >= 0:
                birads.append(im.get("birads"))
                patient.append(f'{spec}:{im.get("case", im["id"])}')
    assert len(birads) == len(z), (len(birads), len(z))
    return np.asarray(z, float), np.asarray(y, int), birads, patient


def net_names(net):
    return ["lesion"]


def judge(p, y, birads=None):
    out = {"lesions": int(len(y)), "malignant": int(np.sum(y)), "auc": round(auc(p, y), 4),
           "ece": round(ece(p, y), 4), "ece_ci95": boot_ci(p, y, ece),
           "brier": round(float(np.mean((np.asarray(p) - y) ** 2)), 4)}
    cats = [category(v) for v in p]
    out["categories"] = {c: cats.count(c) for c, _ in BIRADS}
    out["malignant_fraction_by_category"] = {
        c: round(float(np.mean([yy for cc, yy in zip(cats, y) if cc == c])), 3) for c, _ in BIRADS if c in cats}
    if birads is not None and all(b is not None for b in birads):
        ai, rad = [level(c) for c in cats], [level(b) for b in birads]
        out["kappa_vs_radiologists"] = round(weighted_kappa(ai, rad), 4)
        out["radiologist_levels"] = {k: rad.count(i) for i, k in enumerate(["2-3", "4", "5"])}
    return out


def reliability_png(path, curves, bins=10):
    """A reliability diagram: predicted probability against the observed
    malignant fraction per bin, one marker series per curve."""
    from PIL import Image, ImageDraw
    W, H, m = 520, 520, 60
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    X = lambda v: m + v * (W - 2 * m)
    Y = lambda v: H - m - v * (H - 2 * m)
    d.rectangle([X(0), Y(1), X(1), Y(0)], outline="black")
    for t in range(0, 11, 2):
        v = t / 10
        d.line([X(v), Y(0), X(v), Y(0) + 5], fill="black")
        d.text((X(v) - 8, Y(0) + 8), f"{v:.1f}", fill="black")
        d.line([X(0) - 5, Y(v), X(0), Y(v)], fill="black")
        d.text((X(0) - 32, Y(v) - 6), f"{v:.1f}", fill="black")
    d.line([X(0), Y(0), X(1), Y(1)], fill=(160, 160, 160))
    d.text((W / 2 - 70, H - 28), "predicted malignancy", fill="black")
    d.text((8, 12), "observed malignant fraction (per bin; marker area ~ lesions)", fill="black")
    colours = [(200, 40, 40), (30, 90, 200), (20, 150, 60), (160, 80, 200)]
    for k, (name, p, y) in enumerate(curves):
        c = colours[k % len(colours)]
        pts = []
        for b in range(bins):
            lo, hi = b / bins, (b + 1) / bins
            sel = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
            if sel.any():
                pts.append((X(p[sel].mean()), Y(y[sel].mean()), int(sel.sum())))
        if len(pts) > 1:
            d.line([(a, b) for a, b, _ in pts], fill=c, width=2)
        for a, b, n in pts:
            r = 2 + math.sqrt(n) / 1.5
            d.ellipse([a - r, b - r, a + r, b + r], outline=c, width=2)
        d.text((X(0) + 10, Y(1) + 10 + 16 * k), f"{name}: ECE {ece(p, y):.3f} (n={len(p)})", fill=c)
    im.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help=".pt or .onnx (sonolive-cnet with malignancy)")
    ap.add_argument("--site", action="append", required=True, metavar="COCO:SPLIT",
                    help="a site's COCO source and its committed split (repeatable)")
    ap.add_argument("--png", help="write the reliability diagram here")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    random.seed(args.seed)
    net, info = load_net(args.model)
    S = int(info.get("imgsz") or 320)
    sites = {}
    for s in args.site:
        spec, _, split = s.partition(":")
        sites[spec] = lesions(net, spec, split, S)
        log(f"{spec}: {len(sites[spec][0])} validation lesions")
    rep = {"model": os.path.basename(args.model), "sites": {}, "cross_fitted": {}, "site_to_site": {}}
    z_all = np.concatenate([v[0] for v in sites.values()])
    y_all = np.concatenate([v[1] for v in sites.values()])
    pat_all = sum((v[3] for v in sites.values()), [])
    # Two-fold cross-fitting over patients, pooled sites: each half's
    # probabilities come from a calibrator fitted on the other half.
    rng = random.Random(args.seed)
    pats = sorted(set(pat_all))
    rng.shuffle(pats)
    half = set(pats[: len(pats) // 2])
    fold = np.array([p in half for p in pat_all])
    for name, (fit, apply) in CALIBRATORS.items():
        p = np.zeros(len(z_all))
        for f in (True, False):
            c = fit(z_all[fold != f], y_all[fold != f])
            p[fold == f] = apply(c, z_all[fold == f])
        rep["cross_fitted"][name] = judge(p, y_all)
        off = 0
        for spec, (z, y, birads, _) in sites.items():
            rep["cross_fitted"][name][spec] = judge(p[off:off + len(z)], y, birads)
            off += len(z)
    # One site's calibration used at the other.
    for a in sites:
        for b in sites:
            if a == b:
                continue
            for name, (fit, apply) in CALIBRATORS.items():
                c = fit(sites[a][0], sites[a][1])
                rep["site_to_site"][f"{name} {a} -> {b}"] = judge(apply(c, sites[b][0]), sites[b][1], sites[b][2])
    # As shipped would be: fitted on all validation lesions (optimistic).
    for name, (fit, apply) in CALIBRATORS.items():
        c = fit(z_all, y_all)
        rep["sites"][name] = {"calibrator": c if isinstance(c, float) else list(c), "in_sample": judge(apply(c, z_all), y_all)}
    best = min(rep["cross_fitted"], key=lambda k: rep["cross_fitted"][k]["ece"])
    rep["best_cross_fitted"] = best
    rep["ships_category"] = bool(rep["cross_fitted"][best]["ece"] <= 0.05 and
                                 all(v["ece"] <= 0.05 for k, v in rep["site_to_site"].items() if k.startswith(best)))
    if args.png:
        curves = []
        fit, apply = CALIBRATORS[best]
        p = np.zeros(len(z_all))
        for f in (True, False):
            c = fit(z_all[fold != f], y_all[fold != f])
            p[fold == f] = apply(c, z_all[fold == f])
        off = 0
        for spec, (z, y, _, _) in sites.items():
            curves.append((f"{spec} ({best}, cross-fitted)", p[off:off + len(z)], y))
            off += len(z)
        curves.append(("as exported, all sites (in-sample)", 1 / (1 + np.exp(-z_all)), y_all))
        reliability_png(args.png, curves)
        log(f"wrote {args.png}")
    txt = json.dumps(rep, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(txt + "\n")
    print(txt)
    return rep


if __name__ == "__main__":
    main()
