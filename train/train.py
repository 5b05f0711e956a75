"""Train a CNet detector and export it as a sonolive-cnet/1 ONNX model.

    /usr/bin/python3 -m train.train --coco busi --names lesion \\
        --malignancy benign:malignant --organ breast --minutes 60 \\
        --out models/breast.onnx --seed 1

See train/README.md for all recipes. `--smoke` runs a few steps on a handful
of images (a generated synthetic set when no --coco is given) and exports.
"""

import argparse
import copy
import json
import math
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch

from . import data as D
from .evaluate import evaluate, fit_temperature, reliability
from .export import export_onnx
from .loss import cnet_loss
from .model import CNet, count_params, macs


def log(msg):
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m train.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = ap.add_argument_group("data")
    g.add_argument("--coco", action="append", default=[], metavar="PATH[:IMAGES_ROOT]",
                   help="training COCO source (repeatable); relative paths are also looked up under "
                        "$SONOLIVE_DATA (default ../shared/data), e.g. --coco busi")
    g.add_argument("--coco-train", action="append", default=[], metavar="PATH[:IMAGES_ROOT]",
                   help="training-only COCO source (repeatable), e.g. synthetic phantom frames: never "
                        "split, never in validation or metrics")
    g.add_argument("--coco-train-share", type=float, default=None, metavar="F",
                   help="fraction of training samples drawn from the --coco-train sources "
                        "(default: in proportion to their image count)")
    g.add_argument("--split-file", action="append", default=[], metavar="PATH",
                   help="train/validation split of the i-th --coco source: used exactly when PATH "
                        "exists, else the grouped split is computed and written there (JSON: source, "
                        "method, val file_names, counts, groups)")
    g.add_argument("--balance-sites", action="store_true",
                   help="draw as many training samples per epoch from each --coco source as from the "
                        "largest (a smaller site's images repeat, each time augmented anew)")
    g.add_argument("--val-coco", action="append", default=[], metavar="PATH[:IMAGES_ROOT]",
                   help="validation COCO source (repeatable); without it --val-frac splits the training sources")
    g.add_argument("--val-frac", type=float, default=0.15,
                   help="grouped validation split per source when no --val-coco (0 = no validation)")
    g.add_argument("--names", default="lesion", help="comma-separated class names (one name: all categories map to it)")
    g.add_argument("--class-map", default="", metavar="CAT=NAME,...", help="map COCO category names to class names")
    g.add_argument("--malignancy", default="", metavar="NEG,..:POS,..",
                   help="enable the malignancy head: categories labelled benign (left) and malignant (right), "
                        "e.g. benign:malignant; other categories are unlabelled")
    g.add_argument("--limit", type=int, default=0, help="use at most N images per source (evenly spread)")
    g.add_argument("--max-side", type=int, default=640, help="shrink images larger than this on load")
    g = ap.add_argument_group("training")
    g.add_argument("--minutes", type=float, default=10.0, help="training time budget (excl. validation/export)")
    g.add_argument("--max-steps", type=int, default=0,
                   help="stop after this many steps and schedule the LR by steps, so a run is "
                        "reproducible (the time budget still applies); 0 = time budget only")
    g.add_argument("--batch", type=int, default=16)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--wd", type=float, default=5e-4)
    g.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights (0 = off)")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--threads", type=int, default=int(os.environ.get("SONOLIVE_THREADS", "2")),
                   help="torch threads (env SONOLIVE_THREADS)")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    g.add_argument("--imgsz", type=int, default=320)
    g.add_argument("--width", default="16,32,64,128,320", help="channel widths (stem1,stem2,s8,s16,s32)")
    g.add_argument("--depth", default="1,3,4", help="residual blocks at strides 8,16,32")
    g.add_argument("--init", help="start from this checkpoint (.pt; fine-tuning)")
    g.add_argument("--aug", choices=("full", "levels", "geometric"), default="full",
                   help="training augmentation: full; levels (full plus output-range compression); or "
                        "geometric only (scale, aspect, placement, flip: the ablation of the "
                        "ultrasound-specific intensity, sector and mark augmentation)")
    g.add_argument("--lesion-contrast", type=float, default=0.0, metavar="P",
                   help="share of training samples whose lesions are faded toward their surroundings "
                        "(keeping 35-75%% of the mean difference and all texture)")
    g.add_argument("--mal-weight", type=float, default=1.0, help="weight of the malignancy loss")
    g.add_argument("--mal-from", choices=("cls", "s4"), default="cls",
                   help="malignancy head: on the heatmap's tower (cls) or a linear read-out of the "
                        "stride-16 backbone features averaged over the box (s4; usually refitted "
                        "afterwards on frozen features by train.malhead)")
    g.add_argument("--mal-smooth", type=float, default=0.0,
                   help="label smoothing of the malignancy targets (0: none; 0.1 pulls them to 0.05/0.95)")
    g.add_argument("--smoke", action="store_true", help="a few steps on a few images, then export (CI)")
    g = ap.add_argument_group("output")
    g.add_argument("--out", help="ONNX file to write (required unless --split-only)")
    g.add_argument("--split-only", action="store_true",
                   help="load the --coco sources, write/check their --split-file and exit")
    g.add_argument("--ckpt", help="also save a PyTorch checkpoint here (for train.export / --init)")
    g.add_argument("--organ", default="phantom", help="metadata organ: breast, thyroid, phantom")
    g.add_argument("--version", default="0.1.0", help="metadata model version")
    g.add_argument("--max-fp-per-negative", type=float, default=0.2,
                   help="operating threshold: best F1 among thresholds with at most this many false "
                        "boxes per negative validation image (best F1 overall without negatives)")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="malignancy temperature; 0 = fit on validation (1 when there is none)")
    return ap.parse_args(argv)


