"""CNet losses: CenterNet focal loss on the heatmap, GIoU (+ small log-L1) on
ltrb distances at Gaussian-weighted positive cells, BCE for malignancy."""

import torch
import torch.nn.functional as F

from .model import BOX_LOG_MAX, STRIDE, decode_box_distances


def focal_heatmap(logits, gt, alpha=2.0, beta=4.0):
    """CenterNet's penalty-reduced focal loss, normalised by the peak count."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1 - pos
    logp = F.logsigmoid(logits)
    log1mp = F.logsigmoid(-logits)
    pos_loss = -(((1 - p) ** alpha) * logp * pos).sum()
    neg_loss = -(((1 - gt) ** beta) * (p ** alpha) * log1mp * neg).sum()
    npos = pos.sum()
    return (pos_loss + neg_loss) / npos.clamp(min=1)


def giou_ltrb(pred, gt, eps=1e-6):
    """GIoU of boxes given as ltrb distances from the same point. [...,4]."""
    pl, pt, pr, pb = pred.unbind(-1)
    gl, gt_, gr, gb = gt.unbind(-1)
    pa = (pl + pr) * (pt + pb)
    ga = (gl + gr) * (gt_ + gb)
    iw = torch.min(pl, gl) + torch.min(pr, gr)
    ih = torch.min(pt, gt_) + torch.min(pb, gb)
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = pa + ga - inter
    iou = inter / (union + eps)
    cw = torch.max(pl, gl) + torch.max(pr, gr)
    ch = torch.max(pt, gt_) + torch.max(pb, gb)
    c = cw * ch + eps
    return iou - (c - union) / c


def cnet_loss(out, batch, w_heat=1.0, w_box=2.0, w_l1=0.2, w_mal=1.0, mal_smooth=0.0):
    """mal_smooth pulls the malignancy targets towards 0.5 (label smoothing):
    with ~700 labelled lesions the head otherwise drives its training loss to
    near zero and becomes over-confident on validation."""
    heat_logits, box_raw, mal_logits = out
    _, heat_gt, box_gt, wreg, tmal, wmal = batch
    l_heat = focal_heatmap(heat_logits, heat_gt)
    sel = wreg > 0  # [B,G,G]
    nbox = wreg.sum().clamp(min=1)  # each box's weights sum to 1
    if sel.any():
        pr = box_raw.permute(0, 2, 3, 1)[sel]  # [P,4]
        gt = box_gt.permute(0, 2, 3, 1)[sel]
        w = wreg[sel]
        pd = decode_box_distances(pr)
        l_giou = ((1 - giou_ltrb(pd, gt)) * w).sum() / nbox
        tgt_log = torch.log(gt / STRIDE).clamp(-BOX_LOG_MAX, BOX_LOG_MAX)
        l_l1 = (F.smooth_l1_loss(pr, tgt_log, reduction="none", beta=0.1).sum(-1) * w).sum() / nbox
    else:
        l_giou = l_l1 = box_raw.sum() * 0
    loss = w_heat * l_heat + w_box * l_giou + w_l1 * l_l1
    parts = {"heat": l_heat.detach(), "giou": l_giou.detach(), "l1": l_l1.detach()}
    if mal_logits is not None:
        msel = wmal > 0
        if msel.any():
            ml = mal_logits[:, 0][msel]
            target = tmal[msel] * (1 - mal_smooth) + 0.5 * mal_smooth
            l_mal = (F.binary_cross_entropy_with_logits(ml, target, reduction="none") * wmal[msel]).sum() \
                / wmal.sum().clamp(min=1)
        else:
            l_mal = mal_logits.sum() * 0
        loss = loss + w_mal * l_mal
        parts["mal"] = l_mal.detach()
    return loss, parts
