#!/usr/bin/env bash
# test_orthanc_delete.sh — the plugin never brings back what was deleted.
# In one Orthanc, 20 times: an 8-image chest study arrives and its patient
# is deleted while the plugin works on it, at three kinds of moment taken in
# turn:
#   - "scoring": the plugin holds (test hook CXR_ORTHANC_TEST_HOLD) after it
#     recorded the first batch of images; the patient is deleted; the plugin
#     must stop, post no SR and write no metadata;
#   - "post": the plugin holds after it checked that the study exists, just
#     before it posts the SR; the patient is deleted, so the post re-creates
#     study and patient around the SR; the plugin must see that and delete
#     the SR again;
#   - "free": no hold; the patient is deleted as soon as the plugin queued
#     the study (wherever the worker then is).
# Then, once the plugin is idle (queue empty, Orthanc's change log read to
# its end): Orthanc holds no patient, study or instance, and the plugin's
# worklist lists none of the deleted studies (their pending work dropped).
# A last study, not deleted, still gets exactly one SR and its metadata.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
ROUNDS=20
PER_STUDY=8
write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json"
export CXR_ORTHANC_TEST_HOLD="$WORK/hold"
start_orthanc
[ "$(status_field state)" = ready ] || fail "plugin not ready: $(status_field reason)"

# ROUNDS studies of PER_STUDY images (instance i belongs to study i % ROUNDS)
# and a control study
make_instances "$WORK/del" $((ROUNDS * PER_STUDY)) "$ROUNDS" 4242
make_instances "$WORK/keep" "$PER_STUDY" 1 4343

jsonq() { "$CXR_PYTHON" -c "import json, sys; v = json.load(sys.stdin); print($1)"; }
# idle: nothing queued and Orthanc's change log read to its end (nothing
# after the plugin's cursor; a deletion also removes the deleted resources'
# entries from the log, so its last Seq may be below the cursor)
idle() {
    [ "$(status_field queue.depth)" = 0 ] &&
        [ "$(ocurl "/changes?since=$(status_field queue.change_seq)&limit=1" | jsonq 'len(v["Changes"])')" = 0 ]
}
count() { ocurl "/$1" | jsonq 'len(v)'; }
held() { [ -f "$WORK/hold.held" ]; }
plugin_queued() { # plugin_queued STUDY_UID: the plugin has the study queued (or further)
    local st
    st=$(curl -s --max-time 30 "$(ourl "/cxr-triage/studies/$1")" | jsonq 'v.get("state", "")' 2>/dev/null)
    [ -n "$st" ] && [ "$st" != waiting ]
}
delete_patient_of() { # delete_patient_of ORTHANC_STUDY_ID
    local pat
    pat=$(ocurl "/studies/$1" | jsonq 'v["ParentPatient"]') || fail "study $1 not in Orthanc before its deletion"
    curl -sf --max-time 60 -X DELETE "$(ourl "/patients/$pat")" >/dev/null || fail "DELETE /patients/$pat"
}

declare -A tried=()
for r in $(seq 0 $((ROUNDS - 1))); do
    files=()
    for k in $(seq 0 $((PER_STUDY - 1))); do
        files+=("$WORK/del/$(printf 'img%05d.dcm' $((r + 1 + k * ROUNDS)))")
    done
    uid="2.25.4242.$((r + 1))"
    case $((r % 3)) in 0) mode=scoring ;; 1) mode=post ;; *) mode=free ;; esac
    tried[$mode]=$((${tried[$mode]:-0} + 1))
    if [ "$mode" != free ]; then
        echo "$mode" >"$WORK/hold"
    fi
    send_dicom "${files[@]}" || fail "storescu to Orthanc failed (round $r)"
    if [ "$mode" = free ]; then
        wait_until 120 "the plugin to queue study $uid" plugin_queued "$uid"
        delete_patient_of "$(study_id_of "$uid")"
    else
        wait_until 120 "the plugin to hold study $uid at '$mode'" held
        sid=$(cat "$WORK/hold.held")
        delete_patient_of "$sid"
        rm -f "$WORK/hold.held"
    fi
    wait_until 120 "the plugin idle after round $r ($mode)" idle
done
log "deleted $ROUNDS studies while the plugin worked on them (scoring ${tried[scoring]}, before the post ${tried[post]}, anywhere ${tried[free]})"

# the plugin is idle: an SR it posted (the only way a deleted study comes
# back) is in Orthanc by now
np=$(count patients)
ns=$(count studies)
ni=$(count instances)
log "left in Orthanc: $np patient(s), $ns study(ies), $ni instance(s)"
[ "$np" = 0 ] && [ "$ns" = 0 ] && [ "$ni" = 0 ] ||
    fail "deleted studies came back: $np patients, $ns studies, $ni instances ($(ocurl /studies | tr -d ' \n'))"
nw=$(ocurl /cxr-triage/worklist | jsonq 'v["count"]')
[ "$nw" = 0 ] || fail "the plugin still lists $nw deleted studies: their work was not dropped"
nundo=$(grep -c 'was deleted again' "$WORK/orthanc.log")
nstop=$(grep -c 'while it was being scored' "$WORK/orthanc.log")
log "SRs deleted again after a racing deletion: $nundo; scorings stopped: $nstop"
[ "$nundo" -ge "${tried[post]}" ] || fail "only $nundo SRs deleted again for ${tried[post]} deletions just before the post"
[ "$nstop" -ge "${tried[scoring]}" ] || fail "only $nstop scorings stopped for ${tried[scoring]} deletions during scoring"

# a study nobody deletes: one SR, its metadata (the checks leave it alone)
send_dicom "$WORK"/keep/*.dcm || fail "storescu to Orthanc failed (control study)"
kid=""
has_sr() { kid=$(study_id_of 2.25.4343.1) && [ -n "$kid" ] && [ "$(study_srs "$kid" | wc -l)" -ge 1 ]; }
wait_until 120 "an SR in the control study" has_sr
wait_until 120 "the plugin idle after the control study" idle
[ "$(study_srs "$kid" | wc -l)" = 1 ] || fail "the control study has $(study_srs "$kid" | wc -l) SRs"
[ "$(ocurl "/studies/$kid/instances" | jsonq 'len(v)')" = $((PER_STUDY + 1)) ] ||
    fail "the control study lost images or SR"
ocurl "/studies/$kid/metadata/CxrTriagePriority" >/dev/null || fail "the control study has no metadata"
log "a study not deleted: its images, one SR and its metadata"
[ "$(status_field errors)" = 0 ] || fail "plugin errors: $(status_field last_error)"

stop_orthanc
log "PASS"
