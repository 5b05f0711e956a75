"""Lesion segmenter for detector boxes (format sonolive-boxseg/1).

The detectors say where a lesion is; this small U-Net says what shape it
has. It takes a square crop around a detection (the box's longer side plus
a margin on each side, resized to S x S) and gives the lesion's probability
per pixel; sonolive traces the outline on it and measures the calipers
(docs/model-format.md). Kept apart from the detectors so a hospital's own
detector gets outlines too, and so it can be trained on every set's masks
without retraining them.

Trained on BUSI, BUS-BRA and DDTI masks (union masks, cut to the
annotation's box, which comes from one connected component), on crops
around boxes jittered like a detector's (centre +-10 %, size x0.85-1.2),
flipped and with brightness/contrast/gamma changes. Validation: the
committed BUSI and DDTI splits and BUS-BRA's authors' patient-wise fold 1;
Dice and IoU per lesion at the image's own resolution, on crops from the
ground-truth boxes and from jittered ones, with bootstrap intervals.

    /usr/bin/python3 -m train.boxseg --minutes 14 --size 64 --widths 8,16,32,48 \
        --out models/lesion-seg.onnx --report out/boxseg-report.json
"""

import argparse
import json
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

FORMAT = "sonolive-boxseg/1"
OPSET = 17
S = 64          # crop side, model pixels (--size)
MARGIN = 0.25   # of the box's longer side, on each side


def data_root():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("SONOLIVE_DATA", os.path.join(here, "..", "..", "shared", "data"))


def load_set(name, val_files=None, val_fold=None, log=print):
    """-> (train, val): lists of {img, mask, boxes xyxy, file} (uint8 HxW,
    bool HxW) for the images with a lesion."""
    root = os.path.join(data_root(), name)
    with open(os.path.join(root, "annotations.json")) as f:
        coco = json.load(f)
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a["bbox"])
    train, val = [], []
    for im in sorted(coco["images"], key=lambda i: i["id"]):
        boxes = by_img.get(im["id"])
        if not boxes or not im.get("mask_file"):
            continue
        img = np.asarray(Image.open(os.path.join(root, im["file_name"])).convert("L"), np.uint8)
        mask = np.asarray(Image.open(os.path.join(root, im["mask_file"])).convert("L"), np.uint8) > 127
        if mask.shape != img.shape:
            continue
        rec = dict(img=img, mask=mask, boxes=[[x, y, x + w, y + h] for x, y, w, h in boxes], file=im["file_name"], set=name)
        is_val = (val_files is not None and im["file_name"] in val_files) or (val_fold is not None and im.get("fold5") == val_fold)
        (val if is_val else train).append(rec)
    log(f"{name}: {len(train)} training, {len(val)} validation images with lesions")
    return train, val


def crop_box(box):
    """Square crop around box: its longer side plus MARGIN on each side."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - side / 2, cy - side / 2, side


def cut(arr, x0, y0, side, out, resample):
    """The square [x0, x0+side) x [y0, y0+side) of arr resized to out x out;
    outside the image is 0."""
    pil = Image.fromarray(arr)
    return np.asarray(pil.transform((out, out), Image.EXTENT, (x0, y0, x0 + side, y0 + side), resample=resample, fillcolor=0))


def target_mask(rec, box):
    """The mask of the lesion in box: the union mask cut to the box."""
    m = np.zeros_like(rec["mask"])
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    m[y1:y2, x1:x2] = rec["mask"][y1:y2, x1:x2]
    return m


def jitter(box, rng):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 + rng.uniform(-0.1, 0.1) * w
    cy = (y1 + y2) / 2 + rng.uniform(-0.1, 0.1) * h
    w *= rng.uniform(0.85, 1.2)
    h *= rng.uniform(0.85, 1.2)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def sample(rec, rng, augment=True):
    i = rng.randrange(len(rec["boxes"]))
    gt = rec["boxes"][i]
    box = jitter(gt, rng) if augment else gt
    x0, y0, side = crop_box(box)
    img = cut(rec["img"], x0, y0, side, S, Image.BILINEAR).astype(np.float32) / 255
    tgt = cut(target_mask(rec, gt).astype(np.uint8) * 255, x0, y0, side, S, Image.BILINEAR).astype(np.float32) / 255
    if augment:
        if rng.random() < 0.5:
            img, tgt = img[:, ::-1], tgt[:, ::-1]
        g = math.exp(rng.uniform(-0.4, 0.4))
        img = np.clip((img ** g) * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1), 0, 1)
    return np.ascontiguousarray(img), np.ascontiguousarray((tgt > 0.5).astype(np.float32))


class Block(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Four levels, 8-16-32-48 channels by default: about 0.1 M parameters."""

    def __init__(self, w=(8, 16, 32, 48)):
        super().__init__()
        self.e1, self.e2, self.e3, self.e4 = Block(1, w[0]), Block(w[0], w[1]), Block(w[1], w[2]), Block(w[2], w[3])
        self.d3, self.d2, self.d1 = Block(w[3] + w[2], w[2]), Block(w[2] + w[1], w[1]), Block(w[1] + w[0], w[0])
        self.out = nn.Conv2d(w[0], 1, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))
        up = lambda a, b: torch.cat([F.interpolate(a, scale_factor=2.0, mode="nearest"), b], 1)
        d3 = self.d3(up(e4, e3))
        d2 = self.d2(up(d3, e2))
        d1 = self.d1(up(d2, e1))
        return self.out(d1)


