"""COCO loading, grouped train/validation split, letterbox and ultrasound
augmentation, and CenterNet-style targets for CNet.

A source is `ANNOTATIONS[:IMAGES_ROOT]`: a COCO annotations.json (or a
directory holding one), with `file_name`s relative to IMAGES_ROOT (default: the
annotations file's directory). Relative paths that do not exist as given are
looked up under the data root ($SONOLIVE_DATA, default ../shared/data), so
`--coco busi` means ../shared/data/busi/annotations.json. Images without
annotations are negatives.
"""

import glob
import json
import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .model import STRIDE


def data_root():
    return os.environ.get("SONOLIVE_DATA", "../shared/data")


def resolve_source(spec):
    """'PATH[:IMAGES_ROOT]' -> (annotations.json path, images root)."""
    path, _, root = spec.partition(":")
    cands = [path]
    if not os.path.isabs(path):
        cands.append(os.path.join(data_root(), path))
    for c in cands:
        if os.path.isdir(c):
            c = os.path.join(c, "annotations.json")
        if os.path.isfile(c):
            ann = c
            break
    else:
        raise FileNotFoundError(f"COCO source {spec!r}: no annotations.json at {cands} "
                                f"(data root {data_root()!r}; set SONOLIVE_DATA)")
    if root and not os.path.isabs(root) and not os.path.isdir(root):
        alt = os.path.join(data_root(), root)
        root = alt if os.path.isdir(alt) else root
    return ann, (root or os.path.dirname(ann))


class ClassMap:
    """Maps COCO category names to detector classes and malignancy labels.

    names: detector class names. With one name every category maps to it;
    otherwise a category maps to the class of the same name, or as given by
    `remap` ({category: class}).
    malignancy: (negative category names, positive category names) or None.
    Categories in neither set give an unknown (ignored) malignancy target.
    """

    def __init__(self, names, remap=None, malignancy=None):
        self.names = list(names)
        self.remap = dict(remap or {})
        self.mal_neg, self.mal_pos = (set(malignancy[0]), set(malignancy[1])) if malignancy else (set(), set())
        self.has_malignancy = malignancy is not None

    def cls(self, cat):
        if cat in self.remap:
            cat = self.remap[cat]
        if len(self.names) == 1:
            return 0
        if cat not in self.names:
            raise KeyError(f"category {cat!r} is not one of the class names {self.names} "
                           f"(use --class-map {cat}=NAME)")
        return self.names.index(cat)

    def mal(self, cat):
        if cat in self.mal_pos:
            return 1.0
        if cat in self.mal_neg:
            return 0.0
        return -1.0


def load_coco(spec, cmap, max_side=640, limit=None, log=None):
    """Load one COCO source into memory.

    Returns a list of records: {img: uint8 HxW, boxes: float32 Nx4 xyxy (in the
    stored image's pixels), cls: int64 N, mal: float32 N (-1 unknown), key,
    label, source, file}. Images larger than max_side are shrunk on load (box
    filter) to save memory; boxes are scaled with them.
    """
    ann_path, root = resolve_source(spec)
    with open(ann_path) as f:
        coco = json.load(f)
    cats = {c["id"]: c["name"] for c in coco.get("categories", [])}
    by_img = {}
    for a in coco.get("annotations", []):
        if a.get("iscrowd", 0):
            continue
        by_img.setdefault(a["image_id"], []).append(a)
    images = sorted(coco["images"], key=lambda im: im["id"])
    if limit:
        images = _spread(images, limit)
    recs = []
    src_name = os.path.basename(os.path.dirname(os.path.abspath(ann_path)))
    for im in images:
        path = os.path.join(root, im["file_name"])
        pil = _open_gray(path)
        w, h = pil.size
        s = 1.0
        if max_side and max(w, h) > max_side:
            s = max_side / max(w, h)
            pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BOX)
        sx, sy = pil.size[0] / w, pil.size[1] / h
        boxes, cls, mal = [], [], []
        for a in by_img.get(im["id"], []):
            x, y, bw, bh = a["bbox"]
            if bw <= 0 or bh <= 0:
                continue
            cat = cats.get(a["category_id"], str(a["category_id"]))
            boxes.append([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy])
            cls.append(cmap.cls(cat))
            mal.append(cmap.mal(cat))
        recs.append(dict(
            img=np.asarray(pil, dtype=np.uint8).copy(),
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            cls=np.array(cls, np.int64),
            mal=np.array(mal, np.float32),
            key=im.get("group", im["id"]),
            label=im.get("label", "lesion" if boxes else "normal"),
            source=src_name,
            file=im["file_name"],
        ))
    if log:
        nb = sum(len(r["boxes"]) for r in recs)
        nneg = sum(1 for r in recs if len(r["boxes"]) == 0)
        log(f"loaded {spec}: {len(recs)} images, {nb} boxes, {nneg} negatives ({ann_path})")
    return recs, ann_path


