#!/usr/bin/env bash
# bench/orthanc.sh — the Orthanc plugin's cost and speed, on Debian's Orthanc:
#
#   bench/orthanc.sh [--n N] [--n-raw N_RAW] [--rounds R] [--latency M] [--model FILE]
#
# 1. Ingest: the same instances sent by storescu (one association,
#    TCP_NODELAY, loopback) to a fresh Orthanc without the plugin and to a
#    fresh Orthanc with it (StableAge 1: the plugin scores the studies that
#    became stable while the rest still arrives), alternated R times, for two
#    sets: N real JPEG-baseline chest files of ../shared/data/dicom-cxr and
#    N_RAW uncompressed 15.7 MB CR made from a real file (new UIDs, one study
#    each). Reported: instances/s of each run, how many the plugin had
#    scored by the end of the send, the medians and with/without (target
#    >= 0.8).
# 2. Latency: M single-image studies (15.7 MB uncompressed CR made from a
#    real file) sent one at a time to an idle Orthanc with the plugin and
#    StableAge 1; from storescu's return (the C-STORE response) to the SR
#    present in Orthanc (GET /cxr-triage/studies/<uid> names it), polled
#    every 10 ms. Reported: median and p95, and the plugin's own share
#    (study queued on StableStudy -> SR stored: queued_ms, sr_stored_ms).
# The model: models/cxr-default.safetensors, else an untrained ResNet-50 at
# 224x224 (speed does not depend on the weights), fp32, all CPUs, batches of 8.
# Needs Orthanc, the plugin (build target cxr_triage_orthanc), DCMTK tools,
# pydicom and ../shared/data/dicom-cxr (skips otherwise).
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${BUILD:-$SRC/build}" 2>/dev/null && pwd) || { echo "no build folder ${BUILD:-$SRC/build}" >&2; exit 2; }
BIN=${CXR_BIN:-$BUILD/cxr-triage}
SO=${CXR_PLUGIN:-$BUILD/libcxr_triage_orthanc.so}
PY=${CXR_PYTHON:-/usr/bin/python3}
SHARED=${CXR_SHARED_DATA:-$SRC/../shared/data}
N=1000
N_RAW=40
ROUNDS=3
M_LAT=20
MODEL=""
while [ $# -gt 0 ]; do
    case "$1" in
    --n) N=$2; shift 2 ;;
    --n-raw) N_RAW=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --latency) M_LAT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
export TCP_NODELAY=1
[ -d "$SHARED/dicom-cxr" ] || { echo "SKIP bench/orthanc.sh: $SHARED/dicom-cxr absent"; exit 0; }
for t in Orthanc storescu dcmdjpls curl; do
    command -v $t >/dev/null || { echo "SKIP bench/orthanc.sh: $t not installed"; exit 0; }
done
[ -x "$BIN" ] || { echo "no $BIN: build first" >&2; exit 2; }
[ -f "$SO" ] || { echo "no $SO: build the cxr_triage_orthanc target" >&2; exit 2; }

W=$(mktemp -d "${TMPDIR:-/tmp}/cxr-orthanc-bench-XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# ---- inputs
dcmdjpls "$SHARED/dicom-cxr/nema-wg04/RG1_JLSN" "$W/rg1.dcm" || exit 1
"$PY" - "$W" "$N" "$M_LAT" "$SHARED/dicom-cxr" "$N_RAW" <<'PY' || exit 1
import glob, os, sys
import numpy as np, pydicom
from pydicom.uid import generate_uid
w, n, m, shared, n_raw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
def fresh(ds, path):
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, write_like_original=False)
def is_jpeg(p):
    try:
        return pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    except Exception:
        return False
jpegs = [p for p in sorted(glob.glob(f"{shared}/**/*", recursive=True)) if os.path.isfile(p) and is_jpeg(p)]
os.makedirs(f"{w}/jpeg")
for i in range(n):
    fresh(pydicom.dcmread(jpegs[i % len(jpegs)]), f"{w}/jpeg/{i:05d}.dcm")
src = pydicom.dcmread(f"{w}/rg1.dcm")
img = src.pixel_array
side = 2800
big = img[(np.arange(side) * img.shape[0] / side).astype(int)][:, (np.arange(side) * img.shape[1] / side).astype(int)]
for kind, count in (("lat", m), ("raw", n_raw)):
    os.makedirs(f"{w}/{kind}")
    for i in range(count):
        ds = pydicom.dcmread(f"{w}/rg1.dcm")
        ds.Rows, ds.Columns = side, side
        ds.PixelData = big.astype(np.uint16).tobytes()
        fresh(ds, f"{w}/{kind}/{i:05d}.dcm")
print(f"inputs: {n} JPEG baseline chest instances (from {len(jpegs)} real files, "
      f"{sum(os.path.getsize(p) for p in glob.glob(w + '/jpeg/*')) / n / 1e3:.0f} kB each), "
      f"{n_raw} uncompressed {side}x{side}x16 ({os.path.getsize(w + '/lat/00000.dcm') / 1e6:.1f} MB each), "
      f"{m} more of those for the latency")
PY

if [ -z "$MODEL" ]; then
    if [ -f "$SRC/models/cxr-default.safetensors" ]; then
        MODEL=$SRC/models/cxr-default.safetensors
    else
        MODEL=$W/resnet50.safetensors
        "$BIN" model init --arch resnet50 --input 224x224 --seed 1 --out "$MODEL" >/dev/null || exit 1
    fi
fi
cat >"$W/cxr.xml" <<EOF
<cxr-triage>
  <model><path>$MODEL</path><precision>fp32</precision><batch-size>8</batch-size></model>
  <gate><allow-secondary-capture>true</allow-secondary-capture></gate>
  <log><level>warn</level></log>
  <plugin><state-dir>$W/state</state-dir></plugin>
