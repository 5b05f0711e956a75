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
    mal = net.mal if net.mal is not None else getattr(net, "mal_p4", None)
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
    if net.has_malignancy and calibrated:
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


def main(argv=None):
    ap = argparse.ArgumentParser(description="Re-export a CNet checkpoint to ONNX.")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", help="override the checkpoint's version")
    ap.add_argument("--temperature", type=float, help="override the malignancy temperature")
    args = ap.parse_args(argv)
    ck = torch.load(args.ckpt, map_location="cpu")
    net = CNet(**ck["config"])
    net.load_state_dict(ck["state_dict"])
    T = args.temperature if args.temperature is not None else ck.get("temperature", 1.0)
    export_onnx(net, args.out, ck["names"], ck["organ"], args.version or ck["version"], ck["imgsz"],
                ck.get("train_data"), ck.get("metrics"), T,
                calibrated=ck.get("calibrated", False) and args.temperature is None)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
