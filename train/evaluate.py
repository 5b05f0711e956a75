"""Validation: decode exactly like infer/decode.go, AP@0.5, best-F1 operating
point, false positives on negative images, malignancy AUC and temperature."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from .model import STRIDE, decode_box_distances

try:
    from torchvision.ops import nms as _tv_nms
except Exception:  # pragma: no cover - torchvision missing
    _tv_nms = None


def nms(boxes, scores, iou):
    if _tv_nms is not None:
        return _tv_nms(boxes, scores, iou)
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(int(i))
        if order.numel() == 1:
            break
        rest = order[1:]
        ov = box_iou(boxes[i:i + 1], boxes[rest])[0]
        order = rest[ov <= iou]
    return torch.tensor(keep, dtype=torch.long)


def box_iou(a, b):
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def decode(heat, boxes, threshold=0.05, nms_iou=0.5, max_det=100):
    """One image. heat [C,G,G] probabilities, boxes [4,G,G] ltrb pixels.

    A cell is a detection of class c when heat >= threshold and it is the
    maximum of its 3x3 neighbourhood; box (cx-l, cy-t, cx+r, cy+b) with
    cx = (j+0.5)*8; then class-agnostic NMS. Returns (xyxy [N,4], score [N],
    class [N], cell (i, j) [N,2])."""
    C, G, _ = heat.shape
    peak = heat == F.max_pool2d(heat[None], 3, 1, 1)[0]
    m = peak & (heat >= threshold)
    c, i, j = m.nonzero(as_tuple=True)
    s = heat[c, i, j]
    if s.numel() > 4 * max_det:
        top = s.topk(4 * max_det).indices
        c, i, j, s = c[top], i[top], j[top], s[top]
    cx = (j.float() + 0.5) * STRIDE
    cy = (i.float() + 0.5) * STRIDE
    l, t, r, b = boxes[:, i, j]
    xyxy = torch.stack([cx - l, cy - t, cx + r, cy + b], 1)
    keep = nms(xyxy, s, nms_iou)[:max_det]
    return xyxy[keep], s[keep], c[keep], torch.stack([i, j], 1)[keep]


def _ap(tp, scores, npos):
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    rec = ctp / npos
    prec = ctp / np.maximum(ctp + cfp, 1e-9)
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[1], prec, [0]])
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def auc(scores, labels):
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    npos, nneg = labels.sum(), (1 - labels).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks of ties
    s_sorted = scores[order]
    k = 0
    while k < len(s_sorted):
        e = k
        while e + 1 < len(s_sorted) and s_sorted[e + 1] == s_sorted[k]:
            e += 1
        ranks[order[k:e + 1]] = (k + e + 2) / 2
        k = e + 1
    return float((ranks[labels == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def fit_temperature(logits, labels):
    """Temperature T minimising the NLL of sigmoid(logit / T) (grid search)."""
    z = np.asarray(logits, float)
    y = np.asarray(labels, float)
    if len(z) == 0 or y.min() == y.max():
        return 1.0, float("nan")
    best = (float("inf"), 1.0)
    for T in np.exp(np.linspace(math.log(0.5), math.log(8.0), 97)):
        q = z / T
        nll = np.mean(np.logaddexp(0, q) - y * q)
        best = min(best, (nll, float(T)))
    return best[1], best[0]


def reliability(logits, labels, T=1.0, bins=10):
    """Calibration of sigmoid(logit / T): expected calibration error over
    equal-width probability bins and the bins as [lo, hi, n, mean p, positive
    fraction]."""
    z = np.asarray(logits, float)
    y = np.asarray(labels, float)
    p = 1 / (1 + np.exp(-z / T))
    rows, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        n = int(sel.sum())
        if n:
            mp, fy = float(p[sel].mean()), float(y[sel].mean())
            ece += n / len(p) * abs(mp - fy)
            rows.append([round(lo, 2), round(hi, 2), n, round(mp, 4), round(fy, 4)])
    brier = float(np.mean((p - y) ** 2)) if len(p) else float("nan")
    return {"malignancy_ece": round(ece, 4), "malignancy_brier": round(brier, 4),
            "malignancy_reliability": rows}


def read_malignancy(mal, box, cell, pool):
    """A detection's malignancy logit from the [G,G] logit map, as the Go
    decoder reads it (docs/model-format.md): pool "cell" takes the cell
    (i, j); pool "box" averages the logits of the cells whose centres lie
    inside box (x1, y1, x2, y2 in input pixels), falling back to the cell when
    none does."""
    i, j = int(cell[0]), int(cell[1])
    if pool == "box":
        G = mal.shape[-1]
        c = (torch.arange(G, dtype=torch.float32) + 0.5) * STRIDE
        x1, y1, x2, y2 = (float(v) for v in box)
        inside = ((c >= y1) & (c <= y2))[:, None] & ((c >= x1) & (c <= x2))[None, :]
        if inside.any():
            return float(mal[inside].mean())
    return float(mal[i, j])


def _match(xyxy, s, gt, thr):
    """Greedy matching of score-sorted detections to ground truth at IoU thr."""
    tp = np.zeros(len(s))
    if len(gt) and len(s):
        iou = box_iou(xyxy, gt).numpy()
        used = np.zeros(len(gt), bool)
        for d in range(len(s)):
            v = np.where(used, -1.0, iou[d])
            g = int(v.argmax())
            if v[g] >= thr:
                tp[d] = 1
                used[g] = True
    return tp


@torch.no_grad()
def evaluate(model, ds, batch_size=8, log=None, max_fp_per_negative=0.2):
    """Metrics on a non-augmented Detections dataset (class-agnostic).

    AP@0.5 and AP@[.5:.95]; the best-F1 threshold; the operating threshold =
    best F1 among thresholds giving at most max_fp_per_negative false boxes
    per negative image (when there are negatives), with precision, recall and
    FP per negative image there; malignancy logits at the ground-truth boxes,
    read with the model's malignancy pool like the top detection's."""
    model.eval()
    pool = getattr(model, "mal_pool", "cell")
    S = ds.S
    all_tp, all_s = [], []
    dets = []  # (xyxy, scores, gt) per image, for AP at other IoUs
    npos = 0
    neg_fp_scores = []  # best scores on negative images, per detection
    n_neg = 0
    mal_z, mal_y = [], []
    top_z, top_y, top_skipped = [], [], 0  # per image: malignancy of its top detection
    for start in range(0, len(ds), batch_size):
        idx = list(range(start, min(len(ds), start + batch_size)))
        imgs, gts, keeps = [], [], []
        for i in idx:
            img, b, keep = ds.sample(i)
            imgs.append(img[None])
            gts.append(b)
            keeps.append(keep)
        heat, box, mal = model(torch.stack(imgs))
        heat = torch.sigmoid(heat)
        box = decode_box_distances(box)
        for k, i in enumerate(idx):
            xyxy, s, _, cells = decode(heat[k], box[k])
            gt = torch.from_numpy(gts[k]).float()
            npos += len(gt)
            if len(gt) == 0:
                n_neg += 1
                neg_fp_scores.extend(s.tolist())
            tp = _match(xyxy, s, gt, 0.5)  # detections are score-sorted by NMS
            dets.append((xyxy, s, gt))
            all_tp.append(tp)
            all_s.append(s.numpy())
            if mal is not None:
                r = ds.recs[i]
                if r.get("label") in ("malignant", "benign"):
                    if len(s):
                        top_z.append(read_malignancy(mal[k, 0], xyxy[0], cells[0], pool))
                        top_y.append(int(r["label"] == "malignant"))
                    else:
                        top_skipped += 1
                labels = r["mal"][keeps[k]]
                for b, y in zip(gts[k], labels):
                    if y < 0:
                        continue
                    G = S // STRIDE
                    gj = min(G - 1, int((b[0] + b[2]) / 2 / STRIDE))
                    gi = min(G - 1, int((b[1] + b[3]) / 2 / STRIDE))
                    mal_z.append(read_malignancy(mal[k, 0], b, (gi, gj), pool))
                    mal_y.append(int(y))
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0)
    sc = np.concatenate(all_s) if all_s else np.zeros(0)
    m = {"val_images": len(ds), "val_boxes": int(npos), "val_negatives": n_neg}
    m["ap50"] = round(_ap(tp, sc, npos), 4)
    aps = [m["ap50"]]
    for thr in np.arange(0.55, 0.951, 0.05):
        t = np.concatenate([_match(x, s, g, thr) for x, s, g in dets]) if dets else np.zeros(0)
        aps.append(_ap(t, sc, npos))
    m["ap50_95"] = round(float(np.mean(aps)), 4)
    m["ap75"] = round(float(aps[5]), 4)
    # operating points over score thresholds (thresholds are floored to 3
    # decimals so that a decoder using the rounded value keeps the same boxes)
    neg_s = np.sort(np.asarray(neg_fp_scores, float))
    best = (0.0, 0.5, 0.0, 0.0)
    oper = (0.0, None, 0.0, 0.0)
    order = np.argsort(-sc, kind="stable")
    ctp = np.cumsum(tp[order])
    for k, o in enumerate(order):
        if k + 1 < len(order) and sc[order[k + 1]] == sc[o]:
            continue
        p = ctp[k] / (k + 1)
        r = ctp[k] / max(npos, 1)
        f1 = 2 * p * r / max(p + r, 1e-9)
        if f1 > best[0]:
            best = (f1, float(sc[o]), float(p), float(r))
        thr = math.floor(float(sc[o]) * 1000) / 1000
        fpn = (len(neg_s) - np.searchsorted(neg_s, thr, "left")) / n_neg if n_neg else 0.0
        if fpn <= max_fp_per_negative and f1 > oper[0]:
            oper = (f1, thr, float(p), float(r))
    m.update(best_f1=round(best[0], 4), best_threshold=round(best[1], 3) if best[0] > 0 else None,
             precision_at_best=round(best[2], 4), recall_at_best=round(best[3], 4))
    if n_neg and best[0] > 0:
        m["fp_per_negative_image_at_best"] = round(sum(1 for s in neg_fp_scores if s >= best[1]) / n_neg, 4)
    if oper[1] is not None:
        thr = oper[1]
        m.update(operating_threshold=thr, operating_rule=(
                     f"best F1 with <= {max_fp_per_negative:g} false boxes per negative image" if n_neg
                     else "best F1 (no negative images in validation)"),
                 f1_at_operating=round(oper[0], 4), precision_at_operating=round(oper[2], 4),
                 recall_at_operating=round(oper[3], 4))
        # recompute at the floored threshold over all detections
        sel = sc >= thr
        m["precision_at_operating"] = round(float(tp[sel].sum() / max(1, sel.sum())), 4)
        m["recall_at_operating"] = round(float(tp[sel].sum() / max(1, npos)), 4)
        pr, rc = m["precision_at_operating"], m["recall_at_operating"]
        m["f1_at_operating"] = round(2 * pr * rc / max(pr + rc, 1e-9), 4)
        if n_neg:
            m["fp_per_negative_image_at_operating"] = round(float((neg_s >= thr).sum()) / n_neg, 4)
    if mal_z:
        m["malignancy_auc"] = round(auc(mal_z, mal_y), 4)
        m["malignancy_cases"] = len(mal_y)
    if top_z:
        # as `sonolive eval` reports it: per benign/malignant image, the
        # malignancy at its highest-scoring detection (images without one skipped)
        m["malignancy_auc_top_detection"] = round(auc(top_z, top_y), 4)
        m["malignancy_top_detection_images"] = len(top_z)
        m["malignancy_top_detection_skipped"] = top_skipped
    return m, (mal_z, mal_y)
