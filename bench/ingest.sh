#!/usr/bin/env bash
# bench/ingest.sh — how fast the node takes in studies, against DCMTK's own
# storescp, and how soon an SR follows the last image of a study.
#
#   bench/ingest.sh [--n-raw N] [--n-jpeg N] [--latency M] [--model FILE]
#
# 1. Reception: the same N instances go to storescp and then to the node
#    (storescu, one association, TCP_NODELAY on both sides, loopback;
#    the JPEG files also from 4 storescu at once, storescp then with --fork;
#    storescp both in its default mode and bit-preserving, +B):
#    uncompressed ~15 MB CXRs made from a real chest file (JPEG-LS decoded,
#    resampled to 2800x2800x16 bit, new UIDs), then the real JPEG-compressed
#    chest files (sent as they are, new UIDs). The node scores while it
#    receives (one study per instance). Reported: instances/s and MB/s for
#    each, and node/storescp (target: >= 0.8) against both storescp modes.
# 2. Latency: M single-image uncompressed studies sent one at a time to an
#    idle node with study-stable-seconds 0 and batch-wait-ms 0; from the
#    C-STORE response (timed by a small DICOM client in this script) to the
#    SR's arrival at a storescp destination. Reported: median and p95
#    (target on this CPU: <= 150 ms with ResNet-50 fp32).
# Needs ../shared/data/dicom-cxr (skips otherwise), DCMTK tools, pydicom.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build}
BIN=${CXR_BIN:-$BUILD/cxr-triage}
PY=${CXR_PYTHON:-/usr/bin/python3}
SHARED=${CXR_SHARED_DATA:-$SRC/../shared/data}
N_RAW=30
N_JPEG=100
M_LAT=30
MODEL=""
while [ $# -gt 0 ]; do
    case "$1" in
    --n-raw) N_RAW=$2; shift 2 ;;
    --n-jpeg) N_JPEG=$2; shift 2 ;;
    --latency) M_LAT=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
export TCP_NODELAY=1
export CXR_LOG_LEVEL=warn
[ -d "$SHARED/dicom-cxr" ] || { echo "SKIP bench/ingest.sh: $SHARED/dicom-cxr absent"; exit 0; }
for t in storescu storescp dcmdjpls; do
    command -v $t >/dev/null || { echo "SKIP bench/ingest.sh: $t not installed"; exit 0; }
done
[ -x "$BIN" ] || { echo "no $BIN: build first (make build)" >&2; exit 2; }

W=$(mktemp -d "${TMPDIR:-/tmp}/cxr-ingest-XXXXXX")
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
"$PY" - "$W" "$N_RAW" "$N_JPEG" "$M_LAT" "$SHARED/dicom-cxr" <<'PY' || exit 1
import glob, os, sys
import numpy as np, pydicom
from pydicom.uid import generate_uid
w, n_raw, n_jpeg, m_lat, shared = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
src = pydicom.dcmread(f"{w}/rg1.dcm")
img = src.pixel_array
side = 2800
yi = (np.arange(side) * img.shape[0] / side).astype(int)
xi = (np.arange(side) * img.shape[1] / side).astype(int)
big = img[yi][:, xi].astype(np.uint16)
def fresh(ds, path):
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, write_like_original=False)
for kind, count in (("raw", n_raw), ("lat", m_lat)):
    os.makedirs(f"{w}/{kind}")
    for i in range(count):
        ds = pydicom.dcmread(f"{w}/rg1.dcm")
        ds.Rows, ds.Columns = side, side
        ds.PixelData = big.tobytes()
        fresh(ds, f"{w}/{kind}/{i:05d}.dcm")
jpegs = [p for p in sorted(glob.glob(f"{shared}/**/*", recursive=True)) if os.path.isfile(p)]
jpegs = [p for p in jpegs if not p.endswith((".tsv", ".md"))]
def is_jpeg(p):
    try:
        return pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    except Exception:
        return False   # files without a meta header are not JPEG-compressed
