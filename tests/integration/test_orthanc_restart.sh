#!/usr/bin/env bash
# test_orthanc_restart.sh — what was queued when Orthanc stopped is scored
# after the restart, and no study gets two SRs:
#   1. Orthanc stopped (SIGTERM) while studies are queued in the plugin
#      (a test hook, CXR_ORTHANC_TEST_JOB_DELAY_MS, makes each job wait so
#      that the stop lands mid-queue): it exits 0 promptly; after the restart
#      every study is scored, each with exactly one SR;
#   2. Orthanc killed (SIGKILL) while the plugin works through a queue: the
#      same after the restart;
#   3. Orthanc stopped before the studies it just received were stable
#      (Orthanc forgets unstable studies when it restarts, so no StableStudy
#      comes again): the plugin finds them after the restart and scores them.
# The plugin's own count of SRs made equals the number of studies: nothing
# was scored twice into a second SR. Then late images: a lateral view makes
# no new SR; a frontal one makes a successor SR naming the first.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc dciodvfy
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
STABLE_AGE=2
write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json"

# Every study of Orthanc has exactly one SR; prints the number of studies.
one_sr_each() {
    local n=0 s k
    for s in $(ocurl /studies | "$CXR_PYTHON" -c 'import json,sys; print("\n".join(json.load(sys.stdin)))'); do
        k=$(study_srs "$s" | wc -l)
        [ "$k" -eq 1 ] || fail "study $s has $k SRs after the restart, want 1"
        n=$((n + 1))
    done
    echo "$n"
}
scored() { [ "$(status_field counts.srs_stored)" -ge "$1" ] && plugin_idle; }