def loss_fn(logits, tgt):
    bce = F.binary_cross_entropy_with_logits(logits, tgt)
    p = torch.sigmoid(logits)
    inter = (p * tgt).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + tgt.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def predict_lesion(net, rec, box):
    """Dice and IoU of the predicted mask of the lesion in box against the
    ground truth (its GT box's union-mask cut), at the image's resolution."""
    x0, y0, side = crop_box(box)
    img = cut(rec["img"], x0, y0, side, S, Image.BILINEAR).astype(np.float32) / 255
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(img)[None, None]))[0, 0].numpy()
    # Back onto the image: the crop's pixels at the image's resolution.
    h, w = rec["mask"].shape
    side_i = max(1, int(round(side)))
    prob = np.asarray(Image.fromarray((p * 255).astype(np.uint8)).resize((side_i, side_i), Image.BILINEAR)).astype(np.float32) / 255
    pred = np.zeros((h, w), bool)
    ix0, iy0 = int(round(x0)), int(round(y0))
    sx0, sy0 = max(0, -ix0), max(0, -iy0)
    dx0, dy0 = max(0, ix0), max(0, iy0)
    dx1, dy1 = min(w, ix0 + side_i), min(h, iy0 + side_i)
    if dx1 > dx0 and dy1 > dy0:
        pred[dy0:dy1, dx0:dx1] = prob[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0] > 0.5
    return pred


def evaluate(net, recs, rng, jittered):
    net.eval()
    dice, iou = [], []
    for rec in recs:
        for gt in rec["boxes"]:
            box = jitter(gt, rng) if jittered else gt
            pred = predict_lesion(net, rec, box)
            tgt = target_mask(rec, gt)
            # Judge inside the crop of the GT box (other lesions aside).
            x0, y0, side = crop_box(gt)
            win = np.zeros_like(tgt)
            win[max(0, int(y0)):max(0, int(y0 + side)), max(0, int(x0)):max(0, int(x0 + side))] = True
            p, t = pred & win, tgt & win
            inter, union, tot = (p & t).sum(), (p | t).sum(), p.sum() + t.sum()
            dice.append(2 * inter / tot if tot else 1.0)
            iou.append(inter / union if union else 1.0)
    net.train()
    return np.array(dice), np.array(iou)


def boot(v, rng, n=2000):
    idx = np.random.default_rng(1).integers(0, len(v), (n, len(v)))
    m = v[idx].mean(1)
    return float(v.mean()), float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))


def export(net, path, metrics, version, train_data):
    net = net.eval().float()
    x = torch.rand(1, 1, S, S)

    class Wrap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, image):
            return torch.sigmoid(self.n(image))

    tmp = path + ".tmp"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(Wrap(net), x, tmp, opset_version=OPSET, input_names=["image"], output_names=["mask"],
                          do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    m.producer_name = "sonolive-train"
    del m.metadata_props[:]
    for k, v in {"format": FORMAT, "imgsz": json.dumps([S, S]), "channels": "1", "margin": str(MARGIN),
                 "version": version, "names": json.dumps(["lesion"]), "organ": "breast,thyroid",
                 "train_data": json.dumps(train_data), "metrics": json.dumps(metrics)}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main(argv=None):
    global S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--out", default="models/lesion-seg.onnx")
    ap.add_argument("--report", default="")
    ap.add_argument("--size", type=int, default=64, help="crop side S")
    ap.add_argument("--widths", default="8,16,32,48", help="U-Net channels per level")
    args = ap.parse_args(argv)
    S = args.size
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    here = os.path.dirname(os.path.abspath(__file__))
    log = lambda *a: print(*a, file=sys.stderr, flush=True)
    val_of = lambda f: set(json.load(open(os.path.join(here, "splits", f)))["val"])
    sets = {
        "busi": load_set("busi", val_files=val_of("busi.json"), log=log),
        "busbra": load_set("busbra", val_fold=1, log=log),
        "ddti": load_set("ddti", val_files=val_of("ddti.json"), log=log),
    }
    train = [r for tr, _ in sets.values() for r in tr]
    net = UNet(tuple(int(v) for v in args.widths.split(",")))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    t0, step, budget = time.time(), 0, args.minutes * 60
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (min(1, frac / 0.03)) * 0.5 * (1 + math.cos(math.pi * frac))
        batch = [sample(train[rng.randrange(len(train))], rng) for _ in range(args.batch)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            log(f"step {step} {time.time() - t0:.0f}s loss {loss.item():.3f}")
    metrics = {"steps": step}
    for name, (_, val) in sets.items():
        for jit in (False, True):
            d, i = evaluate(net, val, random.Random(7), jit)
            key = f"{name}_{'jittered' if jit else 'gt'}_box"
            metrics[key] = {"lesions": len(d), "dice": boot(d, rng), "iou": boot(i, rng)}
            log(f"{key}: {len(d)} lesions, Dice {metrics[key]['dice'][0]:.3f} [{metrics[key]['dice'][1]:.3f}, {metrics[key]['dice'][2]:.3f}], IoU {metrics[key]['iou'][0]:.3f}")
    export(net, args.out, metrics, args.version,
           {"busi": "train/splits/busi.json", "busbra": "fold5 != 1 (patients)", "ddti": "train/splits/ddti.json"})
    if args.report:
        with open(args.report, "w") as f:
            json.dump(metrics, f, indent=1)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