def _open_gray(path):
    """8-bit grayscale; 16-bit PNGs are scaled (not clipped) to 8 bits."""
    pil = Image.open(path)
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(pil, np.float32)
        peak = 65535.0 if pil.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8))
    return pil.convert("L")


def _spread(items, n):
    """n items evenly spread over the list (deterministic), for small subsets."""
    if n >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


# --------------------------------------------------------------------------
# Grouped split


def _thumb(img, n=32):
    """High-passed 32x32 thumbnail, normalised: near-duplicate frames correlate
    > 0.9, different images of the same device/layout mostly < 0.7."""
    small = Image.fromarray(img).resize((n, n), Image.BOX)
    t = np.asarray(small, np.float32) - np.asarray(small.filter(ImageFilter.GaussianBlur(3)), np.float32)
    t = t.ravel() - t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


def grouped_split(recs, frac, dup_corr=0.8):
    """Deterministic train/validation split that keeps near-duplicates together.

    Groups: images sharing a COCO `group` (DDTI panels) and images whose high-passed
    32x32 thumbnails correlate above dup_corr (BUSI's adjacent frames of one
    patient). Within each label, groups are ordered by their smallest key
    (image id or group) and the last `frac` of them (a contiguous range, as the
    data README asks for) go to validation.
    """
    n = len(recs)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first = {}
    for i, r in enumerate(recs):
        k = (r["source"], r["key"])
        if k in first:
            union(first[k], i)
        else:
            first[k] = i
    T = np.stack([_thumb(r["img"]) for r in recs])
    C = T @ T.T
    ii, jj = np.nonzero(np.triu(C, 1) > dup_corr)
    for a, b in zip(ii, jj):
        union(a, b)
    groups = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    by_label = {}
    for g in groups.values():
        label = recs[g[0]]["label"]
        by_label.setdefault(label, []).append(g)
    train, val = [], []
    for label in sorted(by_label):
        gs = sorted(by_label[label], key=lambda g: min(_sortkey(recs[i]["key"]) for i in g))
        total = sum(len(g) for g in gs)
        want = frac * total
        taken = 0
        for g in reversed(gs):
            if taken < want - len(g) / 2:
                val.extend(g)
                taken += len(g)
            else:
                train.extend(g)
    dup_pairs = len(ii)
    vset = set(val)
    info = dict(groups=len(groups), dup_pairs=int(dup_pairs),
                val_groups=sum(1 for g in groups.values() if g[0] in vset),
                # multi-image groups (near-duplicates / shared COCO group), as record indices
                clusters=sorted(sorted(g) for g in groups.values() if len(g) > 1),
                # images per image label (a group is stratified by its first image's label;
                # a few BUSI near-duplicate groups mix labels)
                labels={lab: {"train": sum(1 for i in range(n) if recs[i]["label"] == lab and i not in vset),
                              "val": sum(1 for i in range(n) if recs[i]["label"] == lab and i in vset)}
                        for lab in sorted({r["label"] for r in recs})},
                mixed_label_groups=sum(1 for g in groups.values() if len({recs[i]["label"] for i in g}) > 1))
    return sorted(train), sorted(val), info


SPLIT_METHOD = ("grouped: images sharing a COCO `group` and near-duplicates (high-passed 32x32 "
                "thumbnails correlating > {corr:g}) form groups; per label (of a group's first "
                "image), groups ordered by their smallest key (image id or COCO group) and the "
                "last {frac:g} of them (a contiguous range) are validation")


