"""A tiny synthetic COCO set (dark elliptical 'lesions' in speckle) so that
`python3 -m train.train --smoke` runs with no data on disk (CI). It is not the
project's phantom (the Go command writes that); it only exercises the code."""

import json
import os

import numpy as np
from PIL import Image


def write_synthetic_coco(root, n=12, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, anns = [], []
    for k in range(n):
        w, h = int(rng.integers(220, 360)), int(rng.integers(180, 300))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 0.35 + 0.25 * (1 - yy / h)
        img = base * rng.gamma(4.0, 0.25, size=(h, w)).astype(np.float32)
        im = {"id": k + 1, "file_name": f"images/synth_{k:03d}.png", "width": w, "height": h}
        if k % 4 != 3:  # every 4th image is a negative
            for _ in range(int(rng.integers(1, 3))):
                a, b = float(rng.uniform(10, w / 5)), float(rng.uniform(8, h / 5))
                cx, cy = float(rng.uniform(a + 2, w - a - 2)), float(rng.uniform(b + 2, h - b - 2))
                inside = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
                img[inside] *= 0.25
                anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": 1 + int(rng.integers(0, 2)),
                             "bbox": [cx - a, cy - b, 2 * a, 2 * b], "area": 4 * a * b, "iscrowd": 0})
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(os.path.join(root, im["file_name"]))
        images.append(im)
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]}
    path = os.path.join(root, "annotations.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path