jpegs = [p for p in jpegs if is_jpeg(p)]
os.makedirs(f"{w}/jpeg")
for i in range(n_jpeg):
    fresh(pydicom.dcmread(jpegs[i % len(jpegs)]), f"{w}/jpeg/{i:05d}.dcm")
print(f"inputs: {n_raw} uncompressed {side}x{side}x16 ({os.path.getsize(f'{w}/raw/00000.dcm')/1e6:.1f} MB each), "
      f"{n_jpeg} JPEG baseline (from {len(jpegs)} real files), {m_lat} latency studies")
PY

if [ -z "$MODEL" ]; then
    if [ -f "$SRC/models/cxr-default.safetensors" ]; then
        MODEL=$SRC/models/cxr-default.safetensors
    else
        MODEL=$W/resnet50.safetensors   # speed does not depend on the weights
        "$BIN" model init --arch resnet50 --input 224x224 --seed 1 --out "$MODEL" >/dev/null || exit 1
    fi
fi

DEST_PORT=$(port)
mkdir -p "$W/dest"
storescp -aet PACS -od "$W/dest" "$DEST_PORT" >"$W/dest.log" 2>&1 &
PIDS+=($!)

start_node() {   # start_node NAME STABLE BATCH_WAIT
    NODE_PORT=$(port)
    HTTP_PORT=$(port)
    cat >"$W/$1.xml" <<EOF
<cxr-triage>
  <model><path>$MODEL</path><precision>fp32</precision></model>
  <gate><allow-secondary-capture>true</allow-secondary-capture></gate>
  <node><port>$NODE_PORT</port><spool-dir>$W/spool-$1</spool-dir><disk-min-free-mb>64</disk-min-free-mb>
    <study-stable-seconds>$2</study-stable-seconds><batch-wait-ms>$3</batch-wait-ms></node>
  <http><port>$HTTP_PORT</port></http>
  <destination><name>pacs</name><ae-title>PACS</ae-title><host>127.0.0.1</host><port>$DEST_PORT</port></destination>
</cxr-triage>
EOF
    "$BIN" serve --config "$W/$1.xml" >"$W/$1.log" 2>&1 &
    NODE_PID=$!
    PIDS+=($NODE_PID)
    for _ in $(seq 1 300); do
        echoscu -aec CXRTRIAGE 127.0.0.1 "$NODE_PORT" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the node did not start: $(tail -5 "$W/$1.log")" >&2
    exit 1
}
stop_node() { kill -TERM "$NODE_PID"; wait "$NODE_PID" 2>/dev/null; }
metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'; }

