#!/usr/bin/env bash
# test_node_one_per_spool.sh — one node per spool folder (issue 16, finding 5:
# two `serve` on one spool both started and one study got two different SRs):
#   - a second `serve` on the spool of a running node (other ports, the same
#     configuration) exits with status 2 and a message that names the folder,
#     the running node's pid and what to do, without listening;
#   - so does one that names the same spool with --spool from another
#     configuration;
#   - the first node keeps serving: C-ECHO, and a study sent after the refusal
#     gets exactly one SR at the destination;
#   - after kill -9 of the first node (its lock file stays behind) a new
#     `serve` on the same spool starts and answers C-ECHO.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
start_storescp "$DEST_PORT" "$WORK/recv"
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"
FIRST=$NODE_PID
[ -f "$WORK/spool/node.lock" ] || fail "no lock file in the spool of a running node"

# second_serve NAME ARGS...: runs a second node in the background and waits
# until it has exited or says it listens; fails in the second case.
second_serve() {
    local name=$1
    shift
    "$CXR_BIN" serve "$@" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    NODE_PIDS+=("$pid")
    exited_or_listening() {
        ! kill -0 "$pid" 2>/dev/null || grep -q 'listening: DICOM' "$WORK/$name.log"
    }
    wait_until 120 "the second node ($name) to exit or to listen" exited_or_listening
    if kill -0 "$pid" 2>/dev/null; then
        cat "$WORK/$name.log"
        fail "a second node ($name) on the same spool started listening"
    fi
    wait "$pid"
    SECOND_RC=$?
}

# ---- the same configuration, other ports
SECOND_PORT=$(free_port)
second_serve second --config "$WORK/node.xml" --port "$SECOND_PORT" --http-port 0
[ "$SECOND_RC" -eq 2 ] || fail "the second serve exited with $SECOND_RC, expected 2: $(cat "$WORK/second.log")"
msg=$(cat "$WORK/second.log")
for want in "$WORK/spool" "in use by another cxr-triage node" "pid $FIRST" "--spool DIR or node/spool-dir"; do
    grep -qF -- "$want" <<<"$msg" || fail "the refusal does not say '$want': $msg"
done
log "second serve refused: $(grep -m1 'in use' <<<"$msg")"

# ---- another configuration that names the same spool with --spool
mkdir -p "$WORK/other"
sed "s#<spool-dir>[^<]*</spool-dir>#<spool-dir>$WORK/other/spool</spool-dir>#" "$WORK/node.xml" >"$WORK/other/node.xml"
second_serve third --config "$WORK/other/node.xml" --spool "$WORK/spool" --port "$(free_port)" --http-port 0
[ "$SECOND_RC" -eq 2 ] && grep -q "pid $FIRST" "$WORK/third.log" ||
    fail "serve --spool onto a held spool: exit $SECOND_RC: $(cat "$WORK/third.log")"
log "serve --spool onto the held spool refused"

# ---- the first node still serves: echo, and one SR for a study sent now
kill -0 "$FIRST" 2>/dev/null || fail "the first node died"
check "C-ECHO to the first node after the refusals" echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
make_instances "$WORK/in" 2 1 161
send_files CR01 "$DICOM_PORT" "$WORK"/in/*.dcm || { cat "$WORK/storescu.log"; fail "storescu to the first node failed"; }
one_sr() { [ "$(count_files "$WORK/recv")" -ge 1 ]; }
wait_until 120 "the SR of the study sent after the refusals" one_sr
# The study is reported when it is stable and delivered once; what the
# second node would have added is a second SR. Wait for the reporter to have
# recorded the delivery before counting.
delivered() { [ "$(metric 'cxr_node_sr_deliveries_total{result="delivered"}')" -ge 1 ]; }
wait_until 60 "the delivery to be counted" delivered
[ "$(count_files "$WORK/recv")" -eq 1 ] || fail "$(count_files "$WORK/recv") SRs for one study"
log "the first node keeps serving: echo, one SR for one study"

# ---- kill -9: the lock file stays, the next start is not blocked
kill -9 "$FIRST"
wait "$FIRST" 2>/dev/null
[ -f "$WORK/spool/node.lock" ] || fail "the lock file vanished (the test would prove nothing)"
start_node "$WORK/node.xml"
[ "$NODE_PID" != "$FIRST" ] || fail "no new node"
check "C-ECHO to the node started after kill -9" echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
grep -qx "$NODE_PID" "$WORK/spool/node.lock" || fail "node.lock does not name the new node: $(cat "$WORK/spool/node.lock")"
stop_node
log "after kill -9 a new node starts on the same spool; SIGTERM stops it cleanly"
log "PASS"