# ---- 1. SIGTERM with studies queued
make_instances "$WORK/a" 12 6 401
export CXR_ORTHANC_TEST_JOB_DELAY_MS=1000
start_orthanc
send_dicom "$WORK"/a/*.dcm || fail "storescu (1)"
mid_queue() { [ "$(status_field counts.srs_stored)" -ge 1 ] && [ "$(status_field queue.queued)" -ge 2 ]; }
wait_until 60 "one SR stored and studies still queued" mid_queue
queued=$(status_field queue.queued)
t0=$(date +%s)
stop_orthanc
[ $(($(date +%s) - t0)) -le 20 ] || fail "Orthanc took more than 20 s to stop with the plugin busy"
log "stopped with $queued studies queued"
unset CXR_ORTHANC_TEST_JOB_DELAY_MS
start_orthanc
wait_until 90 "the 6 studies scored after the restart" scored 6
sleep $((STABLE_AGE + 2))
wait_until 30 "the queue empty" plugin_idle
[ "$(one_sr_each)" -eq 6 ] || fail "phase 1: not 6 studies"
log "SIGTERM mid-queue: all 6 studies scored after the restart, one SR each"

# ---- 2. SIGKILL while the plugin works through a queue
stop_orthanc
make_instances "$WORK/b" 8 4 402
export CXR_ORTHANC_TEST_JOB_DELAY_MS=700
start_orthanc
send_dicom "$WORK"/b/*.dcm || fail "storescu (2)"
first_new() { [ "$(status_field counts.srs_stored)" -ge 7 ]; }
wait_until 60 "a first SR of the new studies" first_new
kill -9 "$ORTHANC_PID"
wait "$ORTHANC_PID" 2>/dev/null
unset CXR_ORTHANC_TEST_JOB_DELAY_MS
start_orthanc
wait_until 90 "the 10 studies scored after the SIGKILL" scored 10
sleep $((STABLE_AGE + 2))
wait_until 30 "the queue empty" plugin_idle
[ "$(one_sr_each)" -eq 10 ] || fail "phase 2: not 10 studies"
log "SIGKILL mid-queue: all 4 new studies scored after the restart, one SR each"

# ---- 3. stopped before the new studies were stable (a long StableAge for
# this run, so that the plugin has seen them as waiting when Orthanc stops)
stop_orthanc
STABLE_AGE=30 write_orthanc_json "$WORK/orthanc.json"
start_orthanc
make_instances "$WORK/c" 4 2 403
send_dicom "$WORK"/c/*.dcm || fail "storescu (3)"
both_waiting() { [ "$(status_field queue.waiting)" = 2 ]; }
wait_until 20 "the 2 new studies seen, waiting to be stable" both_waiting
stop_orthanc
write_orthanc_json "$WORK/orthanc.json"
start_orthanc
wait_until 90 "the 12 studies scored after the restart" scored 12
sleep $((STABLE_AGE + 2))
wait_until 30 "the queue empty" plugin_idle
[ "$(one_sr_each)" -eq 12 ] || fail "phase 3: not 12 studies"
log "studies waiting to be stable at the stop (no StableStudy after a restart): found and scored, one SR each"

# ---- nothing scored twice
[ "$(status_field counts.srs)" -eq 12 ] || fail "the plugin made $(status_field counts.srs) SRs for 12 studies"
[ "$(status_field errors)" -eq 0 ] || fail "errors: $(status_field last_error)"
log "12 studies, 12 SRs made: none scored twice"

# ---- a late lateral view (not analysed) and a late frontal image: each makes
# a successor SR naming the one before; the lateral view is listed in it as
# not analysed with its reason (issue 16), the frontal one analysed
id=$(study_id_of 2.25.401.1)
first_sr=$(study_srs "$id")
first_uid=$(ocurl "/instances/$first_sr/simplified-tags" | "$CXR_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["SOPInstanceUID"])')
VIEW=LL FIRST=12 make_instances "$WORK/d" 1 6 401      # instance 13 -> study 2.25.401.1
send_dicom "$WORK/d/img00013.dcm" || fail "storescu (lateral)"
lateral_listed() { ocurl "/cxr-triage/studies/$id" | grep -q '"reason":"[^"]*\(lateral\|LL\)'; }
wait_until 30 "the late lateral view listed as not analysed" lateral_listed
two_srs() { [ "$(study_srs "$id" | wc -l)" -eq 2 ] && plugin_idle; }
wait_until 60 "a second SR listing the lateral view" two_srs
lat_sr=$(study_srs "$id" | grep -v "^$first_sr\$")
curl -sf "$(ourl "/instances/$lat_sr/file")" -o "$WORK/lateral.dcm" || fail "download the lateral view's SR"
lat_uid=$(dcm_value "$WORK/lateral.dcm" 0008,0018)
dcmdump "$WORK/lateral.dcm" | grep -q "\[$first_uid\]" || fail "the lateral view's SR does not name $first_uid"
dsrdump +Pl "$WORK/lateral.dcm" | grep -q '"not analysed: lateral view (ViewPosition LL)"' ||
    fail "the lateral view's SR does not give its reason"
[ "$(dsrdump "$WORK/lateral.dcm" | grep -c 'Measurement not attempted')" -eq 1 ] ||
    fail "the lateral view's SR: not exactly one image marked Measurement not attempted"
sr_valid "$WORK/lateral.dcm" || fail "the lateral view's SR fails dciodvfy"
FIRST=18 make_instances "$WORK/d" 1 6 401              # instance 19 -> study 2.25.401.1
send_dicom "$WORK/d/img00019.dcm" || fail "storescu (late frontal)"
three_srs() { [ "$(study_srs "$id" | wc -l)" -eq 3 ] && plugin_idle; }
wait_until 60 "a third SR for the late frontal image" three_srs
third_sr=$(study_srs "$id" | grep -v "^$first_sr\$" | grep -v "^$lat_sr\$")
curl -sf "$(ourl "/instances/$third_sr/file")" -o "$WORK/second.dcm" || fail "download the third SR"
dcmdump "$WORK/second.dcm" | grep -q "PredecessorDocumentsSequence" || fail "the third SR has no Predecessor Documents Sequence"
dcmdump "$WORK/second.dcm" | grep -q "\[$lat_uid\]" || fail "the third SR does not name $lat_uid"
printf '2.25.401.1.1\n2.25.401.1.13\n2.25.401.1.19\n2.25.401.1.7\n' >"$WORK/want_refs"
sr_refs "$WORK/second.dcm" | grep -v "^$lat_uid\$" >"$WORK/refs"
diff -u "$WORK/want_refs" "$WORK/refs" >/dev/null || fail "the third SR references $(tr '\n' ' ' <"$WORK/refs")"
sr_valid "$WORK/second.dcm" || fail "the third SR fails dciodvfy"
[ "$(ocurl "/studies/$id/metadata/CxrTriageSr")" = "$(dcm_value "$WORK/second.dcm" 0008,0018)" ] ||
    fail "metadata CxrTriageSr does not name the newest SR"
log "late images: a lateral view gets a successor SR listing it as not analysed; a frontal one another, naming it"
stop_orthanc
log "PASS"
