"""ONNX export of a CNet in the sonolive-cnet/1 format (docs/model-format.md).

    /usr/bin/python3 -m train.export --ckpt models/x.pt --out models/x.onnx

(train.train exports by itself; this re-exports a saved checkpoint.)
"""

import argparse
import copy
import json
import math
import os
import sys
import warnings

import onnx
import torch

from .model import CNet, ExportWrapper, fuse_bn

FORMAT = "sonolive-cnet/1"
OPSET = 17


def export_onnx(net, path, names, organ, version="0.1.0", imgsz=320, train_data=None,
                metrics=None, temperature=1.0, calibrated=False, extra=None):
    """Fuse BN, fold the malignancy temperature into the last conv, export
    (opset 17, batch 1, input `image`), add metadata, check.
    Returns (onnx model, (sample input, torch outputs of the export graph))."""
    net = fuse_bn(copy.deepcopy(net).float().cpu().eval())
    mal = net.mal if net.mal is not None else net.mal_s4
    if mal is not None and temperature != 1.0:
        with torch.no_grad():  # sigmoid(z / T): fold 1/T into the last 1x1 conv (nearest upsampling commutes)
            mal.weight.div_(temperature)
            mal.bias.div_(temperature)
    wrapper = ExportWrapper(net).eval()
    outs = ["heatmap", "boxes"] + (["malignancy"] if net.has_malignancy else [])
    x = torch.rand(1, 1, imgsz, imgsz)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with torch.no_grad(), warnings.catch_warnings():
        # torch 1.13 warns about prim::Constant shape inference on Resize scales; harmless.
        warnings.simplefilter("ignore", UserWarning)
        ref = wrapper(x)
        torch.onnx.export(wrapper, x, tmp, opset_version=OPSET, input_names=["image"],
                          output_names=outs, do_constant_folding=True)
    m = onnx.load(tmp)
    os.remove(tmp)
    m.producer_name = "sonolive-train"
    del m.metadata_props[:]
    meta = {
        "format": FORMAT,
        "names": json.dumps(list(names)),
        "imgsz": json.dumps([imgsz, imgsz]),
        "channels": "1",
        "stride": "8",
        "organ": organ,
        "version": version,
    }
    if net.has_malignancy:
        meta["malignancy_pool"] = net.mal_pool
        if calibrated:
            meta["malignancy"] = "calibrated"
    if train_data is not None:
        meta["train_data"] = json.dumps(_json_safe(train_data), sort_keys=True, allow_nan=False)
    if metrics is not None:
        meta["metrics"] = json.dumps(_json_safe(metrics), sort_keys=True, allow_nan=False)
    meta.update(extra or {})
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.checker.check_model(onnx.load_from_string(m.SerializeToString()), full_check=True)
    check_contract(m, len(names), imgsz, net.has_malignancy)
    onnx.save(m, path)
    return m, (x, ref)


def _json_safe(v):
    """Strict JSON for Go: NaN/inf -> null, numpy/torch scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def check_contract(m, num_classes, imgsz, malignancy):
    """Assert the sonolive-cnet/1 input/output names and static shapes."""
    def shape(v):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    G = imgsz // 8
    ins = [(i.name, shape(i)) for i in m.graph.input]
    assert ins == [("image", [1, 1, imgsz, imgsz])], ins
    want = [("heatmap", [1, num_classes, G, G]), ("boxes", [1, 4, G, G])]
    if malignancy:
        want.append(("malignancy", [1, 1, G, G]))
    got = [(o.name, shape(o)) for o in m.graph.output]
    assert got == want, (got, want)
    for o in m.graph.output:
        assert o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def load_net(path):
    """A trained CNet from a checkpoint (.pt) or from a sonolive-cnet/1 ONNX
    file this module wrote, with what it says about itself. The ONNX weights
    have BN folded in (and the temperature folded into the malignancy conv), so
    that net comes back fused: fine for inference and frozen features, not for
    further training. -> (net in eval mode, info dict)."""
    if path.endswith(".onnx"):
        from onnx import numpy_helper

        m = onnx.load(path)
        meta = {p.key: p.value for p in m.metadata_props}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, want {FORMAT}")
        td = json.loads(meta.get("train_data", "{}"))
        arch = {k: v for k, v in td.get("arch", {}).items() if k != "name"}
        if not arch:
            raise ValueError(f"{path}: no train_data.arch in the metadata: cannot rebuild the network")
        net = fuse_bn(CNet(**arch).eval())
        sd = {i.name.removeprefix("net."): torch.from_numpy(numpy_helper.to_array(i).copy())
              for i in m.graph.initializer}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not match the architecture: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        info = dict(names=json.loads(meta["names"]), organ=meta.get("organ", ""), version=meta.get("version", ""),
                    imgsz=json.loads(meta.get("imgsz", "[320, 320]"))[0], train_data=td,
                    metrics=json.loads(meta.get("metrics", "{}")), fused=True)
        return net, info
    ck = torch.load(path, map_location="cpu")
    net = CNet(**ck["config"]).eval()
    if ck.get("fused"):  # refitted from an ONNX base (train.malhead)
        net = fuse_bn(net)
    net.load_state_dict(ck["state_dict"])
    info = {k: ck.get(k) for k in ("names", "organ", "version", "imgsz", "train_data", "metrics",
                                   "temperature", "calibrated")}
    info["fused"] = bool(ck.get("fused"))
    return net, info


def main(argv=None):
    ap = argparse.ArgumentParser(description="Re-export a CNet checkpoint to ONNX.")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", help="override the checkpoint's version")
    ap.add_argument("--temperature", type=float, help="override the malignancy temperature")
    args = ap.parse_args(argv)
    net, ck = load_net(args.ckpt)
    T = args.temperature if args.temperature is not None else (ck.get("temperature") or 1.0)
    export_onnx(net, args.out, ck["names"], ck["organ"], args.version or ck["version"], ck["imgsz"],
                ck.get("train_data"), ck.get("metrics"), T,
                calibrated=bool(ck.get("calibrated")) and args.temperature is None)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
