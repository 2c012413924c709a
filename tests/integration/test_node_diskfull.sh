#!/usr/bin/env bash
# test_node_diskfull.sh — a full disk refuses instances cleanly:
#   - the spool is a small tmpfs (in a private mount namespace, `unshare -rm`)
#     nearly filled by another file: C-STOREs that do not fit are answered
#     0xA700 (Refused: Out of Resources), nothing half-written stays in the
#     spool, every acknowledged instance has its job row, the node keeps
#     serving;
#   - the disk watermark (reloaded with SIGHUP): new associations are refused;
#   - space returns: everything sent again is acknowledged, scored, delivered.
# Without mount namespaces the first part uses another real limit instead: a
# file-size limit (RLIMIT_FSIZE) on the node, so writing a large instance
# fails with EFBIG.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump curl sqlite3
if [ -z "${CXR_NODE_NS:-}" ] && [ -z "${CXR_NODE_NO_NS:-}" ]; then
    if unshare -rm true 2>/dev/null; then
        exec unshare -rm env CXR_NODE_NS=1 bash "$0" "$@"
    fi
fi
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
db() { sqlite3 "$SPOOL/jobs.sqlite" "$1"; }

if [ -n "${CXR_NODE_NS:-}" ] && mkdir -p "$WORK/small" && mount -t tmpfs -o size=16m tmpfs "$WORK/small"; then
    MODE=tmpfs
    SPOOL=$WORK/small/spool
    make_instances "$WORK/in" 4 2 606 512 1024 16           # 1 MiB: spool files
    FIRST=4 make_instances "$WORK/in" 4 2 606 512 512 16    # 512 KiB: kept in the job store
else
    MODE=fsize
    SPOOL=$WORK/spool
    log "no private mount namespace here: using a file-size limit (RLIMIT_FSIZE) instead of a tmpfs"
    printf '#!/bin/bash\ntrap "" XFSZ\nulimit -f 6144\nexec "$@"\n' >"$WORK/wrap.sh"
    chmod +x "$WORK/wrap.sh"
    NODE_WRAP=$WORK/wrap.sh
    make_instances "$WORK/in" 4 2 606 512 1024 16       # 1 MiB: fit
    FIRST=4 make_instances "$WORK/in" 4 2 606 2048 2048 16   # 8 MiB: over the limit
fi
start_storescp "$DEST_PORT" "$WORK/recv"
MIN_FREE_MB=0
NODE_EXTRA="<spool-retention-hours>1000</spool-retention-hours>"
write_conf "$WORK/node.xml"
sed -i "s|<spool-dir>$WORK/spool</spool-dir>|<spool-dir>$SPOOL</spool-dir>|" "$WORK/node.xml"
start_node "$WORK/node.xml"

if [ "$MODE" = tmpfs ]; then
    # Leave about 3 MiB free.
    avail=$(df -k --output=avail "$WORK/small" | tail -n 1)
    dd if=/dev/zero of="$WORK/small/filler" bs=1k count=$((avail - 3072)) status=none 2>/dev/null
    log "tmpfs spool: $(df -k --output=avail "$WORK/small" | tail -n 1) KiB left before sending 4 x 1 MiB and 4 x 512 KiB"
fi
if [ "$MODE" = tmpfs ]; then
    # the gauges an admin alerts on: what df says, and the job store's size
    avail=$(df -B1 --output=avail "$WORK/small" | tail -n 1 | tr -d ' ')
    got=$(metric cxr_node_spool_free_bytes)
    [ "$got" -gt $((avail - 1048576)) ] && [ "$got" -lt $((avail + 1048576)) ] ||
        fail "metrics: spool free $got bytes, df says $avail"
    store=$(($(stat -c %s "$SPOOL/jobs.sqlite") + $(stat -c %s "$SPOOL/jobs.sqlite-wal" 2>/dev/null || echo 0)))
    [ "$(metric cxr_node_job_store_bytes)" -eq "$store" ] ||
        fail "metrics: job store $(metric cxr_node_job_store_bytes) bytes, the files are $store"
    log "metrics: spool free $got bytes (df: $avail), job store $store bytes"
