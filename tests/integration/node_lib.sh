# node_lib.sh — helpers shared by tests/integration/test_node_*.sh (sourced,
# not a test itself). The tests drive the real node (`cxr-triage serve`) with
# DCMTK's storescu/echoscu/storescp as peers; exit 77 means "skipped".
#
# Environment (set by CTest; defaults for running a script by hand):
#   CXR_BIN, CXR_SOURCE_DIR, CXR_BUILD_DIR, CXR_SHARED_DATA, CXR_PYTHON

set -u
: "${CXR_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CXR_BUILD_DIR:=$CXR_SOURCE_DIR/build}"
: "${CXR_BIN:=$CXR_BUILD_DIR/cxr-triage}"
: "${CXR_SHARED_DATA:=$CXR_SOURCE_DIR/../shared/data}"
: "${CXR_PYTHON:=/usr/bin/python3}"
export TCP_NODELAY=1          # DCMTK peers: no Nagle on loopback
export CXR_LOG_LEVEL=${CXR_LOG_LEVEL:-info}

NODE_PIDS=()                  # every process this test started, by id
NODE_PID=""
WORK=""
TEST_NAME=$(basename "$0" .sh)

log() { printf '[%s] %s\n' "$TEST_NAME" "$*"; }

skip() {
    log "SKIP: $*"
    exit 77
}

# Prints the node's log tail and fails the test.
fail() {
    log "FAIL: $*"
    if [ -n "$WORK" ] && [ -f "$WORK/node.log" ]; then
        log "---- last lines of the node's log"
        tail -n 40 "$WORK/node.log"
    fi
    exit 1
}

check() {   # check "what" command...
    local what=$1
    shift
    "$@" || fail "$what"
}

need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (packaging/debian-packages.txt lists it)"
    done
    [ -x "$CXR_BIN" ] || skip "no cxr-triage binary at $CXR_BIN (build first)"
}

cleanup() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null
    done
    for pid in "${NODE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [ -n "$WORK" ] && [ -z "${CXR_KEEP:-}" ]; then
        umount "$WORK/small" 2>/dev/null
        rm -rf "$WORK"
    elif [ -n "$WORK" ]; then
        log "kept $WORK"
    fi
}

setup_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/cxr-$TEST_NAME-XXXXXX")
    trap cleanup EXIT
}

# A free TCP port on loopback (bound and released), never one this test was
# given already: the kernel may hand the same free port to two calls in a
# row (CI once gave a node's DICOM and HTTP ports the same number). The ports
# given are kept in $WORK/.ports (a file: callers run this in $(...)). Another
# process may still take a port between here and its use; that race is rare.
free_port() {
    "$CXR_PYTHON" - "${WORK:-${TMPDIR:-/tmp}}/.ports" <<'PY'
import os, socket, sys
path = sys.argv[1]
given = set(open(path).read().split()) if os.path.exists(path) else set()
for _ in range(100):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = str(s.getsockname()[1])
    s.close()
    if p not in given:
        with open(path, "a") as f:
            f.write(p + "\n")
        print(p)
        sys.exit(0)
sys.exit("no free port that this test was not given already")
PY
}

# An untrained ResNet-18 at a small input size: fast, and the engine honours
# the model's input size. Scores are meaningless; these tests check plumbing.
make_model() {
    "$CXR_BIN" model init --arch resnet18 --input 64x64 --channels 1 --seed 3 \
        --out "$WORK/model.safetensors" >/dev/null || fail "model init"
}

