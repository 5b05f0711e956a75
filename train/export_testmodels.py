"""Write tiny ONNX models with constant, known outputs to infer/testdata/.

The Go tests of infer/ load these to check metadata parsing, both output
layouts (sonolive-cnet/1 and Ultralytics) and the decoder, without a trained
model. Every output is `constant + 0 * ReduceSum(input)`, so the input stays in
the graph (ONNX Runtime would otherwise drop it) and the values are exact.

    /usr/bin/python3 train/export_testmodels.py [--out infer/testdata]

Needs only numpy and onnx. The output is deterministic (byte-identical runs).
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _const_outputs_graph(name, in_name, in_shape, outputs):
    """Graph with one float input and outputs = const + 0*ReduceSum(input).

    outputs: list of (name, numpy float32 array).
    """
    nodes = [
        # ReduceSum with no axes input and keepdims=0 reduces everything to a
        # scalar, which broadcasts against any output shape.
        helper.make_node("ReduceSum", [in_name], ["_sum"], keepdims=0),
        helper.make_node("Mul", ["_sum", "_zero"], ["_dep"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "_zero")]
    outs = []
    for oname, arr in outputs:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        cname = "_const_" + oname
        inits.append(numpy_helper.from_array(arr, cname))
        nodes.append(helper.make_node("Add", [cname, "_dep"], [oname]))
        outs.append(helper.make_tensor_value_info(oname, TensorProto.FLOAT, list(arr.shape)))
    inp = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))
    return helper.make_graph(nodes, name, [inp], outs, initializer=inits)


def _model(graph, metadata):
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="sonolive-export-testmodels",
        producer_version="1",
    )
    m.ir_version = 8  # ONNX 1.10+ / opset 17 compatible, loadable by any ORT >= 1.10
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    # Check a copy: some onnx versions add inferred value_info in place, which
    # would change the bytes written.
    onnx.checker.check_model(onnx.load_from_string(m.SerializeToString()), full_check=True)
    return m


def own_const():
    G = 8
    heat = np.zeros((1, 2, G, G), np.float32)
    heat[0, 0, 2, 3] = 0.9
    heat[0, 0, 2, 4] = 0.5
    heat[0, 1, 5, 5] = 0.6
    heat[0, 0, 7, 0] = 0.2
    boxes = np.zeros((1, 4, G, G), np.float32)
    boxes[0, :, 2, 3] = [10, 6, 14, 8]
    boxes[0, :, 2, 4] = [4, 4, 4, 4]
    boxes[0, :, 5, 5] = [4, 4, 4, 4]
    mal = np.zeros((1, 1, G, G), np.float32)
    mal[0, 0, 2, 3] = 0.8
    mal[0, 0, 5, 5] = 0.3
    g = _const_outputs_graph(
        "own_const", "image", [1, 1, 64, 64],
        [("heatmap", heat), ("boxes", boxes), ("malignancy", mal)],
    )
    return _model(g, {
        "format": "sonolive-cnet/1",
        "names": '["benign", "malignant"]',
        "imgsz": "[64, 64]",
        "channels": "1",
        "stride": "8",
        "organ": "test",
        "version": "0.0.1",
        "malignancy": "calibrated",
    })


def yolo_const():
    N = 8
    out = np.zeros((1, 6, N), np.float32)
    cands = [
        (32, 32, 20, 10, 0.9, 0.1),
        (33, 32, 20, 10, 0.8, 0.05),
        (10, 10, 8, 8, 0.1, 0.7),
        (50, 50, 4, 4, 0.2, 0.1),
    ]
    for k, c in enumerate(cands):
        out[0, :, k] = c
    g = _const_outputs_graph("yolo_const", "images", [1, 3, 64, 64], [("output0", out)])
    # Keys and value spellings as Ultralytics' exporter writes them (str(v)).
    return _model(g, {
        "description": "Ultralytics YOLO11n model (sonolive test constant)",
        "author": "Ultralytics",
        "version": "8.3.0",
        "task": "detect",
        "batch": "1",
        "stride": "32",
        "imgsz": "[64, 64]",
        "names": "{0: 'benign', 1: 'malignant'}",
    })


def own_seg_const():
    """own_const's layout plus a stride-4 lesion mask: one lesion, a
    rectangle of mask cells, inside detection (2,3)'s box."""
    m = own_const()
    mask = np.zeros((1, 1, 16, 16), np.float32)
    mask[0, 0, 3:7, 2:6] = 1.0   # input pixels x 8..24, y 12..28
    g = m.graph
    # Rebuild with the extra output (the constant graph is small).
    outs = [(o.name, numpy_helper.to_array([i for i in g.initializer if i.name == "_const_" + o.name][0])) for o in g.output]
    g2 = _const_outputs_graph("own_seg_const", "image", [1, 1, 64, 64], outs + [("mask", mask)])
    return _model(g2, {p.key: p.value for p in m.metadata_props})


