#!/usr/bin/env bash
# bench/assoc_flood.sh — the node's DICOM port against hostile peers, before
# any authentication (issue 14, conformance.md 4.3 and 4.8):
#
#   bench/assoc_flood.sh [--n N] [--held K] [--echo-timeout S]
#
# 1. C-ECHO latency: echoscu against an idle node (median of 5), then with K
#    connections (default 4) held open that each sent 8 bytes of a 206-byte
#    A-ASSOCIATE-RQ (the issue's repro); echoscu waits up to S seconds
#    (default 300) for its answer.
# 2. Memory: the node's RSS (VmRSS) before and after N (default 10000)
#    A-ASSOCIATE-RQs of each shape DCMTK 3.6.7 leaks on (a presentation
#    context without transfer syntax; an abstract syntax of 65527 bytes; an
#    extended negotiation sub-item whose UID overruns it), one connection
#    each, after a warm-up of 1000; and of a well-formed request with a
#    called AE the node refuses (control: rejected after DCMTK parsed it).
#    Reported as KiB of RSS growth per 10,000 requests.
# CXR_BIN selects the binary (to compare with an older build); release
# build, same machine for both.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build}
BIN=${CXR_BIN:-$BUILD/cxr-triage}
PY=${CXR_PYTHON:-/usr/bin/python3}
N=10000
HELD=4
ECHO_TIMEOUT=300
while [ $# -gt 0 ]; do
    case "$1" in
    --n) N=$2; shift 2 ;;
    --held) HELD=$2; shift 2 ;;
    --echo-timeout) ECHO_TIMEOUT=$2; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v echoscu >/dev/null || { echo "SKIP bench/assoc_flood.sh: echoscu not installed"; exit 0; }
[ -x "$BIN" ] || { echo "no $BIN: build first (make build)" >&2; exit 2; }
export CXR_LOG_LEVEL=warn

W=$(mktemp -d "${TMPDIR:-/tmp}/cxr-flood-XXXXXX")
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
DPORT=$(port)
HPORT=$(port)
"$BIN" model init --arch resnet18 --input 64x64 --channels 1 --seed 3 --out "$W/model.safetensors" >/dev/null ||
    { echo "model init failed" >&2; exit 1; }
cat >"$W/node.xml" <<EOF
<cxr-triage>
  <model><path>$W/model.safetensors</path><threads>1</threads></model>
  <node><port>$DPORT</port><spool-dir>$W/spool</spool-dir><disk-min-free-mb>16</disk-min-free-mb></node>
  <http><port>$HPORT</port></http>
</cxr-triage>
EOF
"$BIN" serve --config "$W/node.xml" >"$W/node.log" 2>&1 &
NODE=$!
PIDS+=("$NODE")
for _ in $(seq 1 300); do
    echoscu -aet BENCH -aec CXRTRIAGE 127.0.0.1 "$DPORT" >/dev/null 2>&1 && break
    kill -0 "$NODE" 2>/dev/null || { echo "the node exited: $(tail -3 "$W/node.log")" >&2; exit 1; }
    sleep 0.1
done
echo "node: $BIN ($("$BIN" --version 2>/dev/null | head -1))"

# ---- 1. C-ECHO latency
echo_s() {   # one echoscu, prints seconds (or "failed after S s")
    local t0 t1
    t0=$(now)
    if echoscu -to "$ECHO_TIMEOUT" -ta "$ECHO_TIMEOUT" -aet BENCH -aec CXRTRIAGE 127.0.0.1 "$DPORT" >/dev/null 2>&1; then
        t1=$(now)
        echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }'
    else
        t1=$(now)
        echo "$t0 $t1" | awk '{ printf "failed after %.1f s", $2 - $1 }'
    fi
}
idle=()
for _ in 1 2 3 4 5; do idle+=("$(echo_s)"); done
printf '%s\n' "${idle[@]}" | sort -n | sed -n 3p | xargs printf 'C-ECHO, idle node (median of 5): %s s\n'
"$PY" - "$DPORT" "$HELD" "$W/held.ready" <<'PY' &
import os, socket, struct, sys, time
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(struct.pack(">BBI", 1, 0, 200) + b"\0\1")
    conns.append(s)
open(sys.argv[3] + ".tmp", "w").write("ok\n")
os.rename(sys.argv[3] + ".tmp", sys.argv[3])
time.sleep(3600)
PY
PIDS+=("$!")
HELD_PID=$!
for _ in $(seq 1 600); do [ -s "$W/held.ready" ] && break; sleep 0.1; done
echo "C-ECHO with $HELD partial A-ASSOCIATE-RQs held open: $(echo_s) s"
kill "$HELD_PID" 2>/dev/null
wait "$HELD_PID" 2>/dev/null

# ---- 2. RSS over malformed requests
cat >"$W/flood.py" <<'PY'
import socket, struct, sys
port, shape, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload
called = b"CXRTRIAGE"
ui_extra = b""
if shape == "no-ts":
    pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, b"1.2.840.10008.1.1")
elif shape == "as-64k":
    pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, b"1" * 65527)
elif shape == "extneg":
    pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2")
    ui_extra = struct.pack(">BBHH", 0x56, 0, 27, 200) + b"1.2.840.10008.5.1.4.1.1.1"
else:   # control: well-formed, called AE refused
    called = b"NOTTHENODE"
    pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2")
ui = item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.9.9999") + ui_extra
body = (struct.pack(">HH", 1, 0) + called.ljust(16) + b"FLOOD".ljust(16) + bytes(32) +
        item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x20, pc) + item(0x50, ui))
rq = struct.pack(">BBI", 1, 0, len(body)) + body
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    try:
        s.sendall(rq)
        s.recv(16)
    except OSError:
        pass
    s.close()
PY
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$NODE/status"; }
echo "RSS growth per 10,000 requests (after a warm-up of 1000 of the same shape):"
for shape in no-ts as-64k extneg control; do
    "$PY" "$W/flood.py" "$DPORT" "$shape" 1000
    before=$(rss_kib)
    t0=$(now)
    "$PY" "$W/flood.py" "$DPORT" "$shape" "$N"
    t1=$(now)
    after=$(rss_kib)
    echo "$shape $before $after $N $t0 $t1" | awk '{ printf "  %-8s %7d -> %7d KiB: %+8.1f KiB per 10,000 (%d requests in %.1f s)\n",
        $1, $2, $3, ($3 - $2) * 10000 / $4, $4, $6 - $5 }'
done
kill -0 "$NODE" 2>/dev/null || echo "the node died during the flood: $(tail -3 "$W/node.log")"
echo "node log: $(wc -l <"$W/node.log") lines"
