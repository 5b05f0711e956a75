#!/usr/bin/python3
"""Make a US Multi-frame DICOM cine from a video clip, as an ultrasound
machine exports one: 8-bit grey frames, native or JPEG baseline, with a
Frame Time and a Sequence of Ultrasound Regions giving the pixel spacing.

It uses FFmpeg to decode the clip and pydicom (Debian's python3-pydicom)
to write the file, so sonolive's reader (github.com/suyashkumar/dicom) is
tested against an independent writer; check the result with dciodvfy.

  make_cine.py CLIP OUT.dcm --frames 30 --frame-time-ms 40 \
      --spacing-mm 0.1 [--jpeg] [--region x0,y0,x1,y1]
"""
import argparse
import datetime
import glob
import os
import subprocess
import tempfile

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def probe_size(clip):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height", "-of", "csv=p=0", clip],
                         check=True, capture_output=True, text=True).stdout
    w, h = out.strip().split(",")[:2]
    return int(w), int(h)


def frames_native(clip, n):
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", clip, "-frames:v", str(n), "-f", "rawvideo",
                          "-pix_fmt", "gray", "-"], check=True, capture_output=True).stdout
    return raw


def frames_jpeg(clip, n, tmp):
    subprocess.run(["ffmpeg", "-v", "error", "-i", clip, "-frames:v", str(n), "-pix_fmt", "gray",
                    "-q:v", "2", os.path.join(tmp, "f%04d.jpg")], check=True)
    out = []
    for p in sorted(glob.glob(os.path.join(tmp, "f*.jpg"))):
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--frame-time-ms", type=float, default=40.0)
    ap.add_argument("--spacing-mm", type=float, default=0.1)
    ap.add_argument("--region", help="x0,y0,x1,y1 (inclusive); default the whole frame")
    ap.add_argument("--jpeg", action="store_true")
    a = ap.parse_args()

    w, h = probe_size(a.clip)
    x0, y0, x1, y1 = (0, 0, w - 1, h - 1) if not a.region else map(int, a.region.split(","))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if a.jpeg else ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    ds = FileDataset(a.out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False

    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "BREAST", "0001"]
    ds.Laterality = "L"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "US"
    ds.Manufacturer = "sonolive test"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Test^Cine"
    ds.PatientID = "TEST-CINE"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01" if a.jpeg else "00"
    if a.jpeg:
        ds.LossyImageCompressionRatio = 10
        ds.LossyImageCompressionMethod = "ISO_10918_1"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = h, w
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0

    ds.FrameTime = f"{a.frame_time_ms:g}"
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)

    r = Dataset()
    r.RegionSpatialFormat = 1  # 2D tissue
    r.RegionDataType = 1
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3  # cm
    r.PhysicalDeltaX = r.PhysicalDeltaY = a.spacing_mm / 10
    ds.SequenceOfUltrasoundRegions = [r]

    if a.jpeg:
        with tempfile.TemporaryDirectory() as tmp:
            jpegs = frames_jpeg(a.clip, a.frames, tmp)
        ds.NumberOfFrames = len(jpegs)
        ds.PixelData = encapsulate(jpegs)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        raw = frames_native(a.clip, a.frames)
        ds.NumberOfFrames = len(raw) // (w * h)
        ds.PixelData = raw[: ds.NumberOfFrames * w * h]
        ds["PixelData"].VR = "OB"
    ds.save_as(a.out, write_like_original=False)
    print(f"{a.out}: {ds.NumberOfFrames} frames {w}x{h}")


if __name__ == "__main__":
    main()
