#!/usr/bin/env bash
# test_node_crash.sh — kill -9 during reception loses nothing acknowledged.
# Five storescu processes send 50 instances (10 studies, 2 MB each, studies
# spread over the associations); the node is killed with SIGKILL while they
# send. From storescu's own log the test takes every instance whose C-STORE
# was answered with success. After a restart: no temp or unacknowledged file
# remains, every acknowledged instance is scored and referenced by an SR that
# reached the destination. Finally the senders retry everything (as a PACS
# would): duplicates are idempotent and all 50 end up in delivered SRs.
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

N=50
# Half large (2 MiB: spool files), half small (512 KiB: kept in the job store,
# node/spool-inline-max-kb 1024): both ways of making an instance durable.
make_instances "$WORK/in" 25 10 404 1024 1024 16
FIRST=25 make_instances "$WORK/in" 25 10 404 512 512 16
for k in 0 1 2 3 4; do
    files=()
    for i in $(seq $((k + 1)) 5 25); do   # a large and a small one in turn
        files+=("$(printf '%s/in/img%05d.dcm' "$WORK" "$i")" "$(printf '%s/in/img%05d.dcm' "$WORK" $((i + 25)))")
    done
    storescu -d -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "${files[@]}" >"$WORK/send$k.log" 2>&1 &
    SENDERS[$k]=$!
    NODE_PIDS+=("${SENDERS[$k]}")
done
# Kill as soon as a few instances are spooled (polled every 10 ms).
for _ in $(seq 1 6000); do
    [ "$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances" 2>/dev/null || echo 0)" -ge 6 ] && break
    sleep 0.01
done
kill -9 "$NODE_PID"
wait "$NODE_PID" 2>/dev/null
for k in 0 1 2 3 4; do wait "${SENDERS[$k]}" 2>/dev/null; done
cat "$WORK"/send*.log >"$WORK/send.log"
acked_uids "$WORK/send.log" >"$WORK/acked"
NACK=$(wc -l <"$WORK/acked")
log "killed the node with SIGKILL: $NACK of $N instances were acknowledged"
[ "$NACK" -ge 1 ] || fail "nothing was acknowledged before the kill"
[ "$NACK" -lt "$N" ] || log "note: every instance was acknowledged before the kill took effect"

# Restart: leftovers are cleaned, every acknowledged instance is there.
start_node "$WORK/node.xml"
spool_consistent "$WORK/spool"
rows=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances")
[ $((SPOOL_FILES + SPOOL_KEPT)) -eq "$rows" ] ||
    fail "after the restart: $SPOOL_FILES spool files + $SPOOL_KEPT kept in the store for $rows job rows"
log "after the restart: $SPOOL_FILES spool files, $SPOOL_KEPT instances kept in the job store"
while read -r uid; do
    n=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances WHERE sop_instance_uid='$uid'")
    [ "$n" -eq 1 ] || fail "acknowledged instance $uid is not in the job store"
done <"$WORK/acked"

# Every acknowledged instance is scored and referenced by a delivered SR.
delivered_refs() {
    : >"$WORK/refs"
    local sr
    for sr in "$WORK"/recv/*; do [ -f "$sr" ] && sr_refs "$sr" >>"$WORK/refs"; done
    sort -u -o "$WORK/refs" "$WORK/refs"
}
acked_delivered() {
    delivered_refs
    [ -z "$(comm -23 "$WORK/acked" "$WORK/refs")" ]
}
wait_until 180 "every acknowledged instance in a delivered SR" acked_delivered
pending=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances WHERE state=0")
log "after the restart: all $NACK acknowledged instances scored and in delivered SRs ($pending still queued)"

# The senders retry everything: duplicates change nothing, all 50 arrive.
before=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances")
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/in/*.dcm >"$WORK/resend.log" 2>&1 ||
    fail "resending failed: $(tail -3 "$WORK/resend.log")"
all_delivered() {
    delivered_refs
    [ "$(grep -c '^2\.25\.404\.' "$WORK/refs")" -eq "$N" ]
}
wait_until 180 "all $N instances in delivered SRs" all_delivered
rows=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances")
[ "$rows" -eq "$N" ] || fail "$rows job rows for $N distinct instances (duplicates not idempotent)"
dups=$(metric cxr_node_instances_duplicate_total)
[ "$dups" -eq "$before" ] || fail "$dups duplicates counted; $before instances were sent again"
spool_consistent "$WORK/spool"
[ "$SPOOL_KEPT" -eq 25 ] || fail "$SPOOL_KEPT of the 25 small instances kept in the job store"
stop_node
log "PASS"
