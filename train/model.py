"""CNet: sonolive's anchor-free centre-heatmap detector (format sonolive-cnet/1).

Grayscale input [B,1,S,S] in [0,1]; outputs at stride 8 (G = S/8):
  heatmap    [B,C,G,G]  per-class centre logits (sigmoid in export)
  boxes      [B,4,G,G]  left, top, right, bottom distances in input pixels
  malignancy [B,1,G,G]  optional malignancy logit (sigmoid(logit/T) in export)

The malignancy logit comes from one of two places:
- mal_from="cls" (breast v0.1.0): a 1x1 conv on the heatmap's tower, read at
  the detection's peak cell (metadata malignancy_pool=cell). Trained jointly,
  it memorises the training lesions (training BCE 0.05-0.10, validation NLL
  0.53).
- mal_from="s4" (breast v0.2.0): a linear read-out (1x1 conv) of the
  backbone's stride-16 features, nearest-upsampled to stride 8 and averaged
  over the detection's box (malignancy_pool=box; linear, so the box mean of
  the logit map is the read-out of the box-mean feature). It is fitted with
  L2 on the frozen features of a trained detector (train/malhead.py): those
  features generalise to validation lesions better than the heads built on
  them (train/RESULTS.md).

Backbone: plain 3x3 conv stem (stride 2, 4), then stride-2 3x3 conv
transitions with residual depthwise-separable blocks at strides 8, 16, 32; an
SPPF context block at stride 32 so large lesions (thyroid nodules can fill half
the frame) see the whole image; a small top-down FPN merges 32 -> 16 -> 8.
Every conv is conv+BN+ReLU; BN is folded into the conv at export.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

STRIDE = 8
BOX_LOG_MAX = 4.6  # exp(4.6) * 8 ~ 800 px: larger than any 320 input needs


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DSBlock(nn.Module):
    """Residual depthwise-separable block: x + pw(dw(x)) (then ReLU)."""

    def __init__(self, c, k=3):
        super().__init__()
        self.dw = ConvBN(c, c, k, 1, groups=c)
        self.pw = ConvBN(c, c, 1, act=False)

    def forward(self, x):
        return F.relu(x + self.pw(self.dw(x)))


class SPPF(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.cv1 = ConvBN(c, hidden, 1)
        self.cv2 = ConvBN(hidden * 4, c, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        y3 = self.pool(y2)
        return self.cv2(torch.cat([x, y1, y2, y3], 1))


def _stage(cin, cout, n):
    return nn.Sequential(ConvBN(cin, cout, 3, 2), *[DSBlock(cout) for _ in range(n)])


class CNet(nn.Module):
    def __init__(self, num_classes=1, malignancy=False, width=(16, 32, 64, 128, 320),
                 depth=(1, 3, 4), fpn=96, head=96, mal_from="cls"):
        super().__init__()
        c1, c2, c3, c4, c5 = width
        self.num_classes = num_classes
        self.has_malignancy = malignancy
        if mal_from not in ("cls", "s4"):
            raise ValueError(f"mal_from {mal_from!r}: want cls or s4")
        self.mal_from = mal_from if malignancy else "cls"
        self.config = dict(num_classes=num_classes, malignancy=malignancy, width=list(width),
                           depth=list(depth), fpn=fpn, head=head, mal_from=self.mal_from)
        self.stem = nn.Sequential(ConvBN(1, c1, 3, 2), ConvBN(c1, c2, 3, 2))  # stride 4
        self.s3 = _stage(c2, c3, depth[0])  # stride 8
        self.s4 = _stage(c3, c4, depth[1])  # stride 16
        self.s5 = nn.Sequential(_stage(c4, c5, depth[2]), SPPF(c5, c5 // 2))  # stride 32
        self.lat5 = ConvBN(c5, fpn, 1)
        self.lat4 = ConvBN(c4, fpn, 1)
        self.lat3 = ConvBN(c3, fpn, 1)
        self.smooth4 = DSBlock(fpn, 5)
        self.smooth3 = DSBlock(fpn, 5)
        # Separate small towers for classification and regression.
        self.cls_tower = nn.Sequential(DSBlock(fpn), ConvBN(fpn, head, 1))
        self.reg_tower = nn.Sequential(DSBlock(fpn), ConvBN(fpn, head, 1))
        self.cls = nn.Conv2d(head, num_classes, 1)
        self.reg = nn.Conv2d(head, 4, 1)
        self.mal = None
        self.mal_s4 = None  # not "mal": a cls-tower checkpoint's head must not load here
        if malignancy and self.mal_from == "s4":
            self.mal_s4 = nn.Conv2d(c4, 1, 1)
        elif malignancy:
            self.mal = nn.Conv2d(head, 1, 1)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual block: blocks start as identity.
        for m in self.modules():
            if isinstance(m, DSBlock):
                nn.init.zeros_(m.pw[1].weight)
        for head in (self.cls, self.reg) + tuple(m for m in (self.mal, self.mal_s4) if m is not None):
            nn.init.normal_(head.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01
        nn.init.constant_(self.reg.bias, math.log(2.0))  # ~16 px distances at start

    @property
    def mal_pool(self):
        """How a detection's malignancy is read from the map (docs/model-format.md)."""
        return "box" if self.mal_from == "s4" else "cell"

    def features(self, x):
        """-> (p3, f4): the stride-8 FPN level and the stride-16 backbone output."""
        x = self.stem(x)
        f3 = self.s3(x)
        f4 = self.s4(f3)
        f5 = self.s5(f4)
        p5 = self.lat5(f5)
        p4 = self.smooth4(self.lat4(f4) + F.interpolate(p5, scale_factor=2.0, mode="nearest"))
        p3 = self.smooth3(self.lat3(f3) + F.interpolate(p4, scale_factor=2.0, mode="nearest"))
        return p3, f4

    def forward(self, x):
        """Raw outputs: (heat logits, box log-distances in stride units, mal logits or None)."""
        p3, f4 = self.features(x)
        c = self.cls_tower(p3)
        r = self.reg_tower(p3)
        heat = self.cls(c)
        box = self.reg(r)
        mal = None
        if self.mal_s4 is not None:
            mal = F.interpolate(self.mal_s4(f4), size=heat.shape[-2:], mode="nearest")
        elif self.mal is not None:
            mal = self.mal(c)
        return heat, box, mal


