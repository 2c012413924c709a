#!/usr/bin/env bash
# bench/preprocess.sh — time from DICOM bytes to the model's input tensor for
# a large radiograph (issue 2: a 3000x2500 16-bit image), against the fp32
# forward pass of resnet50 at batch 1 measured in the same run.
#
# The image: the real 15-bit CR RG1 (1955x1841, from ../shared/data/dicom-cxr,
# lossy JPEG 2000) decoded by pydicom... is not what we want to time (it is
# compressed); instead the script writes an uncompressed 3000x2500 16-bit
# (12 bits stored) MONOCHROME1 CR with a window, made by bilinear upscaling of
# that image with numpy (or a synthetic chest-like gradient when ../shared is
# absent). `cxr-triage score --json` reports per-stage times (read, present =
# decode + Modality LUT + VOI + inversion to 8 bits, preprocess = resize +
# normalise); the median over N runs is printed with the forward time.
#
#   bench/preprocess.sh [--runs N] [--threads T]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${CXR_BUILD_DIR:-$root/build}
bin=$build/cxr-triage
py=${CXR_PYTHON:-/usr/bin/python3}
runs=15
threads=2
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--threads T]" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || cmake --build "$build" -j "$(nproc)" >/dev/null
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
src=$root/../shared/data/dicom-cxr/nema-wg04/RG1_J2KI
"$py" - "$src" "$w/big.dcm" <<'EOF'
import sys, os, numpy as np, pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
src, out = sys.argv[1], sys.argv[2]
H, W = 3000, 2500
if os.path.exists(src):
    a = pydicom.dcmread(src).pixel_array.astype(np.float64)
    a = a / a.max() * 4095.0
    ys = np.linspace(0, a.shape[0] - 1, H); xs = np.linspace(0, a.shape[1] - 1, W)
    y0 = np.floor(ys).astype(int); x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, a.shape[0] - 1); x1 = np.minimum(x0 + 1, a.shape[1] - 1)
    fy = (ys - y0)[:, None]; fx = (xs - x0)[None, :]
    img = (a[y0][:, x0] * (1 - fy) * (1 - fx) + a[y0][:, x1] * (1 - fy) * fx
           + a[y1][:, x0] * fy * (1 - fx) + a[y1][:, x1] * fy * fx)
else:
    yy, xx = np.mgrid[0:H, 0:W]
    img = 2000 + 1500 * np.sin(xx / 300.0) * np.cos(yy / 400.0)
img = np.clip(img, 0, 4095).astype(np.uint16)
m = FileMetaDataset()
m.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
m.MediaStorageSOPInstanceUID = generate_uid()
m.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset(); ds.file_meta = m
ds.SOPClassUID = m.MediaStorageSOPClassUID; ds.SOPInstanceUID = m.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid(); ds.SeriesInstanceUID = generate_uid()
ds.Modality = "CR"; ds.BodyPartExamined = "CHEST"; ds.ViewPosition = "PA"
ds.PatientID = "BENCH"; ds.PatientName = "Bench^Preprocess"
ds.Rows, ds.Columns = H, W
ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME1"
ds.BitsAllocated = 16; ds.BitsStored = 12; ds.HighBit = 11; ds.PixelRepresentation = 0
ds.WindowCenter = 2048; ds.WindowWidth = 4096
ds.PixelData = img.tobytes()
ds.is_little_endian = True; ds.is_implicit_VR = False
ds.save_as(out, write_like_original=False)
EOF
"$bin" model init --arch resnet50 --seed 1 --out "$w/r50.safetensors" >/dev/null
cat >"$w/conf.xml" <<EOF
<cxr-triage version="1"><model><path>$w/r50.safetensors</path><threads>$threads</threads>
<batch-size>1</batch-size><precision>fp32</precision></model></cxr-triage>
EOF
files=()
for i in $(seq 1 "$runs"); do files+=("$w/big.dcm"); done
CXR_LOG_LEVEL=error taskset -c 0-$((threads - 1)) "$bin" score --config "$w/conf.xml" --json "${files[@]}" >"$w/out.jsonl"
"$py" - "$w/out.jsonl" "$threads" <<'EOF'
import json, sys, statistics, platform, subprocess
rows = [json.loads(l)["timing_ms"] for l in open(sys.argv[1])][2:]   # first two: warm-up
med = lambda k: statistics.median(r[k] for r in rows)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
print(f"3000x2500 16-bit CR (12 bits stored, MONOCHROME1, uncompressed), {len(rows)} runs, "
      f"{sys.argv[2]} threads, {cpu}")
print("| stage | median ms |")
print("|---|---:|")
for k in ("read", "present", "preprocess"):
    print(f"| {k} | {med(k):.1f} |")
tot = med("present") + med("preprocess")
print(f"| present + preprocess | {tot:.1f} |")
print(f"| read + present + preprocess | {tot + med('read'):.1f} |")
print(f"| resnet50 fp32 forward, batch 1 | {med('infer'):.1f} |")
print(f"ratio (present + preprocess) / forward: {tot / med('infer'):.2f} (target < 1); "
      f"with the file read: {(tot + med('read')) / med('infer'):.2f}")
EOF
