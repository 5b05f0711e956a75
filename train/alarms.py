"""Boxes per minute while scanning, against lesion recall (issue 17, item 5).

Runs the live pipeline (`sonolive run`, every frame through the detector,
the tracker and its persistence rule) on the shared breast cine clips and on
phantom sweeps, for several values of the tracker's `min_hits` (inferences
that must see a lesion before its box is shown), and reports per setting:

- cine clips (real breast scans of another hospital, no boxes): tracks shown
  per minute and the share of frames with a box — every new box is
  something the sonographer must look at; the clips show lesions, so not all
  of them are false;
- phantom (ground truth): recall and precision of the shown boxes per frame,
  and shown tracks per minute split into true ones (matched a lesion on some
  frame) and false alarms.

    /usr/bin/python3 -m train.alarms --sonolive bin/sonolive --preset breast \\
        --min-hits 1,2,3,5,8 --json out/alarms.json
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

from train import data as D


def run(binary, source, preset, min_hits, frames=0):
    with tempfile.TemporaryDirectory() as d:
        rep = os.path.join(d, "r.json")
        # A budget far above inference time: every frame waits for its own
        # inference, so the counts do not depend on the machine's load.
        cmd = [binary, "run", "--source", source, "--preset", preset, "--min-hits", str(min_hits),
               "--budget", "2s", "--no-overlay", "--report", rep]
        if frames:
            cmd += ["--frames", str(frames)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(rep) as f:
            return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sonolive", default="bin/sonolive")
    ap.add_argument("--preset", default="breast")
    ap.add_argument("--min-hits", default="1,2,3,5,8")
    ap.add_argument("--phantom-seeds", default="11,12,13,14")
    ap.add_argument("--phantom-frames", type=int, default=900, help="frames per phantom run (30 fps)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    clips = sorted(glob.glob(os.path.join(D.data_root(), "clips", "breast-cine", "*.avi")))
    if not clips:
        raise SystemExit(f"no breast cine clips under {D.data_root()}/clips/breast-cine")
    out = {"preset": args.preset, "clips": len(clips), "settings": []}
    for mh in [int(v) for v in args.min_hits.split(",")]:
        cine = {"frames": 0, "with_box": 0, "tracks": 0, "seconds": 0.0}
        for c in clips:
            r = run(args.sonolive, "file://" + c, args.preset, mh)
            d = r["detections"]
            cine["frames"] += r["frames"]
            cine["with_box"] += d["frames_with_detections"]
            cine["tracks"] += d.get("shown_tracks", 0)
            cine["seconds"] += r["frames"] / 30.0  # the clips are 30 fps
        ph = {"truth": 0, "matched": 0, "shown": 0, "true_tracks": 0, "false_tracks": 0, "seconds": 0.0}
        for seed in [int(v) for v in args.phantom_seeds.split(",")]:
            r = run(args.sonolive, f"phantom://?seed={seed}&lesions=2", args.preset, mh, args.phantom_frames)
            p = r["phantom"]
            ph["truth"] += p["truth_boxes"]
            ph["matched"] += p["matched"]
            ph["shown"] += p["shown_boxes"]
            ph["true_tracks"] += p["true_tracks"]
            ph["false_tracks"] += p["false_tracks"]
            ph["seconds"] += r["frames"] / 30.0
        row = {
            "min_hits": mh,
            "cine_tracks_per_min": round(60 * cine["tracks"] / cine["seconds"], 2),
            "cine_frames_with_box": round(cine["with_box"] / max(1, cine["frames"]), 3),
            "phantom_recall": round(ph["matched"] / max(1, ph["truth"]), 3),
            "phantom_precision": round(ph["matched"] / max(1, ph["shown"]), 3),
            "phantom_true_tracks_per_min": round(60 * ph["true_tracks"] / ph["seconds"], 2),
            "phantom_false_tracks_per_min": round(60 * ph["false_tracks"] / ph["seconds"], 2),
            "cine_minutes": round(cine["seconds"] / 60, 2), "phantom_minutes": round(ph["seconds"] / 60, 2),
        }
        print(json.dumps(row), file=sys.stderr, flush=True)
        out["settings"].append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
