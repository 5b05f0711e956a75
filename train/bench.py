"""Parameter count, MACs and PyTorch CPU latency of CNet (BN fused, export graph).

    /usr/bin/python3 -m train.bench [--threads 1] [--imgsz 320] [--ckpt x.pt]

ONNX Runtime latency is measured on the Go side (`sonolive` benchmarks);
ORT is usually a little faster than this PyTorch number.
"""

import argparse
import time

import torch

from .model import CNet, ExportWrapper, count_params, fuse_bn, macs
from .train import set_threads


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--classes", type=int, default=1)
    ap.add_argument("--no-malignancy", action="store_true")
    ap.add_argument("--ckpt")
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.ckpt:
        ck = torch.load(args.ckpt, map_location="cpu")
        net = CNet(**ck["config"])
        net.load_state_dict(ck["state_dict"])
    else:
        net = CNet(args.classes, not args.no_malignancy)
    n, mc = count_params(net), macs(net, args.imgsz)
    w = ExportWrapper(fuse_bn(net.eval())).eval()
    x = torch.rand(1, 1, args.imgsz, args.imgsz)
    ts = []
    with torch.no_grad():
        for _ in range(5):
            w(x)
        for _ in range(args.runs):
            t = time.perf_counter()
            w(x)
            ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"CNet {net.config}")
    print(f"parameters {n} ({n / 1e6:.2f} M), {mc / 1e6:.0f} M MACs at {args.imgsz}x{args.imgsz}")
    print(f"torch {torch.__version__} CPU, {args.threads} thread(s): median {ts[len(ts) // 2] * 1e3:.2f} ms, "
          f"p10 {ts[len(ts) // 10] * 1e3:.2f} ms, p90 {ts[len(ts) * 9 // 10] * 1e3:.2f} ms per frame")


if __name__ == "__main__":
    main()