def split_to_json(recs, train, val, info, source, frac, dup_corr=0.8):
    """The split file: validation file_names (as in annotations.json) plus
    counts and group information, so others (the Go eval command) can use
    exactly the same validation images."""
    files = [r["file"] for r in recs]
    keyed = {}
    for i in val:
        keyed.setdefault(recs[i]["label"], []).append(recs[i]["key"])
    return {
        "source": source,
        "method": SPLIT_METHOD.format(corr=dup_corr, frac=frac),
        "val_frac": frac,
        "dup_corr": dup_corr,
        "images": len(recs),
        "train_count": len(train),
        "val_count": len(val),
        "groups": info["groups"],
        "val_groups": info["val_groups"],
        "near_duplicate_pairs": info["dup_pairs"],
        "labels": info["labels"],
        "mixed_label_groups": info["mixed_label_groups"],
        # validation key range per label (image id for BUSI, COCO group for DDTI)
        "val_key_range": {lab: [min(ks, key=_sortkey), max(ks, key=_sortkey)] for lab, ks in sorted(keyed.items())},
        "val": sorted(files[i] for i in val),
        "clusters": [sorted(files[i] for i in g) for g in info["clusters"]],
    }


def split_from_json(recs, split):
    """(train, val) record indices from a split file's `val` list. Every
    listed file must be in the source; everything else is training."""
    idx = {}
    for i, r in enumerate(recs):
        idx.setdefault(r["file"], []).append(i)
    missing = [f for f in split["val"] if f not in idx]
    if missing:
        raise ValueError(f"split file: {len(missing)} validation file(s) not in the source, e.g. {missing[:3]}")
    vset = {i for f in split["val"] for i in idx[f]}
    val = sorted(vset)
    train = [i for i in range(len(recs)) if i not in vset]
    return train, val


def _sortkey(k):
    return (0, k, "") if isinstance(k, (int, float)) else (1, 0, str(k))


# --------------------------------------------------------------------------
# Letterbox and augmentation


def letterbox_params(w, h, size):
    """The deployment letterbox (docs/model-format.md): scale to fit keeping
    aspect, resized size rounded to whole pixels, padded symmetrically with
    the odd pixel on the right/bottom. Returns (nw, nh, padx, pady)."""
    r = min(size / w, size / h)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


def _area_taps(n_in, n_out):
    """OpenCV INTER_AREA (shrinking) as taps: output i averages the input over
    [i*s, (i+1)*s), s = n_in/n_out, weighting each pixel by its coverage."""
    s = n_in / n_out
    K = int(math.ceil(s)) + 1
    lo = torch.arange(n_out, dtype=torch.float64) * s
    idx = lo.floor().long()[:, None] + torch.arange(K)[None, :]
    k = idx.double()
    w = (torch.minimum(k + 1, lo[:, None] + s) - torch.maximum(k, lo[:, None])).clamp(min=0) / s
    w[idx >= n_in] = 0
    return idx.clamp(max=n_in - 1), w.float()


def _resize_area(x, nw, nh):
    h, w = x.shape
    if nw != w:
        idx, wt = _area_taps(w, nw)
        x = (x[:, idx] * wt).sum(-1)
    if nh != h:
        idx, wt = _area_taps(h, nh)
        x = (x[idx, :] * wt[:, :, None]).sum(1)
    return x


def _resize(img, nw, nh, mode):
    """uint8 HxW -> float nh x nw in [0,1].

    mode "deploy" is what infer/letterbox.go does: OpenCV INTER_AREA when
    shrinking, INTER_LINEAR when enlarging, 8-bit result. Training also uses
    "linear" (INTER_LINEAR even when shrinking: aliased) and "antialias"
    (bilinear with a widened kernel) so the model does not depend on it."""
    x = torch.from_numpy(img).float().div_(255.0)
    h, w = img.shape
    if (nw, nh) == (w, h):
        return x
    shrink = nw <= w  # infer/letterbox.go picks INTER_AREA on the width alone
    if mode == "deploy" and shrink:
        return _resize_area(x, nw, nh).mul_(255).round_().div_(255)
    # align_corners=False, no antialias == OpenCV INTER_LINEAR.
    y = F.interpolate(x[None, None], size=(nh, nw), mode="bilinear", align_corners=False,
                      antialias=(mode == "antialias" and shrink)).clamp_(0, 1)[0, 0]
    if mode == "deploy":
        y = y.mul_(255).round_().div_(255)
    return y


def _fonts():
    paths = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"))
    return paths


_FONT_CACHE = {}


def _font(rng, paths):
    if not paths or rng.random() < 0.3:
        return ImageFont.load_default()
    p = paths[rng.randrange(len(paths))]
    size = rng.randrange(8, 18)
    key = (p, size)
    if key not in _FONT_CACHE:
        try:
            _FONT_CACHE[key] = ImageFont.truetype(p, size)
        except OSError:
            _FONT_CACHE[key] = ImageFont.load_default()
    return _FONT_CACHE[key]