def decode_box_distances(box_raw):
    """Raw regression -> ltrb distances in input pixels (>= 0)."""
    return torch.exp(torch.clamp(box_raw, -BOX_LOG_MAX, BOX_LOG_MAX)) * STRIDE


class ExportWrapper(nn.Module):
    """The deployable graph: sigmoid heatmap, pixel ltrb boxes, sigmoid(mal/T)."""

    def __init__(self, net, temperature=1.0):
        super().__init__()
        self.net = net
        self.temperature = float(temperature)

    def forward(self, image):
        heat, box, mal = self.net(image)
        outs = [torch.sigmoid(heat), decode_box_distances(box)]
        if mal is not None:
            if self.temperature != 1.0:
                mal = mal * (1.0 / self.temperature)
            outs.append(torch.sigmoid(mal))
        return tuple(outs)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def fuse_bn(model):
    """Fold every ConvBN's BatchNorm into its conv (eval mode); returns model."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for m in model.modules():
        if isinstance(m, ConvBN) and isinstance(m[1], nn.BatchNorm2d):
            m[0] = fuse_conv_bn_eval(m[0].eval(), m[1].eval())
            m[1] = nn.Identity()
    return model


def macs(model, size=320):
    """Multiply-accumulates of one forward pass at size x size (conv + linear)."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total[0] += out.numel() * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        was = model.training
        model.eval()
        model(torch.zeros(1, 1, size, size))
        model.train(was)
    for h in hs:
        h.remove()
    return total[0]