def _pairs(s):
    out = {}
    for part in filter(None, (p.strip() for p in s.split(","))):
        k, _, v = part.partition("=")
        if not v:
            raise SystemExit(f"--class-map: bad entry {part!r}, want CAT=NAME")
        out[k.strip()] = v.strip()
    return out


class Progress:
    """Single-line progress with ETA on stderr (a line per ~10% when not a tty)."""

    def __init__(self, total_s, max_steps=0):
        self.total_s, self.max_steps = total_s, max_steps
        self.t0 = time.time()
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.next_pct = 0.1
        self.printed = -1

    def frac(self, step):
        f = (time.time() - self.t0) / self.total_s if self.total_s > 0 else 0.0
        if self.max_steps:
            f = max(f, step / self.max_steps)
        return min(1.0, f)

    def update(self, step, info, force=False):
        now = time.time()
        f = self.frac(step)
        if not force and ((self.tty and now - self.last < 0.5) or (not self.tty and f < self.next_pct)):
            return
        if step == self.printed:
            return
        self.last, self.printed = now, step
        if not self.tty:
            while self.next_pct <= f:
                self.next_pct += 0.1
        el = now - self.t0
        eta = el / f - el if f > 0 else 0
        bar = "#" * int(f * 24) + "." * (24 - int(f * 24))
        msg = (f"[{bar}] {f * 100:5.1f}% step {step} {info} "
               f"{_hms(el)} elapsed, ETA {_hms(eta)}")
        if self.tty:
            print("\r" + msg + "\033[K", end="", file=sys.stderr, flush=True)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self):
        if self.tty:
            print(file=sys.stderr)


def _hms(s):
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class EMA:
    def __init__(self, model, decay, tau=200.0):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


