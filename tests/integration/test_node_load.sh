#!/usr/bin/env bash
# test_node_load.sh — load: 4 storescu processes at once, 100 instances each
# (25 studies of 4 images per sender, 100 studies in all). Every C-STORE is
# acknowledged, all 400 instances are scored, every study gets exactly one
# SR at the destination and the SRs together reference all 400 instances:
# none lost, none duplicated. The node's own counters agree. The node's
# in-memory job queue is limited to 7 here (CXR_NODE_QUEUE_LIMIT), so most
# jobs wait in the job store and are picked up from there.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump curl sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
start_storescp "$DEST_PORT" "$WORK/recv"
STABLE=2
write_conf "$WORK/node.xml"
CXR_NODE_QUEUE_LIMIT=7 start_node "$WORK/node.xml"

for k in 1 2 3 4; do
    make_instances "$WORK/in$k" 100 25 "80$k"
done
t0=$(date +%s.%N)
for k in 1 2 3 4; do
    storescu -d -aet "CR0$k" -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK/in$k"/*.dcm >"$WORK/send$k.log" 2>&1 &
    SENDERS[$k]=$!
    NODE_PIDS+=("${SENDERS[$k]}")
done
for k in 1 2 3 4; do
    wait "${SENDERS[$k]}" || fail "sender $k failed: $(grep -E '^[EF]:' "$WORK/send$k.log" | head -3)"
done
t1=$(date +%s.%N)
cat "$WORK"/send*.log >"$WORK/send.log"
acked=$(acked_uids "$WORK/send.log" | wc -l)
[ "$acked" -eq 400 ] || fail "$acked of 400 C-STOREs acknowledged"
log "400 instances from 4 concurrent senders acknowledged in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

hundred() { [ "$(count_files "$WORK/recv")" -ge 100 ]; }
wait_until 300 "100 SRs at the destination" hundred
sleep 3
[ "$(count_files "$WORK/recv")" -eq 100 ] || fail "$(count_files "$WORK/recv") SRs for 100 studies"
: >"$WORK/refs"
: >"$WORK/studies"
for sr in "$WORK"/recv/*; do
    sr_refs "$sr" >>"$WORK/refs"
    dcm_value "$sr" 0020,000d >>"$WORK/studies"
done
[ "$(sort -u "$WORK/studies" | wc -l)" -eq 100 ] || fail "not one SR per study"
[ "$(sort "$WORK/refs" | uniq -d | wc -l)" -eq 0 ] || fail "an instance is referenced by two SRs"
[ "$(sort -u "$WORK/refs" | wc -l)" -eq 400 ] || fail "the SRs reference $(sort -u "$WORK/refs" | wc -l) of 400 instances"
for s in "$WORK"/recv/*; do sr_valid "$s" || fail "invalid SR under load"; break; done
[ "$(metric cxr_node_instances_received_total)" -eq 400 ] || fail "metrics: received"
# Concurrent associations share durable commits (group commit): 400
# acknowledged instances in fewer commits than instances, never more.
commits=$(metric cxr_node_intake_commits_total)
[ "$commits" -ge 1 ] && [ "$commits" -lt 400 ] || fail "metrics: $commits durable commits for 400 instances"
log "400 instances made durable in $commits commits"
spool_consistent "$WORK/spool"
[ "$(metric cxr_node_instances_analysed_total)" -eq 400 ] || fail "metrics: analysed"
[ "$(metric 'cxr_node_sr_deliveries_total{result="delivered"}')" -eq 100 ] || fail "metrics: delivered"
[ "$(sqlite3 "$WORK/spool/jobs.sqlite" 'SELECT count(*) FROM instances WHERE state=1')" -eq 400 ] ||
    fail "job store: not all 400 analysed"
grep -q "the rest wait in the job store" "$WORK/node.log" || fail "the queue limit was never reached"
log "all 400 scored; 100 studies, 100 SRs, every instance referenced once (queue overflowed into the store)"
stop_node
log "PASS"