fi
storescu -nh -d -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/in/*.dcm >"$WORK/send1.log" 2>&1
acked_uids "$WORK/send1.log" >"$WORK/acked1"
refused=$(grep -c "DIMSE Status *: 0xa700" "$WORK/send1.log")
log "disk full: $(wc -l <"$WORK/acked1") acknowledged, $refused refused with 0xA700"
[ "$refused" -ge 1 ] || fail "no C-STORE was refused with 0xA700 (Out of Resources)"
[ "$(wc -l <"$WORK/acked1")" -lt 8 ] || fail "everything was acknowledged on a full disk"
kill -0 "$NODE_PID" || fail "the node died on a full disk"
echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" >/dev/null 2>&1 || fail "no C-ECHO on a full disk"
spool_consistent "$SPOOL"
rows=$(db "SELECT count(*) FROM instances")
[ $((SPOOL_FILES + SPOOL_KEPT)) -eq "$rows" ] || fail "$SPOOL_FILES spool files + $SPOOL_KEPT kept for $rows job rows"
log "after the refusals: $SPOOL_FILES spool files, $SPOOL_KEPT kept in the job store; refusals said:"
grep "refused (0xA700)" "$WORK/node.log" | sed 's/.*refused (0xA700): /    /' | sort | uniq -c
while read -r uid; do
    [ "$(db "SELECT count(*) FROM instances WHERE sop_instance_uid='$uid'")" -eq 1 ] ||
        fail "acknowledged $uid has no job row"
done <"$WORK/acked1"

# ---- the watermark: associations are refused before the disk is full
sed -i "s|<disk-min-free-mb>0</disk-min-free-mb>|<disk-min-free-mb>100000000</disk-min-free-mb>|" "$WORK/node.xml"
kill -HUP "$NODE_PID"
wait_until 20 "the reload" grep -q "reloaded:" "$WORK/node.log"
out=$(storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK/in/img00001.dcm" 2>&1) &&
    fail "an association was accepted below the disk watermark"
echo "$out" | grep -qi "Association Rejected" || fail "below the watermark: not an association rejection: $out"
echo "$out" | grep -qi "Transient" || fail "below the watermark: the rejection is not transient: $out"
[ "$(metric cxr_node_associations_refused_total)" -ge 1 ] || fail "metrics: refused association not counted"
log "disk watermark: association rejected (transient)"

# ---- space returns: everything arrives
rm -f "$WORK/small/filler"
sed -i "s|<disk-min-free-mb>100000000</disk-min-free-mb>|<disk-min-free-mb>1</disk-min-free-mb>|" "$WORK/node.xml"
if [ "$MODE" = fsize ]; then
    # the limit stays for this process: restart without it
    stop_node
    NODE_WRAP=
    start_node "$WORK/node.xml"
else
    kill -HUP "$NODE_PID"
    reloaded_twice() { [ "$(grep -c "reloaded:" "$WORK/node.log")" -ge 2 ]; }
    wait_until 20 "the second reload" reloaded_twice
fi
storescu -d -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/in/*.dcm >"$WORK/send2.log" 2>&1 ||
    fail "sending again after space returned: $(grep -E '^[EF]:' "$WORK/send2.log" | head -3)"
[ "$(acked_uids "$WORK/send2.log" | wc -l)" -eq 8 ] || fail "not all 8 acknowledged once space returned"
all_in_srs() {
    local sr
    : >"$WORK/refs"
    for sr in "$WORK"/recv/*; do [ -f "$sr" ] && sr_refs "$sr" >>"$WORK/refs"; done
    [ "$(sort -u "$WORK/refs" | grep -c '^2\.25\.606\.')" -eq 8 ]
}
wait_until 120 "all 8 instances in delivered SRs" all_in_srs
[ "$(db "SELECT count(*) FROM instances")" -eq 8 ] || fail "job rows: $(db 'SELECT count(*) FROM instances')"
spool_consistent "$SPOOL"
[ "$MODE" = fsize ] || [ "$SPOOL_KEPT" -eq 4 ] || fail "$SPOOL_KEPT of the 4 small instances kept in the job store"
log "space returned: all 8 acknowledged, scored and delivered ($MODE)"
stop_node
log "PASS"