class InfiniteSampler(torch.utils.data.Sampler):
    """Yields global indices over seeded per-epoch permutations; Detections
    derives the per-sample augmentation seed from index // n, so runs are
    reproducible with any number of workers.

    The first n - n_extra indices are the --coco sources, in groups of the
    given sizes (one group by default); the last n_extra are a training-only
    source. Each epoch takes every group's quota from a running seeded
    permutation of that group: its size, or with balance the largest
    group's size (a smaller site's images then come more than once per epoch,
    so no site dominates by count alone), and m training-only images with
    m / (main quota + m) = share. An image that comes k times in one epoch is
    yielded as ((epoch * R + k) * n + i) so each time gets its own
    augmentation."""

    def __init__(self, n, seed, n_extra=0, share=None, groups=None, balance=False):
        self.n, self.seed = n, seed
        self.n_extra = n_extra
        self.n_main = n - n_extra
        self.groups = [g for g in (groups or [self.n_main]) if g > 0]
        if sum(self.groups) != self.n_main:
            raise ValueError(f"groups {self.groups} do not add up to {self.n_main} images")
        top = max(self.groups, default=0)
        self.quota = [top if balance else g for g in self.groups]
        if n_extra and share is not None and self.n_main:
            share = min(max(share, 0.0), 0.95)
            self.m = int(round(sum(self.quota) * share / (1 - share)))
        else:
            self.m = n_extra
        sizes = self.groups + ([n_extra] if n_extra else [])
        quotas = self.quota + ([self.m] if n_extra else [])
        self.R = max((-(-q // g) + 1 for g, q in zip(sizes, quotas) if g), default=1)

    def __iter__(self):
        starts = np.cumsum([0] + self.groups).tolist()
        spans = [(s, g, q) for s, g, q in zip(starts, self.groups, self.quota)]
        if self.n_extra:
            spans.append((self.n_main, self.n_extra, self.m))
        rngs = [np.random.default_rng([self.seed, 7919, k]) for k in range(len(spans))]
        pools = [[] for _ in spans]
        epoch = 0
        while True:
            ids = []
            for k, (start, size, quota) in enumerate(spans):
                if quota == size and not pools[k]:
                    ids.append(start + np.arange(size))  # the whole group, once
                    continue
                take = []
                while len(take) < quota:
                    if not pools[k]:
                        pools[k] = list(start + rngs[k].permutation(size))
                    take.append(pools[k].pop())
                ids.append(np.array(take, dtype=np.int64))
            ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
            perm = ids[np.random.default_rng(self.seed + epoch).permutation(len(ids))]
            seen = {}
            for i in perm:
                i = int(i)
                k = seen.get(i, 0)
                seen[i] = k + 1
                yield int((epoch * self.R + min(k, self.R - 1)) * self.n + i)
            epoch += 1


class _GlobalIndex(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, g):
        n = len(self.ds)
        self.ds.epoch = g // n
        return self.ds[g % n]


# Citations of the known public sets, by data directory name (for the model card).
CITATIONS = {
    "busi": "BUSI: Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
            "Data in Brief 28 (2020) 104863. CC BY 4.0.",
    "ddti": "DDTI: Pedraza L, Vargas C, Narvaez F, Duran O, Munoz E, Romero E. An open access thyroid "
            "ultrasound image database. Proc. SPIE 9287 (2015); TN-SCUI 2020 reprocessing.",
}


def _rel(path):
    """Path relative to the data root when under it (keeps metadata machine-independent)."""
    ap_, root = os.path.abspath(path), os.path.abspath(D.data_root())
    return os.path.relpath(ap_, root) if ap_.startswith(root + os.sep) else os.path.basename(path)


def set_threads(n):
    """torch intra-op threads and OpenBLAS' separate pool (see __init__)."""
    n = max(1, n)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    try:
        import ctypes
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line and ".so" in line}
        for lib in libs:
            ctypes.CDLL(lib).openblas_set_num_threads(n)
    except (OSError, AttributeError):
        pass


def main(argv=None):
    args = parse_args(argv)
    if not args.out and not args.split_only:
        raise SystemExit("--out is required")
    t_start = time.time()
    set_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    mal_spec = None
    if args.malignancy:
        neg, _, pos = args.malignancy.partition(":")
        mal_spec = ([s for s in neg.split(",") if s], [s for s in pos.split(",") if s])
    cmap = D.ClassMap(names, _pairs(args.class_map), mal_spec)

    tmpdir = None
    if args.smoke:
        args.limit = args.limit or 8
        args.batch = min(args.batch, 4)
        args.max_steps = args.max_steps or 3
        args.minutes = min(args.minutes, 1.0)
        args.val_frac = args.val_frac or 0.25
        if not args.coco:
            tmpdir = tempfile.mkdtemp(prefix="sonolive-smoke-")
            from .synth import write_synthetic_coco
            args.coco = [write_synthetic_coco(tmpdir)]
            log(f"smoke: synthetic COCO in {tmpdir}")
    if not args.coco:
        raise SystemExit("no training data: give --coco PATH[:IMAGES_ROOT] (or --smoke)")
    if len(args.split_file) > len(args.coco):
        raise SystemExit(f"{len(args.split_file)} --split-file for {len(args.coco)} --coco source(s)")
    if args.split_file and args.val_coco:
        raise SystemExit("--split-file and --val-coco exclude each other")

    train_recs, val_recs, sources = [], [], []
    split_desc = []
    site_starts = []
    for k, spec in enumerate(args.coco):
        site_starts.append(len(train_recs))
        recs, ann = D.load_coco(spec, cmap, args.max_side, args.limit, log)
        info = {"annotations": _rel(ann), "images": len(recs),
                **({"citation": CITATIONS[recs[0]["source"]]} if recs and recs[0]["source"] in CITATIONS else {}),
                "boxes": int(sum(len(r["boxes"]) for r in recs)),
                "negatives": sum(1 for r in recs if len(r["boxes"]) == 0)}
        sfile = args.split_file[k] if k < len(args.split_file) else None
        if sfile and os.path.exists(sfile):
            with open(sfile) as f:
                split = json.load(f)
            if args.limit:  # a subset: keep the listed validation files that were loaded
                have = {r["file"] for r in recs}
                split = dict(split, val=[v for v in split["val"] if v in have])
            tr, va = D.split_from_json(recs, split)
            if not args.limit and (len(tr), len(va)) != (split.get("train_count"), split.get("val_count")):
                log(f"WARNING: {sfile}: counts {len(tr)}/{len(va)} differ from the file's "
                    f"{split.get('train_count')}/{split.get('val_count')}")
            log(f"  split from {sfile}: {len(tr)} train / {len(va)} val images")
            info.update(train_images=len(tr), val_images=len(va), split_file=os.path.basename(sfile))
            split_desc.append(f"{info['annotations']}: {os.path.basename(sfile)} ({split.get('method', '?')})")
            train_recs += [recs[i] for i in tr]
            val_recs += [recs[i] for i in va]
        elif sfile or (not args.val_coco and args.val_frac > 0):
            frac = args.val_frac if args.val_frac > 0 else 0.15
            tr, va, sinfo = D.grouped_split(recs, frac)
            log(f"  grouped split: {len(tr)} train / {len(va)} val images "
                f"({sinfo['groups']} groups, {sinfo['dup_pairs']} near-duplicate pairs)")
            info.update(train_images=len(tr), val_images=len(va))
            if sfile:
                if args.limit:
                    log(f"WARNING: --limit: not writing the split of a subset to {sfile}")
                else:
                    src = _rel(ann)
                    src = os.path.dirname(src) if os.path.basename(src) == "annotations.json" and os.path.dirname(src) else src
                    js = D.split_to_json(recs, tr, va, sinfo, src, frac)
                    os.makedirs(os.path.dirname(os.path.abspath(sfile)), exist_ok=True)
                    with open(sfile, "w") as f:
                        json.dump(js, f, indent=1)
                        f.write("\n")
                    log(f"  wrote split {sfile}")
                    info.update(split_file=os.path.basename(sfile))
            split_desc.append(f"{info['annotations']}: grouped {frac:g} (near-duplicates and groups kept together)")
            train_recs += [recs[i] for i in tr]
            val_recs += [recs[i] for i in va]
        else:
            train_recs += recs
        sources.append(info)
    if args.split_only:
        log("--split-only: " + json.dumps(sources))
        return {"sources": sources}
    n_main = len(train_recs)
    site_sizes = [b - a for a, b in zip(site_starts, site_starts[1:] + [n_main])]
    extra_recs, train_only = [], []
    for spec in args.coco_train:
        recs, ann = D.load_coco(spec, cmap, args.max_side, args.limit, log)
        extra_recs += recs
        train_only.append({"annotations": _rel(ann), "images": len(recs),
                           "boxes": int(sum(len(r["boxes"]) for r in recs)),
                           "negatives": sum(1 for r in recs if len(r["boxes"]) == 0)})
    train_recs += extra_recs
    val_sources = []
    for spec in args.val_coco:
        recs, ann = D.load_coco(spec, cmap, args.max_side, args.limit, log)
        val_recs += recs
        val_sources.append({"annotations": _rel(ann), "images": len(recs),
                            "boxes": int(sum(len(r["boxes"]) for r in recs))})
    if not train_recs:
        raise SystemExit("no training images")
    has_mal = cmap.has_malignancy
    if has_mal:
        labels = np.concatenate([r["mal"] for r in train_recs])
        npos, nneg = int((labels == 1).sum()), int((labels == 0).sum())
        if npos + nneg == 0:
            raise SystemExit(f"--malignancy {args.malignancy}: no training box has one of those categories")
        log(f"malignancy labels: {npos} malignant, {nneg} benign, {int((labels < 0).sum())} unlabelled boxes")
        if npos == 0 or nneg == 0:
            log(f"WARNING: --malignancy {args.malignancy}: only one side has training boxes; check the category names")

    width = tuple(int(v) for v in args.width.split(","))
    depth = tuple(int(v) for v in args.depth.split(","))
    net = CNet(len(names), has_mal, width=width, depth=depth, mal_from=args.mal_from)
    if args.init:
        ck = torch.load(args.init, map_location="cpu")
        missing, unexpected = net.load_state_dict(
            {k: v for k, v in ck["state_dict"].items()
             if k in net.state_dict() and net.state_dict()[k].shape == v.shape}, strict=False)
        log(f"init from {args.init}: {len(missing)} tensors not loaded")
    nparams = count_params(net)
    log(f"CNet {len(names)} class(es) {names}, malignancy head {has_mal}: "
        f"{nparams / 1e6:.3f} M parameters, {macs(net, args.imgsz) / 1e6:.0f} M MACs at {args.imgsz}")
    net.to(device)

    train_ds = D.Detections(train_recs, len(names), args.imgsz, augment=True, seed=args.seed,
                            appearance=args.aug != "geometric", levels=args.aug == "levels",
                            lesion_contrast=args.lesion_contrast)
    sampler = InfiniteSampler(len(train_ds), args.seed, len(extra_recs), args.coco_train_share,
                              groups=site_sizes, balance=args.balance_sites)
    if args.balance_sites:
        log(f"balanced sites: {site_sizes} training images, {sampler.quota} per epoch")
    if extra_recs:
        main = sum(sampler.quota)
        log(f"train-only sources: {len(extra_recs)} images, {sampler.m} per epoch of {main} "
            f"({sampler.m / max(1, main + sampler.m):.0%} of samples)")
    loader = torch.utils.data.DataLoader(
        _GlobalIndex(train_ds), batch_size=args.batch, sampler=sampler,
        num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True)

    decay, no_decay = [], []
    for n_, p in net.named_parameters():
        (decay if p.ndim == 4 and not n_.startswith(("cls.", "reg.", "mal.", "mal_s4.")) else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    ema = EMA(net, args.ema) if args.ema > 0 else None

    budget = args.minutes * 60.0
    prog = Progress(budget, args.max_steps)
    log(f"training on {len(train_recs)} images ({device}, {args.threads} thread(s), batch {args.batch}), "
        f"budget {args.minutes:g} min" + (f" / {args.max_steps} steps" if args.max_steps else ""))
    step = 0
    avg = {}
    net.train()
    warm = 0.05
    for batch in loader:
        if step > 0 and prog.frac(step) >= 1.0:
            break
        # LR schedule: by steps when --max-steps is given (reproducible runs),
        # else by the fraction of the time budget used.
        f = step / args.max_steps if args.max_steps else prog.frac(step)
        lr = args.lr * (0.1 + 0.9 * f / warm if f < warm else
                        0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (f - warm) / (1 - warm))))
        for gp in opt.param_groups:
            gp["lr"] = lr
        batch = [b.to(device, non_blocking=True) for b in batch]
        out = net(batch[0])
        loss, parts = cnet_loss(out, batch, w_mal=args.mal_weight, mal_smooth=args.mal_smooth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
        if ema:
            ema.update(net)
        step += 1
        for k, v in [("loss", loss.detach())] + list(parts.items()):
            avg[k] = 0.9 * avg.get(k, float(v)) + 0.1 * float(v)
        prog.update(step, " ".join(f"{k} {v:.3f}" for k, v in avg.items()))
    prog.update(step, " ".join(f"{k} {v:.3f}" for k, v in avg.items()), force=True)
    prog.close()
    train_s = time.time() - t_start
    final = (ema.model if ema else net).cpu().eval()

    metrics = {"steps": step, "final_loss": {k: round(v, 4) for k, v in avg.items()}}
    T, calibrated = (args.temperature or 1.0), False
    if val_recs:
        vds = D.Detections(val_recs, len(names), args.imgsz, augment=False)
        m, (mz, my) = evaluate(final, vds, max_fp_per_negative=args.max_fp_per_negative)
        if has_mal and not args.temperature and len(my) >= 10 and 0 < sum(my) < len(my):
            T, nll = fit_temperature(mz, my)
            calibrated = True
            m["malignancy_nll"] = round(nll, 4)
        if has_mal:
            m["malignancy_temperature"] = round(T, 4)
            if mz:
                m.update(reliability(mz, my, T))
        metrics.update(m)
        metrics["split"] = ("--val-coco" if args.val_coco else "; ".join(split_desc))
        log("validation: " + json.dumps(m).replace("NaN", "null"))
    train_data = {
        "sources": sources, "val_sources": val_sources, "names": names,
        "train_only_sources": train_only,
        "train_only_share": (round(sampler.m / max(1, n_main + sampler.m), 4) if extra_recs else None),
        "class_map": _pairs(args.class_map), "malignancy": args.malignancy or None,
        "init": (os.path.basename(args.init) if args.init else None),
        "mal_weight": args.mal_weight, "mal_smooth": args.mal_smooth, "mal_from": args.mal_from,
        "aug": args.aug, "seed": args.seed, "minutes": round(train_s / 60, 2), "steps": step, "batch": args.batch,
        "imgsz": args.imgsz, "arch": {"name": "cnet", **final.config}, "params": nparams,
        "smoke": bool(args.smoke),
    }
    if args.ckpt:  # first: a failed export must not lose the weights
        os.makedirs(os.path.dirname(os.path.abspath(args.ckpt)), exist_ok=True)
        torch.save({"config": final.config, "state_dict": final.state_dict(), "names": names,
                    "organ": args.organ, "version": args.version, "imgsz": args.imgsz,
                    "train_data": train_data, "metrics": metrics, "temperature": T,
                    "calibrated": calibrated}, args.ckpt)
        log(f"wrote {args.ckpt}")
    export_onnx(final, args.out, names, args.organ, args.version, args.imgsz, train_data, metrics, T, calibrated)
    log(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    if tmpdir:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)
    return metrics


if __name__ == "__main__":
    main()
