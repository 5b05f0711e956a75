"""Refit a trained detector's malignancy read-out on its frozen features.

    /usr/bin/python3 -m train.malhead --base out/breast.pt --coco busi \\
        --split-file train/splits/busi.json --malignancy benign:malignant \\
        --version 0.2.0 --out models/breast.onnx --ckpt out/breast-v020.pt

Why: the malignancy head trained jointly with the detector memorises the
training lesions (training BCE 0.05-0.10 against a validation NLL of 0.53),
and so do the FPN and head features it reads; the backbone's stride-16
features do not (a linear read-out of them reaches a training AUC of 0.95, not
1.00) and they rank validation lesions better (train/RESULTS.md).

What: for every labelled training box, the stride-16 backbone features are
averaged over the box, exactly as the Go decoder averages a malignancy_pool=box
map (the stride-8 cells whose centres lie inside the box); once on the
deployment letterbox and once per --views augmented copy (train/data.py's
augmentation). An L2-penalised logistic regression on the standardised
features becomes the 1x1 conv `mal_s4`; its temperature is fitted on the
validation lesions. The detection weights are not touched: boxes and scores
are those of the base model.
"""

import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D
from .evaluate import auc, evaluate, fit_temperature, reliability
from .export import export_onnx, load_net
from .model import STRIDE, CNet, count_params, fuse_bn
from .train import set_threads


