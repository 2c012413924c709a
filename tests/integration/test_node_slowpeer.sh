#!/usr/bin/env bash
# test_node_slowpeer.sh — connections that never finish their association
# request do not hold up anyone else, before any authentication
# (conformance.md 4.3):
#   - with 4 silent connections and 4 that sent half an A-ASSOCIATE-RQ held
#     open (each would stall a listener that reads requests in turn for the
#     30 s ACSE timeout), echoscu and storescu of a file succeed with a 10 s
#     ACSE timeout of their own, and the file is stored;
#   - with 40 such connections from the same address (over the per-address
#     cap of 16 negotiating connections), the oldest are closed to make
#     room and C-ECHO still succeeds;
#   - 200 malformed A-ASSOCIATE-RQs (a presentation context without a
#     transfer syntax: DCMTK 3.6.7 leaks on it) are each answered with an
#     A-ABORT, and the node logs them in a few lines, not one per connection;
#   - SIGTERM stops the node while hostile connections are still open.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu echoscu dcmdump sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"
make_instances "$WORK/in" 1 1 808

# hostile.py PORT SILENT PARTIAL READYFILE: opens the connections, writes
# their number to READYFILE once all are open (and the partial requests
# sent), then holds them until killed.
cat >"$WORK/hostile.py" <<'PY'
import os, socket, struct, sys, time
port, silent, partial, ready = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conns = []
for _ in range(silent):
    conns.append(socket.create_connection(("127.0.0.1", port)))
for _ in range(partial):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack(">BBI", 1, 0, 200) + b"\0\1")   # 8 of 206 bytes
    conns.append(s)
with open(ready + ".tmp", "w") as f:
    f.write("%d\n" % len(conns))
os.rename(ready + ".tmp", ready)
time.sleep(3600)
PY

# hostile SILENT PARTIAL NAME: starts the helper and waits until all its
# connections are open.
hostile() {
    READY=$WORK/$3.ready
    "$CXR_PYTHON" "$WORK/hostile.py" "$DICOM_PORT" "$1" "$2" "$READY" 2>>"$WORK/hostile.log" &
    HOSTILE_PID=$!
    NODE_PIDS+=("$HOSTILE_PID")
    wait_until 60 "$(($1 + $2)) hostile connections open" hostile_ready
}
hostile_ready() {
    [ -s "$READY" ] && return 0
    kill -0 "$HOSTILE_PID" 2>/dev/null || fail "hostile.py ended: $(tail -3 "$WORK/hostile.log")"
    return 1
}

# ACSE timeout 10 s on the client side: far below what a listener serving
# requests in turn would need (30 s per held connection).
PEER=(-to 10 -ta 10 -td 20 -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT")

hostile 4 4 first
echoscu "${PEER[@]}" >"$WORK/echo1.log" 2>&1 ||
    fail "C-ECHO failed while 8 connections were negotiating: $(tail -3 "$WORK/echo1.log")"
storescu "${PEER[@]}" "$WORK"/in/*.dcm >"$WORK/store1.log" 2>&1 ||
    fail "C-STORE failed while 8 connections were negotiating: $(tail -3 "$WORK/store1.log")"
[ "$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances WHERE sop_instance_uid='2.25.808.1.1'")" -eq 1 ] ||
    fail "the instance sent while connections were held open is not in the job store"
kill -0 "$HOSTILE_PID" 2>/dev/null || fail "hostile.py ended early (its connections were not held)"
log "4 silent + 4 partial connections held open: C-ECHO and C-STORE served"

hostile 20 20 second
echoscu "${PEER[@]}" >"$WORK/echo2.log" 2>&1 ||
    fail "C-ECHO failed with 48 connections negotiating from the same address: $(tail -3 "$WORK/echo2.log")"
grep -q "closed to make room" "$WORK/node.log" ||
    fail "48 connections from one address, but none was closed to make room (per-address cap)"
log "48 connections from one address: the oldest closed to make room, C-ECHO served"

# 200 malformed requests, one connection each; every answer must be A-ABORT
cat >"$WORK/malformed.py" <<'PY'
import socket, struct, sys
def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload
pc = struct.pack(">BBBB", 1, 0, 0, 0) + item(0x30, b"1.2.840.10008.1.1")   # no transfer syntax
body = (struct.pack(">HH", 1, 0) + b"CXRTRIAGE".ljust(16) + b"EVIL".ljust(16) + bytes(32) +
        item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x20, pc) +
        item(0x50, item(0x51, struct.pack(">I", 16384))))
rq = struct.pack(">BBI", 1, 0, len(body)) + body
answers = {}
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.settimeout(30)
    s.sendall(rq)
    hdr = b""
    while len(hdr) < 6:
        b = s.recv(6 - len(hdr))
        if not b:
            break
        hdr += b
    t = hdr[0] if hdr else -1
    answers[t] = answers.get(t, 0) + 1
    s.close()
print(" ".join("%d:%d" % kv for kv in sorted(answers.items())))
PY
lines_before=$(grep -c "127.0.0.1 closed before an association was negotiated\|more connections closed before an association was negotiated from 127.0.0.1" "$WORK/node.log")
answers=$("$CXR_PYTHON" "$WORK/malformed.py" "$DICOM_PORT" 200) || fail "malformed.py failed"
[ "$answers" = "7:200" ] || fail "200 malformed A-ASSOCIATE-RQs: answers by PDU type $answers (want 7:200, A-ABORT)"
lines_after=$(grep -c "127.0.0.1 closed before an association was negotiated\|more connections closed before an association was negotiated from 127.0.0.1" "$WORK/node.log")
[ $((lines_after - lines_before)) -lt 20 ] ||
    fail "200 malformed requests from one address made $((lines_after - lines_before)) log lines (want a few: one per address and minute)"
echoscu "${PEER[@]}" >"$WORK/echo3.log" 2>&1 || fail "C-ECHO after the malformed requests: $(tail -3 "$WORK/echo3.log")"
log "200 malformed requests: all answered with A-ABORT, $((lines_after - lines_before)) log line(s)"

stop_node
log "PASS"
