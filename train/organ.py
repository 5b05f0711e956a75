"""Organ classifier for the wrong-preset guard (format sonolive-organ/1).

The thyroid detector calls breast masses, and the breast detector thyroid
nodules (issue 17): a sonographer who left the wrong preset on gets boxes
from the wrong model. This small CNN looks at the whole frame, squashed to
S x S grayscale, and says breast, thyroid or other (lung, the phantom,
anything else); sonolive runs it about once a second off the video path and
warns when the frames look like the other organ for several seconds
(package organ).

Training data: BUSI and BUS-BRA (breast), DDTI (thyroid) through their
committed splits (validation images never trained on), and as other the
lung POCUS clips (three clips for training, three held out) and the
phantom's frames (out/phantom-train). By default the breast cine clips
(another hospital, another machine) are never trained on: they test a
breast scanner the model has not seen; with --cine-train (the shipped
model) the odd patients' clips train and the even patients' are held out. There is only one thyroid source, so
a thyroid scanner unlike DDTI's is not tested; the model card says so.

Augmentation: random crops from 55% to 100% of the frame and zoom-outs onto
black (tight crops and wide frames both), gain/gamma/TGC/speckle
(data._intensity), burned-in text and marks (data._draw_overlays), flips.

    /usr/bin/python3 -m train.organ --minutes 6 --out models/organ.onnx --report out/organ-report.json
"""

import argparse
import glob
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from train import data as D

FORMAT = "sonolive-organ/1"
NAMES = ["breast", "thyroid", "other"]
OPSET = 17
S = 96


def log(msg):
    print(f"[organ {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _coco_split(name, split_file, max_side):
    cmap = D.ClassMap(["lesion"])
    recs, _ = D.load_coco(name, cmap, max_side)
    with open(split_file) as f:
        tr, va = D.split_from_json(recs, json.load(f))
    return [recs[i]["img"] for i in tr], [recs[i]["img"] for i in va]


def clip_frames(path, every_s, max_side, cache):
    """Gray frames of a clip every every_s seconds (ffmpeg), cached as PNGs."""
    key = os.path.join(cache, os.path.basename(path).replace(".", "_"))
    if not glob.glob(os.path.join(key, "*.png")):
        os.makedirs(key, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-vf", f"fps=1/{every_s},format=gray",
                        os.path.join(key, "f%04d.png")], check=True)
    out = []
    for p in sorted(glob.glob(os.path.join(key, "*.png"))):
        im = Image.open(p).convert("L")
        w, h = im.size
        if max(w, h) > max_side:
            s = max_side / max(w, h)
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BOX)
        out.append(np.asarray(im, np.uint8).copy())
    return out


