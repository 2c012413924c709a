#!/usr/bin/env bash
# test_node_badinput.sh — bad input never stops the node:
#   - the whole DICOM corpus of ../shared/data/dicom-corpus (403 files of many
#     kinds, some malformed) sent with storescu;
#   - raw streams from a minimal DICOM UL client: garbage instead of an
#     association request, a C-STORE whose data set stops half-way (the
#     connection then closes), and complete data sets that are not DICOM
#     (random bytes; a deeply nested sequence);
#   - a decompression bomb (issue 14, item 3): a deflated data set of
#     ~400 KB whose Pixel Data expands to 400 MB behind a 512 x 512 header,
#     sent as it is; it is set aside as not analysed, naming the bomb;
# and afterwards: the node still answers, no temp or half-received file is
# left in the spool, every spooled file has its job row, and the next good
# study is scored and its SR delivered.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump curl sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
start_storescp "$DEST_PORT" "$WORK/recv"
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"

alive() {
    kill -0 "$NODE_PID" 2>/dev/null || fail "the node died ($1)"
    echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" >/dev/null 2>&1 ||
        fail "the node does not answer C-ECHO ($1)"
}

# ---- the corpus, as storescu can send it
if [ -f "$CXR_SHARED_DATA/dicom-corpus/MANIFEST.tsv" ]; then
    CORPUS=()
    while IFS=$'\t' read -r path _; do
        [ "$path" = path ] || CORPUS+=("$CXR_SHARED_DATA/dicom-corpus/$path")
    done <"$CXR_SHARED_DATA/dicom-corpus/MANIFEST.tsv"
    send_files CR01 "$DICOM_PORT" "${CORPUS[@]}" || true   # storescu refuses some files itself
    log "corpus: ${#CORPUS[@]} files offered, $(metric cxr_node_instances_received_total) acknowledged"
    alive "after the corpus"
else
    log "no $CXR_SHARED_DATA/dicom-corpus (a fresh clone): raw streams only"
fi

# ---- raw streams (a minimal DICOM upper-layer client, PS3.8)
cat >"$WORK/dul.py" <<'PY'
import os, socket, struct, sys

def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload

def assoc_rq(calling, called, abstract, ts):
    pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, abstract.encode()) + item(0x40, ts.encode())
    ui = item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.9.9999")
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() +
            bytes(32) + item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x20, pc) + item(0x50, ui))
    return struct.pack(">BBI", 1, 0, len(body)) + body

def elem(group, el, value):   # implicit VR little endian
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, el, len(value)) + value

def store_rq(sop_class, sop_uid):
    body = (elem(0, 0x2, sop_class.encode()) + elem(0, 0x100, struct.pack("<H", 1)) +
            elem(0, 0x110, struct.pack("<H", 1)) + elem(0, 0x700, struct.pack("<H", 0)) +
            elem(0, 0x800, struct.pack("<H", 0)) + elem(0, 0x1000, sop_uid.encode()))
    return elem(0, 0, struct.pack("<I", len(body))) + body

def pdata(ctrl, data):
    pdv = struct.pack(">IBB", len(data) + 2, 1, ctrl) + data
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv

def recv_pdu(s):
    head = b""
    while len(head) < 6:
        chunk = s.recv(6 - len(head))
        if not chunk:
            return None, b""
        head += chunk
    t, _, n = struct.unpack(">BBI", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            break
        body += chunk
    return t, body

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def associate(port, ts="1.2.840.10008.1.2"):
    s = connect(port)
    s.sendall(assoc_rq("RAWSCU", "CXRTRIAGE", "1.2.840.10008.5.1.4.1.1.1", ts))
    t, _ = recv_pdu(s)
    if t != 2:
        raise SystemExit(f"association not accepted (PDU type {t})")
    return s

def split_part10(raw):
    """(data set bytes, transfer syntax) of a Part 10 file (explicit VR LE meta)."""
    if raw[128:132] != b"DICM":
        return raw, "1.2.840.10008.1.2"
    i, ts = 132, "1.2.840.10008.1.2.1"
    while i + 8 <= len(raw):
        g, e = struct.unpack("<HH", raw[i:i + 4])
        if g != 2:
            break
        vr = raw[i + 4:i + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            n, hdr = struct.unpack("<I", raw[i + 8:i + 12])[0], 12
        else:
            n, hdr = struct.unpack("<H", raw[i + 6:i + 8])[0], 8
        if e == 0x10:
            ts = raw[i + hdr:i + hdr + n].rstrip(b"\0 ").decode()
        i += hdr + n
    return raw[i:], ts

def store(port, uid, data, complete=True, ts="1.2.840.10008.1.2"):
    """C-STORE with `data` as the data set; returns the DIMSE status or None."""
    s = associate(port, ts)
    s.sendall(pdata(0x03, store_rq("1.2.840.10008.5.1.4.1.1.1", uid)))
    if not complete:
        s.sendall(pdata(0x00, data[: len(data) // 2]))   # not the last fragment
        s.close()                                        # ... and the stream ends
        return None
    for off in range(0, len(data), 16000):
        last = off + 16000 >= len(data)
        s.sendall(pdata(0x02 if last else 0x00, data[off:off + 16000]))
    status = None
    while True:
        t, body = recv_pdu(s)
        if t != 4:
            break
        # P-DATA: PDV header (4 len, 1 ctx, 1 ctrl) then the command set
        cmd = body[6:]
        i = 0
        while i + 8 <= len(cmd):
            g, e, n = struct.unpack("<HHI", cmd[i:i + 8])
            if (g, e) == (0, 0x900):
                status = struct.unpack("<H", cmd[i + 8:i + 10])[0]
            i += 8 + n
        break
    s.sendall(struct.pack(">BBI", 5, 0, 4) + bytes(4))   # A-RELEASE-RQ
    s.close()
    return status

port = int(sys.argv[1])
what = sys.argv[2]
if what == "garbage":
    s = connect(port)
    s.sendall(os.urandom(3000))
    s.close()
elif what == "garbage-after-assoc":
    s = associate(port)
    s.sendall(bytes([0x09, 0, 0, 0, 0, 8]) + os.urandom(8))   # no such PDU type
    s.close()
elif what == "truncated":
    store(port, sys.argv[3], os.urandom(200000), complete=False)
elif what == "store-file":
    data, ts = split_part10(open(sys.argv[4], "rb").read())
    data += b"\0" * (len(data) % 2)        # PDVs carry an even number of bytes
    print(store(port, sys.argv[3], data, ts=ts))
elif what == "store-random":
    print(store(port, sys.argv[3], os.urandom(50000)))
PY
PY=("$CXR_PYTHON" "$WORK/dul.py" "$DICOM_PORT")
"${PY[@]}" garbage || fail "raw client: garbage"
alive "after garbage"
"${PY[@]}" garbage-after-assoc || fail "raw client: bad PDU"
alive "after a bad PDU"
"${PY[@]}" truncated 2.25.777.1 || fail "raw client: truncated"
alive "after a truncated data set"
st=$("${PY[@]}" store-random 2.25.777.2) || fail "raw client: random data set"
log "random bytes as a data set: DIMSE status ${st}"
alive "after random bytes"
nested="$CXR_SHARED_DATA/dicom-corpus/orthanc-tests/2026-05-06-Deeply-Nested-Sequence.dcm"
if [ -f "$nested" ]; then
    st=$("${PY[@]}" store-file 2.25.777.3 "$nested") || fail "raw client: nested sequence"
    log "a deeply nested sequence as a data set: DIMSE status ${st}"
    alive "after a deeply nested sequence"
fi
# A deflated data set that expands far beyond its declared 512 x 512 pixels.
"$CXR_PYTHON" "$CXR_SOURCE_DIR/tests/integration/bombs.py" dicom "$WORK/bomb.dcm" 400000000 ||
    fail "cannot make the deflate bomb"
st=$("${PY[@]}" store-file 2.25.14141 "$WORK/bomb.dcm") || fail "raw client: deflate bomb"
log "a deflate bomb of $(stat -c %s "$WORK/bomb.dcm") bytes: DIMSE status ${st}"
[ "$st" = 0 ] || fail "the deflated data set was not received (status $st)"
alive "after a deflate bomb"
# The truncated one was never acknowledged: nothing of it may be kept.
sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances WHERE sop_instance_uid='2.25.777.1'" |
    grep -qx 0 || fail "a truncated C-STORE left a job row"

# ---- the next good study is scored and delivered
make_instances "$WORK/good" 2 1 303
send_files CR01 "$DICOM_PORT" "$WORK"/good/*.dcm || fail "storescu of a good study"
good_sr() { grep -lq "2.25.303.1" "$WORK"/recv/* 2>/dev/null; }
wait_until 120 "the good study's SR" good_sr
all_done() {
    [ "$(sqlite3 "$WORK/spool/jobs.sqlite" 'SELECT count(*) FROM instances WHERE state=0')" -eq 0 ]
}
wait_until 300 "every received instance processed" all_done
alive "at the end"
bomb=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT state || ' ' || reason FROM instances WHERE sop_instance_uid='2.25.14141'")
case "$bomb" in
"2 "*"decompression bomb"*) log "the deflate bomb: not analysed: ${bomb#2 }" ;;
*) fail "the deflate bomb was not set aside as a bomb: '$bomb'" ;;
esac

# ---- nothing half-written in the spool
spool_consistent "$WORK/spool"
rows=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances")
na=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances WHERE state=2")
log "$rows instances received ($SPOOL_FILES spool files, $SPOOL_KEPT kept in the job store), $na not analysed (each with its reason); node still serving"
stop_node
log "PASS"
