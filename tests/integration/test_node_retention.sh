#!/usr/bin/env bash
# test_node_retention.sh — node/spool-retention-hours: once an image has been
# reported and its hours are over, its bytes go (the spool file of a large
# image; for a small one, the bytes kept in the job store, spool-inline-max-kb)
# and its result stays; an image whose study is not reported yet keeps its
# bytes. The retention pass runs at start and every minute: a restart with
# retention 0 triggers it here.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump curl sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
db() { sqlite3 "$WORK/spool/jobs.sqlite" "$1"; }
files() { find "$WORK/spool" -mindepth 2 -path "$WORK/spool/[0-9a-f][0-9a-f]/*" -type f | wc -l; }
start_storescp "$DEST_PORT" "$WORK/recv"
NODE_EXTRA="<spool-retention-hours>1000</spool-retention-hours>"
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"

# Two reported images: a large one (2 MiB, a spool file), a small one (64 KiB,
# kept in the job store).
make_instances "$WORK/in" 1 1 707 1024 1024 16
FIRST=1 make_instances "$WORK/in" 1 1 708 256 256 8
send_files CR01 "$DICOM_PORT" "$WORK/in/img00001.dcm" "$WORK/in/img00002.dcm" || fail "storescu"
two_srs() { [ "$(count_files "$WORK/recv")" -ge 2 ]; }
wait_until 120 "the two SRs" two_srs
spool_consistent "$WORK/spool"
[ "$SPOOL_FILES" -eq 1 ] && [ "$SPOOL_KEPT" -eq 1 ] ||
    fail "before retention: $SPOOL_FILES spool files, $SPOOL_KEPT kept in the job store (want 1 and 1)"

# A third, small image whose study will not be reported (stable after an hour).
sed -i 's|<study-stable-seconds>[0-9]*</study-stable-seconds>|<study-stable-seconds>3600</study-stable-seconds>|' "$WORK/node.xml"
grep -q "<study-stable-seconds>3600<" "$WORK/node.xml" || fail "test setup: no study-stable-seconds to change"
kill -HUP "$NODE_PID"
wait_until 20 "the reload" grep -q "reloaded:" "$WORK/node.log"
FIRST=2 make_instances "$WORK/in" 1 1 709 256 256 8
send_files CR01 "$DICOM_PORT" "$WORK/in/img00003.dcm" || fail "storescu (third image)"
scored() { [ "$(db "SELECT state FROM instances WHERE sop_instance_uid LIKE '2.25.709.%'")" = 1 ]; }
wait_until 60 "the third image scored" scored
stop_node

# Retention 0: the pass at start removes the reported images' bytes only.
sed -i 's|<spool-retention-hours>1000</spool-retention-hours>|<spool-retention-hours>0</spool-retention-hours>|' "$WORK/node.xml"
start_node "$WORK/node.xml"
gone() { [ "$(db "SELECT count(*) FROM instances WHERE path<>''")" -eq 1 ]; }
wait_until 20 "the retention pass at start" gone
[ "$(files)" -eq 0 ] || fail "the reported large image's spool file is still there"
[ "$(db "SELECT count(*) FROM instance_data d JOIN instances i ON i.id=d.instance_id
        WHERE i.sop_instance_uid LIKE '2.25.708.%'")" -eq 0 ] ||
    fail "the reported small image's bytes are still in the job store"
[ "$(db "SELECT count(*) FROM instance_data d JOIN instances i ON i.id=d.instance_id
        WHERE i.sop_instance_uid LIKE '2.25.709.%'")" -eq 1 ] ||
    fail "retention removed the bytes of an image whose study is not reported yet"
[ "$(db "SELECT count(*) FROM instances WHERE probability IS NOT NULL")" -eq 3 ] ||
    fail "results were lost with the bytes"
curl -sf "http://127.0.0.1:$HTTP_PORT/studies/2.25.708.1" >"$WORK/study.json" || fail "GET /studies/2.25.708.1"
"$CXR_PYTHON" -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["instances"][0]["score"] is not None' \
    "$WORK/study.json" || fail "the image's score is gone from /studies after retention: $(head -c 600 "$WORK/study.json")"
spool_consistent "$WORK/spool"
stop_node
log "reported images past retention: spool file and kept bytes removed, results kept; unreported image kept"
log "PASS"
