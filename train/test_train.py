"""Unit tests for the training package (CPU, a few seconds).

    /usr/bin/python3 -m unittest discover -s train -t .
"""

import json
import math
import os
import random
import tempfile
import unittest

import numpy as np
import onnx
import torch

from train import data as D
from train.evaluate import auc, decode, evaluate, fit_temperature
from train.export import export_onnx
from train.model import STRIDE, CNet, ExportWrapper, fuse_bn
from train.synth import write_synthetic_coco

torch.set_num_threads(1)


class Oracle(torch.nn.Module):
    """Returns the training targets as raw outputs: a perfect detector."""

    def __init__(self, ds):
        super().__init__()
        self.ds = ds
        self.i = 0

    def forward(self, x):
        heats, boxes, mals = [], [], []
        for _ in range(x.shape[0]):
            img, b, keep = self.ds.sample(self.i)
            r = self.ds.recs[self.i]
            heat, box, w, tm, wm = D.targets(b, r["cls"][keep], r["mal"][keep], self.ds.C, self.ds.S)
            self.i += 1
            heats.append(torch.logit(heat.clamp(1e-6, 1 - 1e-6)))
            boxes.append(torch.log(box / STRIDE))
            mals.append(torch.where(wm > 0, tm * 20 - 10, torch.zeros_like(tm))[None])
        return torch.stack(heats), torch.stack(boxes), torch.stack(mals)