def yolo_seg_const():
    """An Ultralytics segmentation export, 64x64, two classes, nm = 2
    prototypes at stride 4 (16x16). Candidate 0 (class 0) takes prototype 0,
    a rectangle inside its box; candidate 1 (class 1) prototype 1, a region
    its box cuts; candidate 2 is below any threshold."""
    N, nm = 4, 2
    out = np.zeros((1, 4 + 2 + nm, N), np.float32)
    cands = [
        # cx, cy, w, h, class 0, class 1, coef 0, coef 1
        (32, 28, 40, 32, 0.9, 0.1, 1.0, 0.0),
        (12, 50, 16, 12, 0.05, 0.8, 0.0, 1.0),
        (40, 40, 10, 10, 0.01, 0.02, 1.0, 1.0),
    ]
    for k, c in enumerate(cands):
        out[0, :, k] = c
    protos = np.full((1, nm, 16, 16), -10.0, np.float32)
    protos[0, 0, 4:10, 5:12] = 10.0   # input x 20..48, y 16..40
    protos[0, 1, 10:16, 0:4] = 10.0   # input x 0..16, y 40..64
    g = _const_outputs_graph("yolo_seg_const", "images", [1, 3, 64, 64], [("output0", out), ("output1", protos)])
    return _model(g, {
        "description": "Ultralytics YOLO11n-seg model (sonolive test constant)",
        "author": "Ultralytics",
        "version": "8.3.0",
        "task": "segment",
        "batch": "1",
        "stride": "32",
        "imgsz": "[64, 64]",
        "names": "{0: 'benign', 1: 'malignant'}",
    })


def boxseg_const():
    """A lesion segmenter (sonolive-boxseg/1) whose map is a disc of radius
    24 at the centre of its 96x96 crop, whatever the crop holds."""
    S = 96
    yy, xx = np.mgrid[0:S, 0:S]
    disc = (((xx + 0.5 - S / 2) ** 2 + (yy + 0.5 - S / 2) ** 2) <= 24 ** 2).astype(np.float32)
    g = _const_outputs_graph("boxseg_const", "image", [1, 1, S, S], [("mask", disc[None, None])])
    return _model(g, {"format": "sonolive-boxseg/1", "imgsz": "[96, 96]", "channels": "1", "margin": "0.25",
                      "version": "0.0.1", "names": '["lesion"]'})


def bad_rank():
    out = np.zeros((1, 4), np.float32)
    g = _const_outputs_graph("bad_rank", "input", [1, 10], [("output", out)])
    return _model(g, {})


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "infer", "testdata"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name, fn in [("own_const", own_const), ("own_seg_const", own_seg_const), ("yolo_const", yolo_const),
                     ("yolo_seg_const", yolo_seg_const), ("boxseg_const", boxseg_const), ("bad_rank", bad_rank)]:
        m = fn()
        path = os.path.join(args.out, name + ".onnx")
        onnx.save(m, path)
        onnx.checker.check_model(path)
        print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
