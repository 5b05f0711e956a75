"""Validation metrics under appearance shifts the training augmentation does
not produce: a proxy for other scanners and capture paths, since no second
hospital's data is available here.

    /usr/bin/python3 -m train.shift --model models/breast.onnx --coco busi \\
        --split-file train/splits/busi.json [--malignancy benign:malignant] [--json out.json]

Each shift is applied to the stored validation image before the deployment
letterbox; the metrics are train.evaluate's (class-agnostic AP, malignancy AUC
at the top detection).
"""

import argparse
import io
import json
import sys

import numpy as np
import torch
from PIL import Image

from . import data as D
from .evaluate import evaluate
from .export import load_net
from .train import set_threads


def _half_res(img):
    """Half the resolution, back up bilinearly: a low-resolution capture card or scan-converter."""
    h, w = img.shape
    p = Image.fromarray(img).resize((max(1, w // 2), max(1, h // 2)), Image.BOX)
    return np.asarray(p.resize((w, h), Image.BILINEAR))


def _jpeg(img, q=30):
    """Heavy JPEG: a compressed video path (8x8 blocks, ringing)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def _gamma(img, g=1.8):
    """Darker mid-tones than the training gamma range (exp(±0.45): 0.64-1.57)."""
    return (255 * (img / 255.0) ** g).round().astype(np.uint8)


def _low_contrast(img):
    """Dynamic range compressed to half around mid-grey: a flat preset or a washed-out monitor feed."""
    return (64 + img * 0.5).round().astype(np.uint8)


SHIFTS = {"none": lambda x: x, "half_res": _half_res, "jpeg30": _jpeg, "gamma1.8": _gamma,
          "low_contrast": _low_contrast}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, action="append", help=".onnx or .pt (repeatable)")
    ap.add_argument("--coco", required=True)
    ap.add_argument("--split-file", required=True)
    ap.add_argument("--malignancy", default="", help="NEG:POS category names, for the AUC")
    ap.add_argument("--shifts", default=",".join(SHIFTS), help="comma-separated subset of " + ",".join(SHIFTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    shifts = [s for s in args.shifts.split(",") if s]
    for s in shifts:
        if s not in SHIFTS:
            raise SystemExit(f"unknown shift {s!r}: want one of {', '.join(SHIFTS)}")
    mal = None
    if args.malignancy:
        neg, _, pos = args.malignancy.partition(":")
        mal = ([v for v in neg.split(",") if v], [v for v in pos.split(",") if v])
    results = {}
    for path in args.model:
        net, info = load_net(path)
        cmap = D.ClassMap(info["names"], None, mal)
        recs, _ = D.load_coco(args.coco, cmap)
        with open(args.split_file) as f:
            _, va = D.split_from_json(recs, json.load(f))
        results[path] = {}
        for s in shifts:
            vr = [dict(recs[i], img=SHIFTS[s](recs[i]["img"])) for i in va]
            m, _ = evaluate(net, D.Detections(vr, len(info["names"]), int(info["imgsz"] or 320)))
            # threshold-free figures: evaluate's operating point would be re-chosen on the shifted set
            row = {k: m.get(k) for k in ("ap50", "ap50_95", "malignancy_auc_top_detection")}
            results[path][s] = row
            print(f"{path}\t{s:12s}\t" + "  ".join(f"{k} {v}" for k, v in row.items() if v is not None),
                  file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