# make_instances OUTDIR COUNT STUDIES PREFIX [ROWS COLS BITS]
# Synthetic CR chest images (pydicom), COUNT instances over STUDIES studies,
# instance i in study i % STUDIES; UIDs under 2.25.<PREFIX>. Environment:
# VIEW (default PA; LL makes lateral views the gate refuses), FIRST (number
# the instances from FIRST+1, to add instances to the same studies later),
# SOPCLASS (default CR; SC makes Secondary Capture images, CT CT images),
# MODALITY (CR).
make_instances() {
    local out=$1 count=$2 studies=$3 prefix=$4 rows=${5:-320} cols=${6:-256} bits=${7:-8}
    mkdir -p "$out"
    "$CXR_PYTHON" - "$out" "$count" "$studies" "$prefix" "$rows" "$cols" "$bits" "${VIEW:-PA}" "${FIRST:-0}" "${SOPCLASS:-CR}" <<'PY' || fail "cannot generate test instances (python3-pydicom)"
import os, sys, numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
out, count, studies, prefix, rows, cols, bits = sys.argv[1], *map(int, sys.argv[2:4]), sys.argv[4], *map(int, sys.argv[5:8])
view, first, sopclass = sys.argv[8], int(sys.argv[9]), sys.argv[10]
rng = np.random.default_rng(int(prefix) % (2**32) + first)
yy, xx = np.mgrid[0:rows, 0:cols]
base = (np.sin(xx / 17.0) + np.cos(yy / 23.0) + 2.0) / 4.0
for i in range(first, first + count):
    s = i % studies
    ds = Dataset()
    ds.SOPClassUID = {"SC": "1.2.840.10008.5.1.4.1.1.7", "CT": "1.2.840.10008.5.1.4.1.1.2"}.get(
        sopclass, "1.2.840.10008.5.1.4.1.1.1")
    if sopclass == "SC":
        ds.ConversionType = "WSD"
    ds.SOPInstanceUID = f"2.25.{prefix}.{s + 1}.{i + 1}"
    ds.StudyInstanceUID = f"2.25.{prefix}.{s + 1}"
    ds.SeriesInstanceUID = f"2.25.{prefix}.{s + 1}.0"
    ds.PatientName = f"Test^Patient{s + 1}"
    ds.PatientID = f"PID{prefix}{s + 1}"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = f"A{prefix}{s + 1}"[:16]
    ds.StudyID = str(s + 1)
    ds.SeriesNumber = 1
    ds.InstanceNumber = i + 1
    ds.Modality = os.environ.get("MODALITY", "CR")
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.Manufacturer = "cxr-triage tests"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    img = base * (0.6 + 0.4 * rng.random()) + 0.05 * rng.random((rows, cols))
    img = np.clip(img * ((1 << bits) - 1), 0, (1 << bits) - 1)
    ds.PixelData = img.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    pydicom.dcmwrite(f"{out}/img{i + 1:05d}.dcm", ds, write_like_original=False)
PY
}

# write_conf FILE [EXTRA_XML]: a node configuration for this test. Uses
# $DICOM_PORT, $HTTP_PORT, $DEST_PORT (may be empty: no destination).
write_conf() {
    local file=$1 extra=${2:-}
    {
        echo "<cxr-triage>"
        echo "  <model><path>$WORK/model.safetensors</path><threads>1</threads><batch-size>4</batch-size></model>"
        echo "  <gate><allow-secondary-capture>${ALLOW_SC:-true}</allow-secondary-capture>${GATE_EXTRA:-}</gate>"
        echo "  <log><level>info</level>${LOG_EXTRA:-}</log>"
        echo "  <node><port>$DICOM_PORT</port><spool-dir>$WORK/spool</spool-dir>"
        echo "    <study-stable-seconds>${STABLE:-1}</study-stable-seconds>"
        echo "    <disk-min-free-mb>${MIN_FREE_MB:-16}</disk-min-free-mb>"
        echo "    <retry-base-seconds>${RETRY_BASE:-1}</retry-base-seconds>"
        echo "    <retry-cap-seconds>${RETRY_CAP:-2}</retry-cap-seconds>"
        echo "    <retry-max-attempts>${RETRY_MAX:-50}</retry-max-attempts>"
        echo "    ${NODE_EXTRA:-}</node>"
        echo "  <http><port>$HTTP_PORT</port></http>"
        if [ -n "${DEST_PORT:-}" ]; then
            echo "  <destination><name>pacs</name><ae-title>PACS</ae-title><host>127.0.0.1</host>"
            echo "    <port>$DEST_PORT</port>${DEST_EXTRA:-}</destination>"
        fi
        echo "$extra"
        echo "</cxr-triage>"
    } >"$file"
}

