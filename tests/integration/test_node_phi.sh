#!/usr/bin/env bash
# test_node_phi.sh — log/allow-phi decides whether the log names patients:
#   - by default (false), no patient ID or accession number of a received
#     study appears anywhere in the node's log;
#   - after a SIGHUP with allow-phi true, the line that reports a study's SR
#     names its patient ID and accession number; the earlier study's stay out.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu echoscu dcmdump
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"

# make_instances: PatientID PID<prefix><study>, AccessionNumber A<prefix><study>
make_instances "$WORK/a" 1 1 611
send_files CR01 "$DICOM_PORT" "$WORK"/a/*.dcm || fail "storescu (study A)"
sr_line() { grep -q "study $1.*: SR " "$WORK/node.log"; }
wait_until 60 "the SR line of study A" sr_line 2.25.611.1
grep -q "PID6111\|A6111" "$WORK/node.log" && fail "allow-phi false, yet the log names the patient: $(grep -m1 'PID6111\|A6111' "$WORK/node.log")"
log "allow-phi false: the log names studies by UID only"

LOG_EXTRA="<allow-phi>true</allow-phi>" write_conf "$WORK/node.xml"
kill -HUP "$NODE_PID"
wait_until 20 "the reload" grep -q "reloaded:" "$WORK/node.log"
make_instances "$WORK/b" 1 1 612
send_files CR01 "$DICOM_PORT" "$WORK"/b/*.dcm || fail "storescu (study B)"
wait_until 60 "the SR line of study B" sr_line 2.25.612.1
grep -q "study 2.25.612.1 (patient PID6121, accession A6121): SR " "$WORK/node.log" ||
    fail "allow-phi true: the SR line does not name the patient: $(grep 'study 2.25.612.1' "$WORK/node.log")"
grep -q "PID6111\|A6111" "$WORK/node.log" && fail "study A's patient appeared after the reload"
log "allow-phi true after SIGHUP: the SR line names patient and accession"
stop_node
log "PASS"