_WORDS = ["L BREAST", "R BREAST", "RT", "LT", "THYROID", "TRANS", "SAG", "LONG", "ISTHMUS",
          "12L-RS", "L12-5", "9L", "C5-1", "Gn", "DR", "FR", "MI", "TIs", "TIb", "cm", "Hz",
          "D", "Dist", "Area", "2D", "CF", "PW", "ANT", "POST", "UOQ", "2:00", "10 o'clock",
          "TI-RADS", "TR3", "TR4", "BI-RADS", "Depth", "AO%", "Zoom", "HR", "Res", "Pen"]


def _random_text(rng):
    parts = []
    for _ in range(rng.randrange(1, 4)):
        t = rng.random()
        if t < 0.45:
            parts.append(rng.choice(_WORDS))
        elif t < 0.8:
            parts.append(f"{rng.uniform(0, 60):.{rng.randrange(0, 3)}f}")
        else:
            parts.append(str(rng.randrange(0, 9999)))
    return " ".join(parts)


def _draw_overlays(canvas_np, boxes, rng, fonts, content):
    """Burned-in text, caliper '+'/'x' marks with dotted lines, scale ticks.

    Drawn on an overlay that replaces the image where it is non-zero."""
    S = canvas_np.shape[0]
    x0, y0, x1, y1 = content
    ov = Image.new("L", (S, S), 0)
    d = ImageDraw.Draw(ov)
    if rng.random() < 0.6:  # text
        for _ in range(rng.randrange(1, 6)):
            f = _font(rng, fonts)
            edge = rng.random() < 0.7
            if edge:
                x = rng.choice([rng.uniform(x0, x0 + 40), rng.uniform(x0, max(x0, x1 - 60))])
                y = rng.choice([rng.uniform(y0, y0 + 25), rng.uniform(max(y0, y1 - 25), y1)])
            else:
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            d.text((x, y), _random_text(rng), fill=rng.randrange(150, 256), font=f)
    if rng.random() < 0.5:  # calipers
        n = rng.randrange(1, 5)
        pts = []
        for _ in range(n):
            if len(boxes) and rng.random() < 0.4:
                b = boxes[rng.randrange(len(boxes))]
                # on a lesion edge, as sonographers place them
                side = rng.randrange(4)
                t = rng.uniform(0.3, 0.7)
                px = [b[0], b[0] + t * (b[2] - b[0]), b[2], b[0] + t * (b[2] - b[0])][side]
                py = [b[1] + t * (b[3] - b[1]), b[1], b[1] + t * (b[3] - b[1]), b[3]][side]
            else:
                px, py = rng.uniform(x0, x1), rng.uniform(y0, y1)
            pts.append((px, py))
        for px, py in pts:
            r = rng.uniform(2.5, 6)
            c = rng.randrange(170, 256)
            wd = 1 if rng.random() < 0.8 else 2
            if rng.random() < 0.75:
                d.line([(px - r, py), (px + r, py)], fill=c, width=wd)
                d.line([(px, py - r), (px, py + r)], fill=c, width=wd)
            else:
                d.line([(px - r, py - r), (px + r, py + r)], fill=c, width=wd)
                d.line([(px - r, py + r), (px + r, py - r)], fill=c, width=wd)
        if len(pts) >= 2 and rng.random() < 0.4:  # dotted measurement line
            (ax, ay), (bx, by) = pts[0], pts[1]
            L = math.hypot(bx - ax, by - ay)
            step = rng.uniform(3, 6)
            c = rng.randrange(150, 256)
            for k in range(int(L / step)):
                t = k * step / max(L, 1e-6)
                d.point((ax + t * (bx - ax), ay + t * (by - ay)), fill=c)
    if rng.random() < 0.2:  # depth scale ticks along one side
        x = x1 - 4 if rng.random() < 0.5 else x0 + 2
        step = rng.uniform(8, 30)
        y = y0
        while y < y1:
            d.line([(x, y), (x + rng.choice([2, 3, 4]), y)], fill=200)
            y += step
    ov = np.asarray(ov, np.float32) / 255.0
    m = ov > 0
    canvas_np[m] = ov[m]