# start_node CONF [args...]: starts the node in the background and waits
# until it answers C-ECHO (or fails if it exits first).
start_node() {
    local conf=$1
    shift
    local before
    before=$(grep -c 'listening: DICOM' "$WORK/node.log" 2>/dev/null)
    before=${before:-0}
    ${NODE_WRAP:-} "$CXR_BIN" serve --config "$conf" "$@" >>"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    NODE_PIDS+=("$NODE_PID")
    local i
    for i in $(seq 1 300); do
        kill -0 "$NODE_PID" 2>/dev/null || fail "the node exited during start-up"
        [ "$(grep -c 'listening: DICOM' "$WORK/node.log")" -gt "$before" ] && return 0
        sleep 0.1
    done
    fail "the node did not start listening within 30 s"
}

# stop_node: SIGTERM, then it must exit by itself with status 0.
stop_node() {
    kill -TERM "$NODE_PID" 2>/dev/null || fail "node not running at stop"
    local i
    for i in $(seq 1 300); do
        if ! kill -0 "$NODE_PID" 2>/dev/null; then
            wait "$NODE_PID"
            local rc=$?
            [ "$rc" -eq 0 ] || fail "the node exited with $rc after SIGTERM"
            return 0
        fi
        sleep 0.1
    done
    fail "the node did not exit within 30 s of SIGTERM"
}

# start_storescp PORT DIR [args...]: a DCMTK storescp (AE PACS) receiving into DIR.
start_storescp() {
    local port=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    storescp -aet PACS -od "$dir" "$@" "$port" >>"$WORK/storescp.log" 2>&1 &
    STORESCP_PID=$!
    NODE_PIDS+=("$STORESCP_PID")
    local i
    for i in $(seq 1 100); do
        echoscu -aet PROBE -aec PACS "$@" 127.0.0.1 "$port" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "storescp did not start on port $port"
}

stop_storescp() {
    kill -TERM "$STORESCP_PID" 2>/dev/null
    wait "$STORESCP_PID" 2>/dev/null
    return 0
}

# wait_until SECONDS WHAT command...: polls every 0.2 s.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local n=$((secs * 5)) i
    for i in $(seq 1 "$n"); do
        "$@" && return 0
        sleep 0.2
    done
    fail "timed out after ${secs}s waiting for: $what"
}

count_files() { find "$1" -type f 2>/dev/null | wc -l; }