class TestData(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sonolive-test-")
        cls.ann = write_synthetic_coco(cls.tmp, n=8)

    def test_letterbox(self):
        self.assertEqual(D.letterbox_params(640, 480, 320), (320, 240, 0, 40))
        self.assertEqual(D.letterbox_params(480, 640, 320), (240, 320, 40, 0))
        self.assertEqual(D.letterbox_params(563, 474, 320), (320, 269, 0, 25))

    def test_area_resize(self):
        x = torch.rand(474, 564)
        y = D._resize_area(x[:474, :564], 282, 237)
        self.assertTrue(torch.allclose(y, x.reshape(237, 2, 282, 2).mean((1, 3)), atol=1e-6))
        c = D._resize_area(torch.full((474, 564), 0.3), 320, 269)
        self.assertTrue(torch.allclose(c, torch.full_like(c, 0.3), atol=1e-6))
        self.assertAlmostEqual(float(D._resize_area(x, 320, 269).mean()), float(x.mean()), places=4)

    def test_malignancy_label_smoothing(self):
        # A head already certain of the right answer loses nothing without
        # smoothing and is pulled back with it.
        from train.loss import cnet_loss
        G = 4
        heat = torch.full((1, 1, G, G), -10.0)
        box = torch.zeros((1, 4, G, G))
        mal = torch.full((1, 1, G, G), 12.0)  # confident "malignant"
        wreg = torch.zeros((1, G, G))
        tmal = torch.ones((1, G, G))
        wmal = torch.zeros((1, G, G))
        wmal[0, 1, 1] = 1
        batch = (None, torch.zeros((1, 1, G, G)), torch.zeros((1, 4, G, G)), wreg, tmal, wmal)
        _, plain = cnet_loss((heat, box, mal), batch)
        _, smooth = cnet_loss((heat, box, mal), batch, mal_smooth=0.1)
        self.assertLess(float(plain["mal"]), 1e-4)
        self.assertGreater(float(smooth["mal"]), 0.5)

    def test_targets_roundtrip(self):
        boxes = np.array([[40.3, 60.2, 120.7, 101.1], [200, 200, 212, 230]], np.float32)
        heat, box, w, tm, wm = D.targets(boxes, np.array([0, 0]), np.array([1.0, -1.0], np.float32), 1, 320)
        G = 320 // STRIDE
        self.assertEqual(heat.shape, (1, G, G))
        self.assertEqual(float(heat.max()), 1.0)
        self.assertAlmostEqual(float(w.sum()), 2.0, places=4)  # 1 per box
        for i, j in zip(*np.nonzero(w.numpy())):
            cx, cy = (j + 0.5) * STRIDE, (i + 0.5) * STRIDE
            l, t, r, b = box[:, i, j].tolist()
            dec = [cx - l, cy - t, cx + r, cy + b]
            ok = any(np.allclose(dec, bb, atol=1e-3) for bb in boxes)
            self.assertTrue(ok, (i, j, dec))
        self.assertGreater(float(wm.sum()), 0.99)  # only the first box has a label
        self.assertLess(float(wm.sum()), 1.01)

    def test_oracle_ap(self):
        cmap = D.ClassMap(["lesion"], malignancy=(["benign"], ["malignant"]))
        recs, _ = D.load_coco(self.ann, cmap)
        ds = D.Detections(recs, 1, 320, augment=False)
        m, (z, y) = evaluate(Oracle(ds), ds, batch_size=1)
        self.assertEqual(m["ap50"], 1.0)
        self.assertEqual(m["ap50_95"], 1.0)
        self.assertEqual(m["best_f1"], 1.0)
        self.assertEqual(m["recall_at_operating"], 1.0)
        self.assertEqual(m.get("fp_per_negative_image_at_operating", 0.0), 0.0)
        if 0 < sum(y) < len(y):
            self.assertEqual(m["malignancy_auc"], 1.0)

    def test_augment_keeps_boxes_valid(self):
        recs, _ = D.load_coco(self.ann, D.ClassMap(["lesion"]))
        ds = D.Detections(recs, 1, 320, augment=True, seed=3)
        for i in range(len(recs)):
            img, b, keep = ds.sample(i, random.Random(i))
            self.assertEqual(tuple(img.shape), (320, 320))
            self.assertTrue(0 <= float(img.min()) and float(img.max()) <= 1)
            self.assertTrue((b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all())
            self.assertTrue((b >= 0).all() and (b <= 320).all())
            sample = ds[i]
            self.assertEqual(len(sample), 6)

    def test_tight_crops_are_zoomed_out(self):
        # A lesion filling most of its image (BUS-BRA's framing) is shown
        # smaller on half the samples, on black or tissue-like padding.
        rec = dict(img=np.full((100, 80), 120, np.uint8), boxes=np.array([[10, 15, 70, 85]], np.float32),
                   cls=np.zeros(1, np.int64), mal=np.zeros(1, np.float32), key=1, label="benign", source="t", file="a")
        ds = D.Detections([rec], 1, 320, augment=True, seed=3, appearance=False)
        sizes = [float((b[0, 3] - b[0, 1]) / 320) for b in (ds.sample(0, random.Random(k))[1] for k in range(200))]
        deploy = 70 / 100  # the lesion's height share at the deployment letterbox
        # The usual scale jitter never goes under 0.7 x e^-0.15 = 0.60 of it;
        # about 60% of the zoomed-out half does.
        small = sum(1 for v in sizes if v < 0.6 * deploy)
        self.assertGreater(small, 35)
        self.assertLess(small, 90)
        t = D._tissue(64, torch.full((10, 10), 0.4), random.Random(1))
        self.assertTrue(0.1 < float(t.mean()) < 0.6 and float(t.std()) > 0.02)

    def test_birads_mapping_and_agreement(self):
        from train import calib
        # ACR likelihood-of-malignancy ranges.
        self.assertEqual([calib.category(p) for p in (0.0, 0.02, 0.05, 0.3, 0.9, 0.97)], ["3", "3", "4A", "4B", "4C", "5"])
        self.assertEqual([calib.level(c) for c in ("2", "3", "4A", "4C", 4, 5)], [0, 0, 1, 1, 1, 2])
        self.assertAlmostEqual(calib.weighted_kappa([0, 1, 2, 0], [0, 1, 2, 0]), 1.0)
        # Linear weights: one level off on one of four costs less than two.
        k1 = calib.weighted_kappa([0, 1, 2, 0], [1, 1, 2, 0])
        k2 = calib.weighted_kappa([0, 1, 2, 0], [2, 1, 2, 0])
        self.assertTrue(0 < k2 < k1 < 1)
        # A calibrated forecaster: 0.2 said, 1 in 5 malignant.
        self.assertAlmostEqual(calib.ece([0.2] * 5, [1, 0, 0, 0, 0]), 0.0)
        self.assertAlmostEqual(calib.ece([0.9] * 2, [0, 0]), 0.9)

    def test_geometric_only_augmentation_adds_no_new_intensities(self):
        # Resampling only averages source pixels, so no value can exceed the
        # image's own maximum; gain, speckle and burned-in marks can.
        recs, _ = D.load_coco(self.ann, D.ClassMap(["lesion"]))
        recs = [dict(r, img=(r["img"] * 0.75).astype(np.uint8)) for r in recs]  # headroom under 255
        exceeded = {True: 0, False: 0}
        for appearance in (True, False):
            ds = D.Detections(recs, 1, 320, augment=True, seed=3, appearance=appearance)
            for i in range(len(recs)):
                top = float(recs[i]["img"].max()) / 255
                for k in range(3):
                    img, _, _ = ds.sample(i, random.Random(100 * i + k))
                    exceeded[appearance] += float(img.max()) > top + 1e-4
        self.assertEqual(exceeded[False], 0)
        self.assertGreater(exceeded[True], 0)

    def test_grouped_split_keeps_duplicates(self):
        recs, _ = D.load_coco(self.ann, D.ClassMap(["lesion"]))
        dup = dict(recs[0])
        dup["key"] = 999
        recs = recs + [dup]
        tr, va, _ = D.grouped_split(recs, 0.3)
        self.assertEqual(sorted(tr + va), list(range(len(recs))))
        self.assertEqual((0 in va), (len(recs) - 1 in va))

    def test_split_file_roundtrip(self):
        recs, _ = D.load_coco(self.ann, D.ClassMap(["lesion"]))
        tr, va, info = D.grouped_split(recs, 0.3)
        js = json.loads(json.dumps(D.split_to_json(recs, tr, va, info, "synth", 0.3)))
        self.assertEqual((js["train_count"], js["val_count"]), (len(tr), len(va)))
        self.assertEqual(js["val"], sorted(recs[i]["file"] for i in va))
        self.assertEqual(D.split_from_json(recs, js), (tr, va))
        with self.assertRaises(ValueError):
            D.split_from_json(recs, dict(js, val=js["val"] + ["images/nope.png"]))

    def test_train_only_share(self):
        from train.train import InfiniteSampler
        s = InfiniteSampler(100, 1, n_extra=60, share=0.2)  # 40 main + 60 extra
        it = iter(s)
        ids = [next(it) % 100 for _ in range(50 * 4)]
        self.assertEqual(sorted(i for i in ids[:50] if i < 40), list(range(40)))  # each main once per epoch
        self.assertAlmostEqual(sum(i >= 40 for i in ids) / len(ids), 0.2, places=2)
        self.assertEqual(len(set(i for i in ids[:100] if i >= 40)), 20)  # extras rotate
        plain = iter(InfiniteSampler(10, 1))
        self.assertEqual(sorted(next(plain) for _ in range(10)), list(range(10)))

    def test_balanced_sites(self):
        from train.train import InfiniteSampler
        # sites of 10 and 30 images and 20 training-only ones at 20%
        s = InfiniteSampler(60, 1, n_extra=20, share=0.2, groups=[10, 30], balance=True)
        self.assertEqual(s.quota, [30, 30])
        self.assertEqual(s.m, 15)
        it = iter(s)
        epoch = [next(it) for _ in range(75)]
        local = [g % 60 for g in epoch]
        self.assertEqual(sum(i < 10 for i in local), 30)  # the small site as often as the large
        self.assertEqual(sorted(i for i in local if 10 <= i < 40), list(range(10, 40)))
        self.assertEqual(sum(i >= 40 for i in local), 15)
        self.assertEqual(sorted(set(i for i in local if i < 10)), list(range(10)))
        # a repeated image gets another augmentation seed (index // n) each time
        self.assertEqual(len(set(epoch)), 75)
        with self.assertRaises(ValueError):
            InfiniteSampler(60, 1, n_extra=20, groups=[10, 20])

    def test_fade_lesions(self):
        canvas = torch.full((64, 64), 0.5)
        canvas[24:40, 20:44] = 0.1  # a dark lesion
        box = np.array([[20, 24, 44, 40]], np.float32)
        out = D._fade_lesions(canvas, box, random.Random(3))
        before = 0.5 - 0.1
        after = float(out[0:8, :].mean() - out[30:34, 28:36].mean())
        self.assertGreater(after, 0.2 * before)
        self.assertLess(after, 0.7 * before)
        self.assertTrue(torch.equal(out[0:8], canvas[0:8]))  # the surroundings untouched
        blank = D._fade_lesions(canvas, np.zeros((0, 4), np.float32), random.Random(3))
        self.assertTrue(torch.equal(blank, canvas))

    def test_organ_guard_rule(self):
        from train.organ import guard
        breast, thyroid = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]
        # the same cases as organ/vote_test.go
        self.assertEqual(guard(np.array([thyroid] * 5), "breast"), [(5, "thyroid")])
        self.assertEqual(guard(np.array([thyroid] * 4), "breast"), [])
        self.assertEqual(guard(np.array([breast] * 6 + [thyroid] * 4), "breast"), [])
        self.assertEqual(guard(np.array([breast] * 6 + [thyroid] * 5), "breast"), [(11, "thyroid")])
        self.assertEqual(guard(np.array([[0.02, 0.03, 0.95]] * 9), "thyroid"), [])
        # warned, cleared at the third breast second, warned again
        self.assertEqual(guard(np.array([thyroid] * 8 + [breast] * 3 + [thyroid] * 5), "breast"),
                         [(5, "thyroid"), (16, "thyroid")])

    def test_reliability(self):
        from train.evaluate import reliability
        r = reliability([-10.0, 10.0, -10.0, 10.0], [0, 1, 0, 1])
        self.assertLess(r["malignancy_ece"], 1e-3)
        self.assertEqual(sum(row[2] for row in r["malignancy_reliability"]), 4)

    def test_decode_and_metrics(self):
        heat = torch.zeros(2, 8, 8)
        heat[0, 2, 3], heat[0, 2, 4], heat[1, 5, 5], heat[0, 7, 0] = 0.9, 0.5, 0.6, 0.2
        box = torch.zeros(4, 8, 8)
        box[:, 2, 3] = torch.tensor([10.0, 6, 14, 8])
        box[:, 2, 4] = 4
        box[:, 5, 5] = 4
        xyxy, s, c, cell = decode(heat, box, threshold=0.3)
        self.assertEqual(s.tolist(), [0.8999999761581421, 0.6000000238418579])  # (2,4) is not a 3x3 max
        self.assertEqual(xyxy[0].tolist(), [18.0, 14.0, 42.0, 28.0])
        self.assertAlmostEqual(auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75)
        T, _ = fit_temperature([4.0, -4.0, 3.0, -3.0, 2.0, 2.0], [1, 0, 1, 0, 0, 1])
        self.assertGreater(T, 1.0)


class TestExport(unittest.TestCase):
    def test_export_contract(self):
        for mal_from in ("cls", "s4"):
            with self.subTest(mal_from=mal_from):
                self._export(mal_from)

    def _export(self, mal_from):
        net = CNet(2, True, mal_from=mal_from)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.onnx")
            m, (x, ref) = export_onnx(net, path, ["benign", "malignant"], "breast", "1.2.3", 320,
                                 {"sources": []}, {"ap50": 0.5}, temperature=2.0, calibrated=True)
            m = onnx.load(path)
            onnx.checker.check_model(m)
            meta = {p.key: p.value for p in m.metadata_props}
            self.assertEqual(meta["format"], "sonolive-cnet/1")
            self.assertEqual(json.loads(meta["names"]), ["benign", "malignant"])
            self.assertEqual(meta["imgsz"], "[320, 320]")
            self.assertEqual((meta["channels"], meta["stride"], meta["organ"], meta["version"]),
                             ("1", "8", "breast", "1.2.3"))
            self.assertEqual(meta["malignancy"], "calibrated")
            self.assertEqual(json.loads(meta["metrics"]), {"ap50": 0.5})
            self.assertEqual(m.opset_import[0].version, 17)
            self.assertNotIn("BatchNormalization", {n.op_type for n in m.graph.node})
            self.assertEqual([o.name for o in m.graph.output], ["heatmap", "boxes", "malignancy"])
            # the temperature is folded in: sigmoid(z/2) of the unfused net
        net.eval()
        with torch.no_grad():
            z = net(x)[2]
            fused = ExportWrapper(fuse_bn(CNet(2, True, mal_from=mal_from).eval()))  # shape check only
            self.assertEqual(tuple(fused(x)[0].shape), (1, 2, 40, 40))
            self.assertEqual(tuple(fused(x)[2].shape), (1, 1, 40, 40))
        self.assertTrue(torch.allclose(ref[2], torch.sigmoid(z / 2.0), atol=1e-5))
        self.assertTrue((ref[1] >= 0).all())

    def test_own_malignancy_tower_starts_fresh_from_a_shared_tower_checkpoint(self):
        old = CNet(1, True).state_dict()
        new = CNet(1, True, mal_from="s4")
        shared = {k for k in old if k in new.state_dict() and new.state_dict()[k].shape == old[k].shape}
        self.assertNotIn("mal.weight", shared)  # the shared-tower head means nothing on the new tower
        self.assertIn("cls.weight", shared)
        self.assertEqual(new.config["mal_from"], "s4")
        self.assertEqual(CNet(1, False, mal_from="s4").config["mal_from"], "cls")  # no head: nothing to place


class TestMalhead(unittest.TestCase):
    """train.malhead on a synthetic set: the refitted read-out must be what the
    Go decoder computes (a box mean of the logit map), and the detection
    outputs must stay the base model's."""

    def test_refit_keeps_detection_and_matches_the_decoders_box_mean(self):
        from train import malhead
        from train.evaluate import read_malignancy
        from train.export import load_net

        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as d:
            ann = write_synthetic_coco(d, n=12)
            with open(ann) as f:
                files = [im["file_name"] for im in json.load(f)["images"]]
            split = os.path.join(d, "split.json")
            with open(split, "w") as f:
                json.dump({"val": files[-4:]}, f)
            base = CNet(1, True)
            base_pt = os.path.join(d, "base.pt")
            torch.save({"config": base.config, "state_dict": base.state_dict(), "names": ["lesion"],
                        "organ": "breast", "version": "0.1.0", "imgsz": 320, "train_data": {}, "metrics": {}},
                       base_pt)
            out, ck = os.path.join(d, "m.onnx"), os.path.join(d, "m.pt")
            malhead.main(["--base", base_pt, "--coco", ann, "--split-file", split, "--views", "1",
                          "--threads", "1", "--version", "0.2.0", "--out", out, "--ckpt", ck])
            meta = {p.key: p.value for p in onnx.load(out).metadata_props}
            self.assertEqual(meta["malignancy_pool"], "box")
            self.assertEqual(meta["version"], "0.2.0")
            self.assertEqual(json.loads(meta["train_data"])["malignancy_readout"]["views"], 1)
            net, info = load_net(ck)
        self.assertEqual(net.mal_pool, "box")
        base.eval()
        x = torch.rand(1, 1, 320, 320)
        with torch.no_grad():
            h0, b0, _ = base(x)
            h1, b1, z = net(x)
            f4 = net.s4(net.s3(net.stem(x)))
        self.assertTrue(torch.equal(h0, h1) and torch.equal(b0, b1))
        w, b = net.mal_s4.weight.view(-1), net.mal_s4.bias
        for box in ([40.0, 60.0, 200.0, 150.0], [100.0, 100.0, 104.0, 105.0], [0.0, 0.0, 320.0, 320.0]):
            want = float(malhead.box_mean_features(f4[0], [box], 40)[0] @ w + b)
            cell = (int((box[1] + box[3]) / 2 / STRIDE), int((box[0] + box[2]) / 2 / STRIDE))
            got = read_malignancy(z[0, 0], torch.tensor(box), cell, "box")
            self.assertAlmostEqual(got, want, places=4)


if __name__ == "__main__":
    unittest.main()


class TestBoxSeg(unittest.TestCase):
    """The lesion segmenter's crops, a training step and its export."""

    def test_crop_step_export(self):
        import random
        import tempfile
        from train import boxseg
        img = np.full((120, 160), 120, np.uint8)
        mask = np.zeros((120, 160), bool)
        yy, xx = np.mgrid[0:120, 0:160]
        mask[((xx - 80) / 20.0) ** 2 + ((yy - 60) / 12.0) ** 2 <= 1] = True
        img[mask] = 40
        rec = dict(img=img, mask=mask, boxes=[[60, 48, 100, 72]], file="x", set="t")
        x, y = boxseg.sample(rec, random.Random(1), augment=False)
        self.assertEqual(x.shape, (boxseg.S, boxseg.S))
        # The 40x24 lesion in a crop of side 60: (40*24*pi/4) / 60^2 of it.
        self.assertAlmostEqual(y.mean(), 40 * 24 * np.pi / 4 / 3600, delta=0.02)
        net = boxseg.UNet()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        loss = boxseg.loss_fn(net(torch.from_numpy(x)[None, None]), torch.from_numpy(y)[None, None])
        loss.backward()
        opt.step()
        self.assertTrue(torch.isfinite(loss))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "seg.onnx")
            boxseg.export(net, path, {"steps": 1}, "0.0.0", {})
            m = onnx.load(path)
            meta = {p.key: p.value for p in m.metadata_props}
            self.assertEqual(meta["format"], boxseg.FORMAT)
            self.assertEqual(json.loads(meta["imgsz"]), [boxseg.S, boxseg.S])