</cxr-triage>
EOF

# start_orthanc NAME WITH_PLUGIN(0|1): a fresh Orthanc (empty storage)
start_orthanc() {
    HTTP_PORT=$(port)
    DICOM_PORT=$(port)
    rm -rf "$W/db-$1" "$W/state"
    local plugins="[]"
    [ "$2" = 1 ] && plugins="[\"$SO\"]"
    cat >"$W/$1.json" <<EOF
{ "Name": "bench", "StorageDirectory": "$W/db-$1", "IndexDirectory": "$W/db-$1",
  "HttpPort": $HTTP_PORT, "DicomPort": $DICOM_PORT, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "StableAge": 1, "SaveJobs": false, "Plugins": $plugins,
  "CxrTriage": { "ConfigFile": "$W/cxr.xml" },
  "UserMetadata": { "CxrTriagePriority": 7701, "CxrTriageLevel": 7702, "CxrTriageScore": 7703,
    "CxrTriageModel": 7704, "CxrTriageScoredAt": 7705, "CxrTriageSr": 7706 } }
EOF
    (cd "$W" && exec Orthanc "$W/$1.json" >"$W/$1.log" 2>&1) &
    ORTHANC_PID=$!
    PIDS+=($ORTHANC_PID)
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$HTTP_PORT/system" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "Orthanc did not start: $(tail -5 "$W/$1.log")" >&2
    exit 1
}
stop_orthanc() { kill -TERM "$ORTHANC_PID"; wait "$ORTHANC_PID" 2>/dev/null; }
status() { curl -s "http://127.0.0.1:$HTTP_PORT/cxr-triage/status"; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); Orthanc $(Orthanc --version | head -n 1 | awk '{print $NF}')"
echo "model: $("$BIN" model info "$MODEL" 2>/dev/null | sed -n 's/^architecture: *//p' | cut -d, -f1), fp32"
echo
scored_now() { status | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["counts"]["instances_analysed"])'; }
med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for set in jpeg raw; do
    n=$(ls "$W/$set" | wc -l)
    opts=()
    [ $set = jpeg ] && opts=(-xy)
    label="$n JPEG baseline chest instances"
    [ $set = raw ] && label="$n uncompressed 15.7 MB instances"
    echo "ingest, instances/s ($label, one study each, one storescu association):"
    printf '  %-6s %10s %10s %7s  %s\n' round without with ratio "scored by the plugin when the send ended"
    rates_without=()
    rates_with=()
    for r in $(seq 1 "$ROUNDS"); do
        for mode in 0 1; do
            start_orthanc "$set-$r-$mode" $mode
            if [ $mode = 1 ] && [ "$(status | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("state"))' 2>/dev/null)" != ready ]; then
                echo "the plugin is not ready: $(status)" >&2
                exit 1
            fi
            t0=$(now)
            storescu "${opts[@]}" -aet MODALITY -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "$W/$set"/*.dcm >"$W/send.log" 2>&1 ||
                { echo "storescu failed: $(tail -3 "$W/send.log")" >&2; exit 1; }
            t1=$(now)
            rate=$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.1f", n / (b - a) }')
            if [ $mode = 1 ]; then
                rates_with+=("$rate")
                extra="$(scored_now) of $n in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
            else
                rates_without+=("$rate")
                w0=$rate
            fi
            stop_orthanc
            rm -rf "$W/db-$set-$r-$mode"
        done
        printf '  %-6s %10s %10s %7s  %s\n' "$r" "$w0" "$rate" "$(awk -v a="$w0" -v b="$rate" 'BEGIN { printf "%.2f", b / a }')" "$extra"
    done
    mw=$(med "${rates_without[@]}")
    mp=$(med "${rates_with[@]}")
    printf '  %-6s %10s %10s %7s  (target >= 0.80)\n' median "$mw" "$mp" "$(awk -v a="$mw" -v b="$mp" 'BEGIN { printf "%.2f", b / a }')"
    echo
done

# ---- latency
start_orthanc lat 1
"$PY" - "$HTTP_PORT" "$DICOM_PORT" "$W/lat" "$W/lat.log" <<'PY'
import glob, json, re, statistics, subprocess, sys, time, urllib.request
import pydicom
http, dicom, src, log = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
base = f"http://127.0.0.1:{http}"
def page(uid):
    try:
        with urllib.request.urlopen(f"{base}/cxr-triage/studies/{uid}", timeout=5) as r:
            return json.loads(r.read())
    except Exception:
        return {}
lat, own = [], []
for f in sorted(glob.glob(src + "/*.dcm")):
    uid = pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID
    subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1", dicom, f],
                   check=True, capture_output=True)
    t0 = time.monotonic()
    while not (p := page(uid)).get("sr_orthanc_id"):
        if time.monotonic() - t0 > 120:
            sys.exit(f"no SR for {uid} after 120 s")
        time.sleep(0.01)
    lat.append((time.monotonic() - t0) * 1000)
    own.append(p["sr_stored_ms"] - p["queued_ms"])
lat.sort()
p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
print(f"latency, C-STORE response -> SR in Orthanc ({len(lat)} single-image 15.7 MB studies, StableAge 1):")
print(f"  median {statistics.median(lat):.0f} ms, p95 {p95:.0f} ms (min {lat[0]:.0f}, max {lat[-1]:.0f})")
if own:
    print(f"  of which the plugin (study queued -> SR stored): median {statistics.median(own):.0f} ms, "
          f"max {max(own):.0f} ms; the rest is Orthanc's StableAge wait")
PY
stop_orthanc