# send DIR AEC PORT [storescu options]: prints seconds. With CONC=k set, k
# storescu processes (one association each) share the files, all at once.
send() {
    local dir=$1 aec=$2 p=$3
    shift 3
    local t0 t1 k conc=${CONC:-1} pids=() files
    t0=$(now)
    for k in $(seq 0 $((conc - 1))); do
        files=$(ls "$dir"/*.dcm | awk -v k="$k" -v c="$conc" '(NR - 1) % c == k')
        # shellcheck disable=SC2086
        storescu "$@" -aet MODALITY -aec "$aec" 127.0.0.1 "$p" $files >"$W/send$k.log" 2>&1 &
        pids+=($!)
    done
    for k in "${!pids[@]}"; do
        wait "${pids[$k]}" || { echo "storescu failed: $(tail -3 "$W/send$k.log")" >&2; exit 1; }
    done
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "model: $("$BIN" model info "$MODEL" 2>/dev/null | sed -n 's/^architecture: *//p' | cut -d, -f1), fp32; $(storescu --version 2>&1 | head -n 1 | tr -d '$' | sed 's/^ *dcmtk: *//')"
echo
printf '%-24s %5s %11s %11s %9s %9s %9s\n' "reception (loopback)" n "storescp/s" "scp +B/s" "node/s" "node/scp" "node/+B"
# storescp_rate SET [storescp options]: instances/s of one storescp run
storescp_rate() {
    local set=$1
    shift
    local p
    p=$(port)
    rm -rf "$W/scp-$set"
    mkdir -p "$W/scp-$set"
    local fork=()
    [ "${CONC:-1}" -gt 1 ] && fork=(--fork)   # one process per association, as the node has a thread each
    storescp +xa "${fork[@]}" "$@" -aet STORESCP -od "$W/scp-$set" "$p" >"$W/scp-$set.log" 2>&1 &
    local pid=$!
    PIDS+=($pid)
    sleep 0.5
    local t
    t=$(send "$W/$set" STORESCP "$p" "${opts[@]}") || exit 1
    kill "$pid"
    wait "$pid" 2>/dev/null
    rm -rf "$W/scp-$set"
    echo "$t"
}
export CONC=1
for set in raw jpeg jpeg4; do
    opts=()
    src=$set
    export CONC=1
    [ $set != raw ] && opts=(-xy)
    [ $set = jpeg4 ] && { src=jpeg; CONC=4; }
    n=$(ls "$W/$src" | wc -l)
    mb=$(du -sm "$W/$src" | cut -f1)
    t_scp=$(storescp_rate "$src") || exit 1
    t_scpb=$(storescp_rate "$src" +B) || exit 1
    start_node "$set" 0 20
    t_node=$(send "$W/$src" CXRTRIAGE "$NODE_PORT" "${opts[@]}") || exit 1
    # let scoring finish (not part of the reception time)
    for _ in $(seq 1 600); do
        [ "$(metric 'cxr_node_sr_deliveries_total{result="delivered"}')" -ge "$n" ] && break
        [ "$(metric cxr_node_queue_instances)" -eq 0 ] && [ "$(metric cxr_node_queue_studies_awaiting_report)" -eq 0 ] &&
            [ "$(metric cxr_node_queue_deliveries)" -eq 0 ] && break
        sleep 0.5
    done
    analysed=$(metric cxr_node_instances_analysed_total)
    commits=$(metric cxr_node_intake_commits_total)
    recv_ms=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/stage_seconds_sum\{stage="receive"/ {s=$2} /stage_seconds_count\{stage="receive"/ {c=$2} END {printf "%.1f", 1000*s/c}')
    stop_node
    rm -rf "$W/spool-$set"
    awk -v n="$n" -v mb="$mb" -v a="$t_scp" -v b="$t_scpb" -v c="$t_node" -v s="$set" -v an="$analysed" -v r="$recv_ms" -v cm="$commits" 'BEGIN {
        label = (s == "raw") ? "uncompressed ~15 MB" : (s == "jpeg4") ? "JPEG, 4 associations" : "JPEG baseline (real)";
        printf "%-24s %5d %11.1f %11.1f %9.1f %9.2f %9.2f   (%.0f / %.0f / %.0f MB/s; node: %d scored, durable write %s ms each, %d commits)\n",
               label, n, n / a, n / b, n / c, a / c, b / c, mb / a, mb / b, mb / c, an, r, cm }'
done
echo "(storescp: DCMTK's default, re-encodes each object; scp +B: storescp --bit-preserving,"
echo " streams to disk like the node; neither fsyncs. The node fsyncs each object and commits"
echo " its job before answering, and scores while it receives.)"

# ---- latency: last C-STORE response -> SR at the destination
start_node lat 0 0
rm -rf "$W/dest"/*
"$PY" - "$NODE_PORT" "$W/lat" "$W/dest" <<'PY'
import os, socket, statistics, struct, sys, time

port, src, dest = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload

def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b

def recv_pdu(s):
    t, _, n = struct.unpack(">BBI", recv_exact(s, 6))
    return t, recv_exact(s, n)

def elem(g, e, v):
    if len(v) % 2:
        v += b"\0"
    return struct.pack("<HHI", g, e, len(v)) + v

def split_part10(raw):
    i, sop_class, sop = 132, "", ""
    while True:
        g, e = struct.unpack("<HH", raw[i:i + 4])
        if g != 2:
            return raw[i:], sop_class, sop
        vr = raw[i + 4:i + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            n, h = struct.unpack("<I", raw[i + 8:i + 12])[0], 12
        else:
            n, h = struct.unpack("<H", raw[i + 6:i + 8])[0], 8
        if e in (2, 3):
            v = raw[i + h:i + h + n].rstrip(b"\0 ").decode()
            if e == 2:
                sop_class = v
            else:
                sop = v
        i += h + n

def store(data, sop_class, sop):
    """One association, one C-STORE; returns the time its response arrived."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ts = "1.2.840.10008.1.2.1"
    pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, sop_class.encode()) + item(0x40, ts.encode())
    ui = item(0x51, struct.pack(">I", 65536)) + item(0x52, b"1.2.826.0.1.3680043.9.9999")
    body = (struct.pack(">HH", 1, 0) + b"CXRTRIAGE".ljust(16) + b"BENCH".ljust(16) + bytes(32) +
            item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x20, pc) + item(0x50, ui))
    s.sendall(struct.pack(">BBI", 1, 0, len(body)) + body)
    t, ac = recv_pdu(s)
    assert t == 2, f"association refused ({t})"
    maxlen, i = 16384, 68
    while i + 4 <= len(ac):   # find the peer's maximum PDU length (user information, 0x51)
        it, _, n = struct.unpack(">BBH", ac[i:i + 4])
        if it == 0x50:
            j = i + 4
            while j + 4 <= i + 4 + n:
                st, _, sn = struct.unpack(">BBH", ac[j:j + 4])
                if st == 0x51:
                    maxlen = struct.unpack(">I", ac[j + 4:j + 8])[0] or maxlen
                j += 4 + sn
        i += 4 + n
    cmd = (elem(0, 2, sop_class.encode()) + elem(0, 0x100, struct.pack("<H", 1)) +
           elem(0, 0x110, struct.pack("<H", 1)) + elem(0, 0x700, struct.pack("<H", 0)) +
           elem(0, 0x800, struct.pack("<H", 0)) + elem(0, 0x1000, sop.encode()))
    cmd = elem(0, 0, struct.pack("<I", len(cmd))) + cmd
    def pdv(ctrl, chunk):
        p = struct.pack(">IBB", len(chunk) + 2, 1, ctrl) + chunk
        return struct.pack(">BBI", 4, 0, len(p)) + p
    s.sendall(pdv(3, cmd))
    step = maxlen - 6
    out = []
    for off in range(0, len(data), step):
        out.append(pdv(2 if off + step >= len(data) else 0, data[off:off + step]))
    s.sendall(b"".join(out))
    t, rsp = recv_pdu(s)
    t_rsp = time.monotonic()
    assert t == 4 and struct.pack("<HHI", 0, 0x900, 2) + b"\0\0" in rsp, "C-STORE not answered with success"
    s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))
    try:
        recv_pdu(s)
    except EOFError:
        pass
    s.close()
    return t_rsp

lat = []
for name in sorted(os.listdir(src)):
    data, sop_class, sop = split_part10(open(os.path.join(src, name), "rb").read())
    before = len(os.listdir(dest))
    t_rsp = store(data, sop_class, sop)
    deadline = t_rsp + 30
    while len(os.listdir(dest)) == before and time.monotonic() < deadline:
        time.sleep(0.0005)
    lat.append((time.monotonic() - t_rsp) * 1000)
    time.sleep(0.2)
lat.sort()
p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
print(f"\nlatency, last C-STORE response -> SR at the destination ({len(lat)} single-image "
      f"uncompressed studies, stable 0 s, batch wait 0 ms):")
print(f"  median {statistics.median(lat):.0f} ms, p95 {p95:.0f} ms, min {lat[0]:.0f} ms, max {lat[-1]:.0f} ms")
PY
echo "node's own stage times in the latency run:"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$W/metrics.txt"
"$PY" - "$W/metrics.txt" <<'PY'
import re, sys
b = {}
for line in open(sys.argv[1]):
    m = re.match(r'cxr_node_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)', line)
    if m:
        b.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
print("  mean ms: " + ", ".join(f"{k} {1000 * v['sum'] / v['count']:.1f}" for k, v in b.items() if v.get("count")))
PY
stop_node