def load(args):
    root = D.data_root()
    ms = 2 * S
    sets = {}
    sets["busi"] = _coco_split("busi", "train/splits/busi.json", ms)
    sets["busbra"] = _coco_split("busbra", "train/splits/busbra.json", ms)
    sets["ddti"] = _coco_split("ddti", "train/splits/ddti.json", ms)
    lung = sorted(glob.glob(os.path.join(root, "clips/lung-pocus/*")))
    if len(lung) < 4:
        raise SystemExit(f"want the lung clips under {root}/clips/lung-pocus (found {len(lung)})")
    cache = args.cache
    lung_tr = [f for p in lung[0::2] for f in clip_frames(p, 0.25, ms, cache)]
    clips = {}
    clips["lung"] = [clip_frames(p, 1.0, ms, cache + "-1s") for p in lung[1::2]]
    sets["lung"] = (lung_tr, [f for c in clips["lung"] for f in c])
    ph = sorted(glob.glob(os.path.join(args.phantom, "images", "*.png")) or glob.glob(os.path.join(args.phantom, "*.png")))
    if not ph:
        raise SystemExit(f"no phantom frames in {args.phantom} (sonolive phantom --out {args.phantom} ...)")
    ph_imgs = [np.asarray(Image.open(p).convert("L").resize((ms, ms * 3 // 4), Image.BOX), np.uint8) for p in ph]
    sets["phantom"] = (ph_imgs[: len(ph_imgs) * 7 // 8], ph_imgs[len(ph_imgs) * 7 // 8:])
    cine = sorted(glob.glob(os.path.join(root, "clips/breast-cine/*.avi")))
    cine_train = []
    if args.cine_train:
        # Odd patients' clips train, even patients' are held out: a third
        # breast machine in training, judged on patients it has not seen.
        pid = lambda p: int(os.path.basename(p).split("_")[1])
        cine_train = [f for p in cine if pid(p) % 2 == 1 for f in clip_frames(p, 0.25, ms, cache + "-4hz")]
        cine = [p for p in cine if pid(p) % 2 == 0]
    clips["breast-cine"] = [clip_frames(p, 1.0, ms, cache) for p in cine]
    sets["breast-cine"] = (cine_train, [f for c in clips["breast-cine"] for f in c])
    # DDTI's validation images one a second, in the split's order: a
    # stand-in for a thyroid scan (no thyroid cine is shared).
    clips["ddti-sequence"] = [sets["ddti"][1]]
    label = {"busi": 0, "busbra": 0, "breast-cine": 0, "ddti": 1, "lung": 2, "phantom": 2}
    for k, (tr, va) in sets.items():
        log(f"{k}: {len(tr)} training, {len(va)} held-out frames ({NAMES[label[k]]})")
    return sets, label, clips


# The guard's rule (organ/vote.go DefaultRule): the mean of the last WINDOW
# samples, one a second, from MIN_SAMPLES on; warn at WARN, clear below CLEAR.
WINDOW, MIN_SAMPLES, WARN, CLEAR = 5, 5, 0.8, 0.5


def guard(probs, preset):
    """Seconds at which the rule warns over a clip's per-second
    probabilities under preset, and the organ it names."""
    warned, events = None, []
    for t in range(len(probs)):
        m = probs[max(0, t - WINDOW + 1):t + 1].mean(0)
        if warned is not None and m[NAMES.index(warned)] < CLEAR:
            warned = None
        if warned is None and t + 1 >= MIN_SAMPLES:
            for i, n in enumerate(NAMES):
                if n not in (preset, "other") and m[i] >= WARN:
                    warned = n
                    events.append((t + 1, n))
    return events


def evaluate_guard(net, clips):
    """The rule on held-out clips under each preset: clips with a warning
    (right preset: false warnings; wrong preset: caught), and seconds to the
    first warning."""
    net.eval()
    truth = {"breast-cine": "breast", "ddti-sequence": "thyroid", "lung": "other"}
    out = {}
    with torch.no_grad():
        for k, cs in clips.items():
            for preset in ("breast", "thyroid"):
                warned, first, seconds = 0, [], 0
                for c in cs:
                    if not c:
                        continue
                    xs = torch.stack([view(im, None, False) for im in c])[:, None]
                    p = F.softmax(net(xs), 1).numpy()
                    ev = guard(p, preset)
                    seconds += len(c)
                    if ev:
                        warned += 1
                        first.append(ev[0][0])
                kind = "right preset" if truth[k] == preset else ("wrong preset" if truth[k] != "other" else "no organ")
                out[f"{k}@{preset}"] = {"clips": len(cs), "seconds": seconds, "truth": truth[k], "preset": preset,
                                        "kind": kind, "clips_warned": warned,
                                        "first_warning_s_median": sorted(first)[len(first) // 2] if first else None}
    net.train()
    return out


def view(img, rng, augment, fonts=()):
    """The frame as the guard sees it: squashed to S x S, in [0, 1]."""
    x = torch.from_numpy(img.astype(np.float32) / 255.0)
    h, w = x.shape
    if augment:
        u = rng.random()
        if u < 0.6:  # a crop: the sonographer's depth and zoom, a cropped capture
            f = rng.uniform(0.55, 1.0)
            cw, ch = max(8, round(w * f * math.exp(rng.uniform(-0.15, 0.15)))), max(8, round(h * f))
            cw, ch = min(cw, w), min(ch, h)
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            x = x[y0:y0 + ch, x0:x0 + cw]
        elif u < 0.8:  # zoomed out onto black: a wide frame around a tight image
            f = rng.uniform(0.6, 0.95)
            canvas = torch.zeros(h, w)
            nw, nh = max(8, round(w * f)), max(8, round(h * f))
            small = F.interpolate(x[None, None], size=(nh, nw), mode="area")[0, 0]
            ox, oy = rng.randint(0, w - nw), rng.randint(0, h - nh)
            canvas[oy:oy + nh, ox:ox + nw] = small
            x = canvas
        x = D._intensity(x, rng)
        if rng.random() < 0.5:
            x = x.flip(1)
    if augment and rng.random() < 0.5:
        # Text and marks at twice the size, as the detector's training
        # draws them at its 320 px input: a machine's labels are small.
        x = F.interpolate(x[None, None], size=(2 * S, 2 * S), mode="area")[0, 0].contiguous()
        c = x.numpy()
        D._draw_overlays(c, np.zeros((0, 4), np.float32), rng, fonts, (0, 0, 2 * S, 2 * S))
        x = torch.from_numpy(c)
    x = F.interpolate(x[None, None], size=(S, S), mode="area")[0, 0]
    return x.clamp(0, 1)


class Net(nn.Module):
    def __init__(self, widths=(16, 32, 64, 96)):
        super().__init__()
        layers, c = [], 1
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, len(NAMES))

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def evaluate(net, sets, label):
    net.eval()
    out = {}
    with torch.no_grad():
        for k, (_, va) in sets.items():
            if not va:
                continue
            xs = torch.stack([view(im, None, False) for im in va])[:, None]
            p = torch.cat([F.softmax(net(xs[i:i + 64]), 1) for i in range(0, len(xs), 64)])
            y = label[k]
            pred = p.argmax(1)
            other_organ = {0: 1, 1: 0}.get(y)
            out[k] = {"frames": len(va), "truth": NAMES[y], "accuracy": round(float((pred == y).float().mean()), 4),
                      "predicted": {n: int((pred == i).sum()) for i, n in enumerate(NAMES)}}
            if other_organ is not None:
                # What the guard acts on: the other organ called with p >= 0.8.
                out[k]["called_other_organ_p80"] = round(float((p[:, other_organ] >= 0.8).float().mean()), 4)
    net.train()
    return out


def export(net, path, metrics, version, train_data):
    net = net.eval().float()

    class Wrap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, image):
            return F.softmax(self.n(image), 1)

    tmp = path + ".tmp"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(Wrap(net), torch.rand(1, 1, S, S), tmp, opset_version=OPSET, input_names=["image"],
                          output_names=["probs"], do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    m.producer_name = "sonolive-train"
    del m.metadata_props[:]
    for k, v in {"format": FORMAT, "imgsz": json.dumps([S, S]), "channels": "1", "names": json.dumps(NAMES),
                 "version": version, "train_data": json.dumps(train_data), "metrics": json.dumps(metrics)}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--phantom", default="out/phantom-train")
    ap.add_argument("--cache", default="out/organ-frames", help="where clip frames are extracted")
    ap.add_argument("--cine-train", action="store_true",
                    help="train on the odd patients' breast cine clips, hold out the even ones' "
                         "(default: all held out, an unseen machine)")
    ap.add_argument("--out", default="models/organ.onnx")
    ap.add_argument("--report", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    sets, label, clips = load(args)
    pool = {c: [im for k, (tr, _) in sets.items() if label[k] == c for im in tr] for c in range(len(NAMES))}
    fonts = D._fonts()
    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    budget, t0, step = args.minutes * 60, time.time(), 0
    while time.time() - t0 < budget:
        # Classes drawn equally: DDTI's 450 thyroid frames against 2,161
        # breast ones would otherwise teach "breast unless sure".
        ys = [rng.randrange(len(NAMES)) for _ in range(args.batch)]
        xs = torch.stack([view(rng.choice(pool[y]), rng, True, fonts) for y in ys])[:, None]
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        loss = F.cross_entropy(net(xs), torch.tensor(ys), label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            log(f"step {step} {time.time() - t0:.0f}s loss {loss.item():.3f}")
    metrics = evaluate(net, sets, label)
    metrics["guard"] = evaluate_guard(net, clips)
    metrics["steps"] = step
    for k, v in metrics.items():
        if isinstance(v, dict):
            for kk, vv in (v.items() if k == "guard" else [(k, v)]):
                log(f"{kk}: {json.dumps(vv)}")
    train_data = {k: {"frames": len(tr), "class": NAMES[label[k]]} for k, (tr, _) in sets.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    export(net, args.out, metrics, args.version, train_data)
    log(f"wrote {args.out}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(metrics, f, indent=1)


if __name__ == "__main__":
    main()