def log(msg):
    print(f"[malhead] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="trained detector: checkpoint (.pt) or sonolive-cnet ONNX")
    ap.add_argument("--coco", required=True, action="append",
                    help="COCO source (PATH[:IMAGES_ROOT] or a name under SONOLIVE_DATA; repeatable: one per site)")
    ap.add_argument("--split-file", required=True, action="append",
                    help="committed train/validation split of the i-th --coco")
    ap.add_argument("--malignancy", default="benign:malignant", help="NEG[,NEG]:POS[,POS] category names")
    ap.add_argument("--views", type=int, default=4, help="augmented copies of each training image")
    ap.add_argument("--l2", type=float, default=0.01, help="L2 penalty on the standardised read-out weights")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=640)
    ap.add_argument("--max-fp-per-negative", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", required=True, help="ONNX to write")
    ap.add_argument("--ckpt", help="also save the refitted network here")
    return ap.parse_args(argv)


def box_mean_features(f4, boxes, G):
    """[N, C]: f4 [C, G/2, G/2] nearest-upsampled to G, averaged over each
    box's cells (centre cell when no cell centre is inside, as the decoder)."""
    f = F.interpolate(f4[None], size=(G, G), mode="nearest")[0]
    c = (torch.arange(G, dtype=torch.float32) + 0.5) * STRIDE
    out = []
    for x1, y1, x2, y2 in boxes:
        m = ((c >= y1) & (c <= y2))[:, None] & ((c >= x1) & (c <= x2))[None, :]
        if not m.any():
            m[min(G - 1, int((y1 + y2) / 2 / STRIDE)), min(G - 1, int((x1 + x2) / 2 / STRIDE))] = True
        out.append(f[:, m].mean(1))
    return torch.stack(out) if out else torch.zeros(0, f.shape[0])


@torch.no_grad()
def extract(net, ds, idxs, epoch, progress=None):
    """Box-mean stride-16 features and labels of every labelled box of ds[idxs].
    epoch picks the augmentation draw (reproducible per seed, like training)."""
    X, Y = [], []
    G = ds.S // STRIDE
    for s in range(0, len(idxs), 16):
        chunk = idxs[s:s + 16]
        smp = []
        for i in chunk:
            rng = random.Random((ds.seed * 1000003 + epoch) * 1000003 + i)
            torch.manual_seed(rng.randrange(1 << 62))
            smp.append(ds.sample(i, rng if ds.augment else None))
        f4 = net.s4(net.s3(net.stem(torch.stack([x[0][None] for x in smp]))))
        for k, i in enumerate(chunk):
            _, b, keep = smp[k]
            y = ds.recs[i]["mal"][keep]
            sel = y >= 0
            if sel.any():
                X.append(box_mean_features(f4[k], b[sel], G))
                Y.append(torch.from_numpy(y[sel]).long())
        if progress:
            progress(len(chunk))
    return torch.cat(X), torch.cat(Y)


def fit_logistic(X, y, l2):
    """L2-penalised logistic regression on standardised X (LBFGS, deterministic).
    -> (w, b) in the units of X."""
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    w = torch.zeros(Z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")
    yf = y.float()

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(Z @ w + b, yf) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()
    return w / sd, b - (w * mu / sd).sum()


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    set_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    base, info = load_net(args.base)
    names = info["names"]
    S = int(info["imgsz"] or 320)
    neg, _, pos = args.malignancy.partition(":")
    cmap = D.ClassMap(names, None, ([s for s in neg.split(",") if s], [s for s in pos.split(",") if s]))
    if len(args.coco) != len(args.split_file):
        raise SystemExit(f"{len(args.coco)} --coco for {len(args.split_file)} --split-file: one split per source")
    train_recs, val_recs = [], []
    for spec, sfile in zip(args.coco, args.split_file):
        recs, ann = D.load_coco(spec, cmap, args.max_side, None, log)
        with open(sfile) as f:
            split = json.load(f)
        tr, va = D.split_from_json(recs, split)
        train_recs += [recs[i] for i in tr]
        val_recs += [recs[i] for i in va]
    labelled = [i for i, r in enumerate(train_recs) if (r["mal"] >= 0).any()]
    if not labelled:
        raise SystemExit(f"--malignancy {args.malignancy}: no training box has one of those categories")
    log(f"{len(train_recs)} training images ({len(labelled)} with labelled boxes), {len(val_recs)} validation")

    total = len(labelled) * (1 + args.views)
    done, shown = [0], [0.0]
    tty = sys.stderr.isatty()

    def progress(n):
        done[0] += n
        el = time.time() - t0
        if done[0] < total and el - shown[0] < (0.5 if tty else 10):
            return
        shown[0] = el
        eta = el / done[0] * (total - done[0])
        print(f"{chr(13) if tty else ''}[malhead] features {done[0]}/{total} images, {el:.0f}s elapsed, "
              f"ETA {eta:.0f}s", end="" if tty and done[0] < total else "\n", file=sys.stderr, flush=True)

    Xs, ys = [], []
    for v in range(1 + args.views):  # view 0: the deployment letterbox
        ds = D.Detections(train_recs, len(names), S, augment=v > 0, seed=args.seed)
        X, y = extract(base, ds, labelled, v, progress)
        Xs.append(X)
        ys.append(y)
    X, y = torch.cat(Xs), torch.cat(ys)
    w, b = fit_logistic(X, y, args.l2)
    train_auc = auc((X @ w + b).numpy(), y.numpy())
    log(f"read-out fitted on {len(y)} box views ({int(ys[0].sum())} malignant of {len(ys[0])} boxes), "
        f"training AUC {train_auc:.3f}")

    cfg = dict(base.config, malignancy=True, mal_from="s4")
    net = CNet(**cfg).eval()
    if info["fused"]:
        net = fuse_bn(net)
    sd = {k: v for k, v in base.state_dict().items() if not k.startswith("mal.")}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("mal_s4.")]
    if missing or unexpected:
        raise SystemExit(f"base weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        net.mal_s4.weight.copy_(w.view(1, -1, 1, 1))
        net.mal_s4.bias.copy_(b)

    vds = D.Detections(val_recs, len(names), S, augment=False)
    m, (mz, my) = evaluate(net, vds, max_fp_per_negative=args.max_fp_per_negative)
    T, nll = fit_temperature(mz, my)
    m.update(malignancy_temperature=round(T, 4), malignancy_nll=round(nll, 4), **reliability(mz, my, T))
    bm = info.get("metrics") or {}
    metrics = {**{k: bm[k] for k in ("steps", "final_loss", "split") if k in bm}, **m}
    log("validation: " + json.dumps(m))

    readout = {"method": "L2 logistic regression on frozen stride-16 backbone features, box mean",
               "base": os.path.basename(args.base), "base_version": info.get("version"),
               "l2": args.l2, "views": args.views, "seed": args.seed,
               "train_boxes": len(ys[0]), "train_malignant": int(ys[0].sum()),
               "train_auc": round(train_auc, 4), "minutes": round((time.time() - t0) / 60, 2)}
    train_data = dict(info.get("train_data") or {}, malignancy_readout=readout, arch={"name": "cnet", **net.config},
                      params=count_params(CNet(**net.config)))  # unfused, as train.train counts
    if args.ckpt:
        os.makedirs(os.path.dirname(os.path.abspath(args.ckpt)), exist_ok=True)
        torch.save({"config": net.config, "state_dict": net.state_dict(), "fused": info["fused"], "names": names,
                    "organ": info["organ"], "version": args.version, "imgsz": S, "train_data": train_data,
                    "metrics": metrics, "temperature": T, "calibrated": True}, args.ckpt)
        log(f"wrote {args.ckpt}")
    export_onnx(net, args.out, names, info["organ"], args.version, S, train_data, metrics, T, True)
    log(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) in {(time.time() - t0) / 60:.1f} min")
    return metrics


if __name__ == "__main__":
    main()
