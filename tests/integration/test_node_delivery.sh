#!/usr/bin/env bash
# test_node_delivery.sh — SR delivery when the destination is not there:
#   - down for a while, then up: the SR arrives after retries (attempts > 1),
#     and reception and scoring of other studies went on meanwhile;
#   - a second destination that stays down: its deliveries end in the
#     dead-letter list (`cxr-triage queue list` shows them, with the error)
#     while the first destination keeps getting its SRs;
#   - `cxr-triage queue retry --all-dead` once it is up: delivered;
#   - `cxr-triage queue drop` removes a dead letter.
# Each phase waits for states, never for a duration: the first runs with so
# many attempts allowed that nothing is dead-lettered however slow the machine
# (a 4-attempt limit there dead-lettered the SR before the destination came up
# on a loaded 2-core machine); the dead-letter phase restarts the node with
# the archive added and 4 attempts, while the PACS is up.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump curl sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
DEST2_PORT=$(free_port)
RETRY_BASE=1 RETRY_CAP=2 RETRY_MAX=1000
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"
Q=("$CXR_BIN" queue --spool "$WORK/spool")
db() { sqlite3 "$WORK/spool/jobs.sqlite" "$1"; }

# ---- the destination is down; a study arrives and is scored
make_instances "$WORK/a" 2 1 505
send_files CR01 "$DICOM_PORT" "$WORK"/a/*.dcm || fail "storescu (study A)"
sr_made() { [ "$(db 'SELECT count(*) FROM srs')" -ge 1 ]; }
wait_until 60 "the SR of study A" sr_made
failed_twice() { [ "$(db "SELECT attempts FROM deliveries WHERE destination='pacs'")" -ge 2 ]; }
wait_until 30 "two failed attempts to pacs" failed_twice
"${Q[@]}" list >"$WORK/list1.txt" || fail "queue list"
grep -q "pending" "$WORK/list1.txt" || fail "queue list does not show the pending delivery: $(cat "$WORK/list1.txt")"

# Reception and scoring go on while nothing can be delivered.
make_instances "$WORK/b" 1 1 506
send_files CR01 "$DICOM_PORT" "$WORK"/b/*.dcm || fail "storescu (study B) while the destination is down"
two_srs() { [ "$(db 'SELECT count(*) FROM srs')" -ge 2 ]; }
wait_until 60 "the SR of study B while the destination is down" two_srs
[ "$(db "SELECT count(*) FROM deliveries WHERE state=2")" -eq 0 ] || fail "a delivery was dead-lettered with $RETRY_MAX attempts allowed"

# ---- pacs comes up: its SRs arrive after retries
start_storescp "$DEST_PORT" "$WORK/recv"
two_at_pacs() { [ "$(count_files "$WORK/recv")" -ge 2 ]; }
wait_until 60 "both SRs at pacs after it came up" two_at_pacs
att=$(db "SELECT min(attempts) FROM deliveries WHERE destination='pacs' AND state=1 AND sr_id=1")
[ "$att" -ge 2 ] || fail "study A's SR reached pacs in $att attempt(s); expected retries"
log "pacs down then up: SRs delivered after $att attempts; reception and scoring went on"

# ---- the archive is added and stays down; 4 attempts: dead letters
stop_node
RETRY_MAX=4
write_conf "$WORK/node.xml" "<destination><name>archive</name><ae-title>ARCHIVE</ae-title>
  <host>127.0.0.1</host><port>$DEST2_PORT</port></destination>"
start_node "$WORK/node.xml"
make_instances "$WORK/c" 2 2 507
send_files CR01 "$DICOM_PORT" "$WORK"/c/*.dcm || fail "storescu (studies C and D)"
four_at_pacs() { [ "$(count_files "$WORK/recv")" -ge 4 ]; }
wait_until 60 "the SRs of studies C and D at pacs" four_at_pacs
dead2() { [ "$(db "SELECT count(*) FROM deliveries WHERE destination='archive' AND state=2")" -ge 2 ]; }
wait_until 60 "archive deliveries dead-lettered after $RETRY_MAX attempts" dead2
"${Q[@]}" list --dead >"$WORK/dead.txt" || fail "queue list --dead"
grep -cE "^[0-9]+ +dead " "$WORK/dead.txt" | grep -qx 2 || fail "queue list --dead: $(cat "$WORK/dead.txt")"
grep -q "archive" "$WORK/dead.txt" || fail "queue list --dead lacks the destination"
"${Q[@]}" list --json >"$WORK/dead.json" || fail "queue list --json"
"$CXR_PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["counts"]["deliveries_dead"] == 2, d["counts"]
dead = [x for x in d["deliveries"] if x["state"] == "dead"]
assert len(dead) == 2 and all(x["attempts"] == 4 and x["last_error"] for x in dead), dead
' "$WORK/dead.json" || fail "queue list --json: $(cat "$WORK/dead.json")"
[ "$(metric 'cxr_node_sr_deliveries_total{result="dead"}')" -eq 2 ] || fail "metrics: dead deliveries"
[ "$(metric cxr_node_dead_letters)" -eq 2 ] || fail "metrics: dead letter gauge"
# pacs still gets new SRs while archive is dead
make_instances "$WORK/e" 1 1 508
send_files CR01 "$DICOM_PORT" "$WORK"/e/*.dcm || fail "storescu (study E)"
five_at_pacs() { [ "$(count_files "$WORK/recv")" -ge 5 ]; }
wait_until 60 "study E's SR at pacs" five_at_pacs
log "archive stayed down: 2 dead letters listed; pacs unaffected"

# ---- drop one dead letter, retry the other once archive is up
drop_id=$(db "SELECT min(id) FROM deliveries WHERE destination='archive' AND state=2")
drop_sr=$(db "SELECT r.sop_instance_uid FROM deliveries d JOIN srs r ON r.id=d.sr_id WHERE d.id=$drop_id")
keep_sr=$(db "SELECT r.sop_instance_uid FROM deliveries d JOIN srs r ON r.id=d.sr_id
              WHERE d.destination='archive' AND d.state=2 AND d.id<>$drop_id ORDER BY d.id LIMIT 1")
"${Q[@]}" drop "$drop_id" | grep -q "dropped: 1" || fail "queue drop $drop_id"
mkdir -p "$WORK/recv2"
storescp -aet ARCHIVE -od "$WORK/recv2" "$DEST2_PORT" >>"$WORK/storescp2.log" 2>&1 &
NODE_PIDS+=($!)
archive_up() { echoscu -aet PROBE -aec ARCHIVE 127.0.0.1 "$DEST2_PORT" >/dev/null 2>&1; }
wait_until 20 "archive up" archive_up
"${Q[@]}" retry --all-dead >"$WORK/retry.txt" || fail "queue retry --all-dead"
grep -q "queued again: [1-9]" "$WORK/retry.txt" || fail "queue retry: $(cat "$WORK/retry.txt")"
retried() { ls "$WORK/recv2" | grep -q "$keep_sr"; }
wait_until 30 "the retried dead letter ($keep_sr) at archive" retried
sleep 2
ls "$WORK/recv2" | grep -q "$drop_sr" && fail "the dropped delivery ($drop_sr) was sent"
[ "$(db "SELECT count(*) FROM deliveries WHERE id=$drop_id")" -eq 0 ] || fail "dropped delivery came back"
log "queue drop removed one dead letter; queue retry delivered the other once archive was up"
stop_node
log "PASS"
