#!/usr/bin/env bash
# test_node_crash_guard.sh — the crash guard sets aside the image that
# crashes the node, not the images that shared its batch (issue 14, item 6).
# Four images of one study go to the node in one association (batch size 4;
# batch-wait-ms lets them fill one batch); the node dies (SIGKILL, the test
# hook CXR_NODE_TEST_CRASH_SOP) whenever the third is in a batch. It is
# restarted after each death until every image is processed: the guilty one
# is set aside as "interrupted 3 times" after its third crash, the three
# others are analysed. (Counted per batch, the three innocent images reached
# 3 interruptions with it and were set aside too.)
. "$(dirname "$0")/node_lib.sh"
need_tools storescu echoscu sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=""
NODE_EXTRA="<worker-threads>1</worker-threads><batch-wait-ms>10000</batch-wait-ms>" write_conf "$WORK/node.xml"
make_instances "$WORK/in" 4 1 707
GUILTY=2.25.707.1.3
export CXR_NODE_TEST_CRASH_SOP=$GUILTY

processed() { [ "$(sqlite3 "$WORK/spool/jobs.sqlite" 'SELECT count(*) FROM instances WHERE state<>0' 2>/dev/null || echo 0)" -eq 4 ]; }
gone_or_done() { ! kill -0 "$NODE_PID" 2>/dev/null || processed; }

start_node "$WORK/node.xml"
send_files CR01 "$DICOM_PORT" "$WORK"/in/*.dcm || true # the node may die before the last response
crashes=0
for run in 1 2 3 4 5 6; do
    wait_until 120 "the node to die on $GUILTY, or every image processed" gone_or_done
    if kill -0 "$NODE_PID" 2>/dev/null; then
        break
    fi
    wait "$NODE_PID" 2>/dev/null
    crashes=$((crashes + 1))
    log "run $run: the node died (crash $crashes); starting it again"
    # it may die again before it listens: start it by hand, not with start_node
    "$CXR_BIN" serve --config "$WORK/node.xml" >>"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    NODE_PIDS+=("$NODE_PID")
done
processed || fail "not every image processed after $crashes crashes"
[ "$crashes" -eq 3 ] || fail "$crashes crashes, expected 3 (NODE_MAX_ATTEMPTS)"
rows=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT sop_instance_uid || '|' || state || '|' || reason FROM instances ORDER BY sop_instance_uid")
log "after $crashes crashes: $(printf '%s\n' "$rows" | tr '\n' ';')"
printf '%s\n' "$rows" | grep -q "^$GUILTY|2|processing was interrupted 3 times" ||
    fail "the guilty image is not set aside: $rows"
for i in 1 2 4; do
    printf '%s\n' "$rows" | grep -q "^2.25.707.1.$i|1|" ||
        fail "innocent image 2.25.707.1.$i is not analysed: $rows"
done
wait_until 30 "the node to listen" grep -q "listening: DICOM" "$WORK/node.log"
stop_node
log "PASS"