def _gauss_blur(x, sigma):
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = x[None, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x[0, 0]


def _intensity(x, rng, levels=False):
    """Gain, gamma, TGC-like depth gain curve, lateral shading, speckle, blur,
    additive noise; with levels, also (25%) a compressed output range
    (lifted blacks, dimmed whites: limited-range capture, a washed-out monitor
    feed). x: float tensor HxW in [0,1] (image content only)."""
    h, w = x.shape
    if rng.random() < 0.8:
        x = x.clamp(0, 1) ** math.exp(rng.uniform(-0.45, 0.45))
    if rng.random() < 0.7:  # TGC: smooth gain curve over depth
        yy = torch.linspace(0, 1, h)
        g = 1 + rng.uniform(-0.5, 0.5) * (yy - 0.5)
        g = g + rng.uniform(-0.2, 0.2) * torch.sin(math.pi * yy * rng.uniform(0.5, 3) + rng.uniform(0, 6.3))
        x = x * g.clamp(0.3, 2.0)[:, None]
    if rng.random() < 0.3:  # lateral shading (probe contact)
        xx = torch.linspace(-1, 1, w)
        x = x * (1 - rng.uniform(0, 0.5) * (xx - rng.uniform(-1, 1)).abs().clamp(max=1) ** 2)[None, :]
    if rng.random() < 0.5:  # speckle: correlated multiplicative noise
        f = rng.choice([1, 2, 3])
        n = torch.randn(1, 1, max(1, h // f), max(1, w // f))
        if f > 1:
            n = F.interpolate(n, size=(h, w), mode="bilinear", align_corners=False)
        x = x * (1 + rng.uniform(0.05, 0.35) * n[0, 0]).clamp(min=0)
    if rng.random() < 0.3:
        x = _gauss_blur(x, rng.uniform(0.4, 1.6))
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.06, 0.06)
    if rng.random() < 0.3:
        x = x + torch.randn(h, w) * rng.uniform(0.005, 0.03)
    if levels and rng.random() < 0.25:
        lo, hi = rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)
        x = lo + (hi - lo) * x.clamp(0, 1)
    return x.clamp(0, 1)


def _box_share(boxes, w, h):
    """Area of the largest box over the image's."""
    wh = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float(wh.max()) / max(1.0, float(w * h))


def _tissue(S, x, rng):
    """An SxS tissue-like background for a zoomed-out crop: correlated
    multiplicative speckle at the image's median brightness, fading with
    depth, so the crop's border is not a black frame the model could key on."""
    level = float(x.median()) if x.numel() else 0.3
    cell = rng.choice([1, 2, 2, 3])
    n = torch.randn(1, 1, S // cell, S // cell)
    n = F.interpolate(n, size=(S, S), mode="bilinear", align_corners=False)[0, 0]
    t = level * (1 + rng.uniform(0.2, 0.45) * n).clamp(min=0)
    t = t * torch.linspace(rng.uniform(1.0, 1.2), rng.uniform(0.6, 0.9), S)[:, None]
    return _gauss_blur(t, rng.uniform(0.5, 1.0)).clamp(0, 1)


def _fade_lesions(canvas, boxes, rng):
    """Lowers each lesion's contrast with its surroundings: inside a soft
    ellipse in its box the mean moves toward the mean of a ring around the
    box, keeping a random 35-75% of the difference and all of the lesion's
    own texture. Missed malignant lesions are mostly low-contrast ones
    (issue 17: recall 0.36 at |ln(inside/outside)| < ln(1/0.7) against
    0.74), which the sites' framing and gain rarely produce on their own."""
    S = canvas.shape[0]
    yy = torch.arange(S, dtype=torch.float32)[:, None] + 0.5
    xx = torch.arange(S, dtype=torch.float32)[None, :] + 0.5
    out = canvas.clone()
    for b in boxes:
        x0, y0, x1, y1 = (float(v) for v in b)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max(1.0, (x1 - x0) / 2), max(1.0, (y1 - y0) / 2)
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        inside = (1.0 - d).clamp(0, 0.25) * 4  # 1 within 0.87 of the radius, 0 at the ellipse
        ring = (d > 1.2) & (d < 2.6)
        core = d < 0.8
        if ring.sum() < 8 or core.sum() < 4:
            continue
        m_in, m_out = float(canvas[core].mean()), float(canvas[ring].mean())
        keep = rng.uniform(0.35, 0.75)
        out = out + inside * (1 - keep) * (m_out - m_in)
    return out.clamp(0, 1)


def _fan_mask(S, boxes, rng):
    """Convex-probe sector mask (True inside) that keeps every box centre."""
    ax = S / 2 + rng.uniform(-0.1, 0.1) * S
    ay = -rng.uniform(0.05, 0.5) * S
    half = math.radians(rng.uniform(28, 45))
    r0 = -ay + rng.uniform(0, 0.1) * S
    r1 = r0 + rng.uniform(0.8, 1.1) * S
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    dx, dy = xx - ax, yy - ay
    rad = torch.sqrt(dx * dx + dy * dy)
    ang = torch.atan2(dx, dy).abs()
    m = (ang <= half) & (rad >= r0) & (rad <= r1)
    for b in boxes:
        cx, cy = int(min(S - 1, (b[0] + b[2]) / 2)), int(min(S - 1, (b[1] + b[3]) / 2))
        if not m[cy, cx]:
            return None
    return m


class Detections(torch.utils.data.Dataset):
    """Letterboxed (and, when augment, augmented) samples with targets.
    appearance=False keeps only the geometric augmentation (scale, aspect,
    placement, resampling, flip): the ablation of the ultrasound-specific
    intensity, sector and burned-in-mark augmentation. levels adds output
    range compression to the intensity augmentation."""

    def __init__(self, recs, num_classes, size=320, augment=False, seed=0, appearance=True, levels=False,
                 lesion_contrast=0.0):
        self.lesion_contrast = lesion_contrast
        self.recs = recs
        self.C = num_classes
        self.S = size
        self.augment = augment
        self.appearance = appearance
        self.levels = levels
        self.seed = seed
        self.epoch = 0
        self.fonts = _fonts()

    def __len__(self):
        return len(self.recs)

    def __getitem__(self, i):
        rng = random.Random((self.seed * 1000003 + self.epoch) * 1000003 + i)
        torch.manual_seed(rng.randrange(1 << 62))
        img, boxes, keep = self.sample(i, rng)
        r = self.recs[i]
        return (img[None], *targets(boxes, r["cls"][keep], r["mal"][keep], self.C, self.S))

    def sample(self, i, rng=None):
        """-> (image tensor SxS in [0,1], boxes Nx4 in input pixels, kept-box mask)."""
        r = self.recs[i]
        img, boxes = r["img"], r["boxes"].copy()
        h, w = img.shape
        S = self.S
        aug = self.augment
        zoom_out = False
        if not aug:
            nw, nh, px, py = letterbox_params(w, h, S)
            mode = "deploy"
        else:
            base = min(S / w, S / h)
            # A tight crop around the lesion (BUS-BRA's framing: the largest
            # lesion over an eighth of the image) is zoomed out half the
            # time, onto black or tissue-like padding, so that a lesion
            # filling the frame is not the only way the model sees that
            # site, and a small lesion in a wide frame not the only way it
            # sees the other.
            zoom_out = len(boxes) > 0 and _box_share(boxes, w, h) > 0.125 and rng.random() < 0.5
            if zoom_out:
                s = base * math.exp(rng.uniform(math.log(0.4), math.log(0.8)))
            else:
                s = base * math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
            a = math.exp(rng.uniform(-0.15, 0.15))
            nw, nh = max(8, round(w * s * a)), max(8, round(h * s / a))
            # Offsets: uniform over placements that keep all lesions in view
            # (when possible); 30% exactly centred like deployment.
            sx, sy = nw / w, nh / h
            px = self._offset(S, nw, boxes[:, [0, 2]] * sx, rng)
            py = self._offset(S, nh, boxes[:, [1, 3]] * sy, rng)
            u = rng.random()
            mode = "deploy" if u < 0.6 else ("antialias" if u < 0.8 else "linear")
        sx, sy = nw / w, nh / h
        x = _resize(img, nw, nh, mode)
        if aug and self.appearance:
            x = _intensity(x, rng, self.levels)
        canvas = torch.zeros(S, S)
        if aug and zoom_out and rng.random() < 0.5:
            canvas = _tissue(S, x, rng)
        # paste with cropping
        cx0, cy0 = max(0, px), max(0, py)
        cx1, cy1 = min(S, px + nw), min(S, py + nh)
        if cx1 > cx0 and cy1 > cy0:
            canvas[cy0:cy1, cx0:cx1] = x[cy0 - py:cy1 - py, cx0 - px:cx1 - px]
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([px, py, px, py], np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, S)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, S)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
        boxes = boxes[keep]
        if aug and self.appearance and len(boxes) and rng.random() < self.lesion_contrast:
            canvas = _fade_lesions(canvas, boxes, rng)
        if aug:
            if rng.random() < 0.5:
                canvas = canvas.flip(1)
                boxes = boxes[:, [2, 1, 0, 3]].copy()
                boxes[:, [0, 2]] = S - boxes[:, [0, 2]]
                cx0, cx1 = S - cx1, S - cx0
            if not self.appearance:
                return canvas.contiguous(), boxes, keep
            if rng.random() < 0.12:
                m = _fan_mask(S, boxes, rng)
                if m is not None:
                    canvas = canvas * m
            if rng.random() < 0.7:
                c = canvas.numpy()
                _draw_overlays(c, boxes, rng, self.fonts, (cx0, cy0, cx1, cy1))
        return canvas.contiguous(), boxes, keep

    @staticmethod
    def _offset(S, n, spans, rng):
        lo, hi = min(0, S - n), max(0, S - n)
        if rng.random() < 0.3:
            return (S - n) // 2
        if len(spans):
            blo, bhi = -float(spans.min()), S - float(spans.max())
            a, b = max(lo, blo), min(hi, bhi)
            if a <= b:
                lo, hi = a, b
            else:
                return int(round((blo + bhi) / 2))
        return int(round(rng.uniform(lo, hi)))


def targets(boxes, cls, mal, C, S, alpha=0.54):
    """CenterNet targets on the stride-8 grid.

    heat [C,G,G]: elliptical Gaussians (TTFNet, sigma = alpha*side/6) peaking at
    exactly 1 on the cell containing the box centre. Regression cells: inside
    the box where its Gaussian >= 0.1, weighted by it, normalised to sum 1 per
    box (smaller boxes win overlaps). box [4,G,G]: ltrb from each cell centre
    in pixels. mal [G,G] target and weight (0 when unknown).
    """
    G = S // STRIDE
    heat = np.zeros((C, G, G), np.float32)
    box = np.zeros((4, G, G), np.float32)
    wreg = np.zeros((G, G), np.float32)
    tmal = np.zeros((G, G), np.float32)
    wmal = np.zeros((G, G), np.float32)
    centres = (np.arange(G, dtype=np.float32) + 0.5) * STRIDE
    if len(boxes):
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for k in np.argsort(-areas):
            x0, y0, x1, y1 = boxes[k]
            bw, bh = x1 - x0, y1 - y0
            gj = min(G - 1, int((x0 + x1) / 2 / STRIDE))
            gi = min(G - 1, int((y0 + y1) / 2 / STRIDE))
            sx = max(alpha * bw / 6 / STRIDE, 0.35)
            sy = max(alpha * bh / 6 / STRIDE, 0.35)
            jj = np.arange(G, dtype=np.float32) - gj
            ii = np.arange(G, dtype=np.float32) - gi
            g = np.exp(-(ii[:, None] ** 2) / (2 * sy * sy) - (jj[None, :] ** 2) / (2 * sx * sx))
            c = int(cls[k])
            np.maximum(heat[c], g, out=heat[c])
            inside = ((centres[None, :] > x0) & (centres[None, :] < x1) &
                      (centres[:, None] > y0) & (centres[:, None] < y1))
            m = inside & (g >= 0.1)
            m[gi, gj] = True  # the peak cell always regresses
            wk = np.where(m, g, 0).astype(np.float32)
            wk /= wk.sum()
            sel = wk > 0
            wreg[sel] = wk[sel]
            cx = np.broadcast_to(centres[None, :], (G, G))
            cy = np.broadcast_to(centres[:, None], (G, G))
            box[0][sel] = (cx - x0)[sel]
            box[1][sel] = (cy - y0)[sel]
            box[2][sel] = (x1 - cx)[sel]
            box[3][sel] = (y1 - cy)[sel]
            if mal[k] >= 0:
                tmal[sel] = mal[k]
                wmal[sel] = wk[sel]
            else:
                wmal[sel] = 0
    np.maximum(box, 0.5, out=box)  # the peak cell may sit just outside a tiny box
    return (torch.from_numpy(heat), torch.from_numpy(box), torch.from_numpy(wreg),
            torch.from_numpy(tmal), torch.from_numpy(wmal))