# spool_consistent SPOOL: nothing half-written: no temp file; one spool file
# per job row that names a file; the bytes of every instance kept in the job
# store (node/spool-inline-max-kb) are there, and none without a row. Sets
# SPOOL_FILES and SPOOL_KEPT (spool files, instances kept in the store).
spool_consistent() {
    local sp=$1 files rows kept missing orphans
    [ "$(count_files "$sp/tmp")" -eq 0 ] || fail "temp files left in the spool: $(ls -la "$sp/tmp")"
    files=$(find "$sp" -mindepth 2 -path "$sp/[0-9a-f][0-9a-f]/*" -type f | wc -l)
    rows=$(sqlite3 "$sp/jobs.sqlite" "SELECT count(*) FROM instances WHERE path<>'' AND in_store=0")
    [ "$files" -eq "$rows" ] || fail "$files spool files but $rows job rows that name a file"
    kept=$(sqlite3 "$sp/jobs.sqlite" "SELECT count(*) FROM instances WHERE in_store=1")
    missing=$(sqlite3 "$sp/jobs.sqlite" "SELECT count(*) FROM instances i WHERE in_store=1 AND NOT EXISTS
        (SELECT 1 FROM instance_data d WHERE d.instance_id=i.id AND length(d.data)=i.size)")
    [ "$missing" -eq 0 ] || fail "$missing instance(s) kept in the job store lack their bytes"
    orphans=$(sqlite3 "$sp/jobs.sqlite" "SELECT count(*) FROM instance_data d WHERE NOT EXISTS
        (SELECT 1 FROM instances i WHERE i.id=d.instance_id AND i.in_store=1)")
    [ "$orphans" -eq 0 ] || fail "$orphans kept byte blob(s) without their job row"
    SPOOL_FILES=$files
    SPOOL_KEPT=$kept
}

# A metric's value from /metrics (0 when absent).
metric() {
    curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
}

# The SOP Instance UIDs an SR references (its evidence and image items).
sr_refs() {
    dcmdump +P 0008,1155 "$1" 2>/dev/null | sed -n 's/.*UI \[\([0-9.]*\)\].*/\1/p' | sort -u
}

# A DICOM attribute's value.
dcm_value() {
    dcmdump +P "$2" "$1" 2>/dev/null | head -n 1 | sed -n 's/.*\[\(.*\)\].*/\1/p'
}

# The UIDs a storescu -d run (its output in FILE) saw acknowledged with success.
acked_uids() {
    awk '/Affected SOP Instance UID/ { uid = $NF }
         /DIMSE Status/ && /0x0000/ && uid != "" { print uid; uid = "" }
         /C-STORE RSP/ { uid = "" }' "$1" | sort -u
}

# dciodvfy: no line that starts with "Error".
sr_valid() {
    local out
    out=$(dciodvfy "$1" 2>&1)
    if printf '%s\n' "$out" | grep -q '^Error'; then
        log "dciodvfy errors in $1:"
        printf '%s\n' "$out" | grep '^Error' | head -5
        return 1
    fi
    return 0
}

# send_files CALLING_AE PORT FILE...: C-STORE files as they are, one
# association per transfer syntax (storescu proposes a compressed syntax only
# when told which). Returns storescu's failure if any.
send_files() {
    local aet=$1 port=$2
    shift 2
    local f ts rc=0
    declare -A groups=()
    for f in "$@"; do
        ts=$(dcmdump +P 0002,0010 "$f" 2>/dev/null | sed -n 's/.*UI \[\{0,1\}=\{0,1\}\([^] ]*\).*/\1/p' | head -n 1)
        ts=${ts:-none}
        groups[$ts]+="$f"$'\n'
    done
    for ts in "${!groups[@]}"; do
        local opt=""
        case "$ts" in
        JPEG2000LosslessOnly | 1.2.840.10008.1.2.4.90) opt=-xv ;;
        JPEG2000 | 1.2.840.10008.1.2.4.91) opt=-xw ;;
        JPEGLSLossless | 1.2.840.10008.1.2.4.80) opt=-xt ;;
        JPEGLSLossy | 1.2.840.10008.1.2.4.81) opt=-xu ;;
        JPEGBaseline | 1.2.840.10008.1.2.4.50) opt=-xy ;;
        JPEGExtended:Process2+4 | 1.2.840.10008.1.2.4.51) opt=-xx ;;
        JPEGLossless* | 1.2.840.10008.1.2.4.57 | 1.2.840.10008.1.2.4.70) opt=-xs ;;
        RLELossless | 1.2.840.10008.1.2.5) opt=-xr ;;
        esac
        local list=()
        mapfile -t list < <(printf '%s' "${groups[$ts]}")
        storescu -nh $opt -aet "$aet" -aec CXRTRIAGE 127.0.0.1 "$port" "${list[@]}" >>"$WORK/storescu.log" 2>&1 || rc=1
    done
    return $rc
}
