#!/usr/bin/env bash
# test_orthanc_mixed_study.sh — issue 16, the plugin's door: with the shipped
# gate (Secondary Capture not admitted), one study of a PA, a lateral and a
# Secondary Capture (modality CR), with a CT sent along, gets one SR in
# Orthanc listing the three radiographs (the lateral and the SC as not
# analysed, Measurement not attempted, with their reasons) and not the CT,
# passing dciodvfy; a study whose only image was refused gets an SR saying so
# (priority NOT_ANALYSED).
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc dciodvfy
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
ALLOW_SC=false write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json"
start_orthanc

make_instances "$WORK/m" 1 1 311                                   # PA
VIEW=LL FIRST=1 make_instances "$WORK/m" 1 1 311                   # lateral
SOPCLASS=SC FIRST=2 make_instances "$WORK/m" 1 1 311               # Secondary Capture
SOPCLASS=CT MODALITY=CT FIRST=3 make_instances "$WORK/m" 1 1 311   # a CT sent along
VIEW=LL make_instances "$WORK/l" 1 1 312                           # a lateral only
# the CT in a series of its own, as a modality would send it
"$CXR_PYTHON" - "$WORK/m/img00004.dcm" <<'PY' || fail "CT series"
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1]); ds.SeriesInstanceUID = "2.25.311.1.9"; ds.save_as(sys.argv[1])
PY
send_dicom "$WORK"/m/*.dcm "$WORK"/l/*.dcm || fail "storescu"
both() {
    local a b
    a=$(study_id_of 2.25.311.1) b=$(study_id_of 2.25.312.1)
    [ -n "$a" ] && [ -n "$b" ] && [ "$(study_srs "$a" | wc -l)" -ge 1 ] &&
        [ "$(study_srs "$b" | wc -l)" -ge 1 ] && plugin_idle
}
wait_until 120 "an SR in each study" both
id=$(study_id_of 2.25.311.1)
[ "$(study_srs "$id" | wc -l)" -eq 1 ] || fail "the mixed study has $(study_srs "$id" | wc -l) SRs"
curl -sf "$(ourl "/instances/$(study_srs "$id")/file")" -o "$WORK/mixed.dcm" || fail "download the SR"
printf '2.25.311.1.1\n2.25.311.1.2\n2.25.311.1.3\n' >"$WORK/want"
sr_refs "$WORK/mixed.dcm" >"$WORK/refs"
diff -u "$WORK/want" "$WORK/refs" >/dev/null || fail "the SR references $(tr '\n' ' ' <"$WORK/refs")"
[ "$(dsrdump "$WORK/mixed.dcm" | grep -c 'Measurement not attempted')" -eq 2 ] ||
    fail "the SR: not two images marked Measurement not attempted"
dsrdump +Pl "$WORK/mixed.dcm" | grep -q '"not analysed: lateral view (ViewPosition LL)"' || fail "no lateral reason"
dsrdump +Pl "$WORK/mixed.dcm" | grep -q 'not analysed: Secondary Capture.*(gate/allow-secondary-capture)' ||
    fail "no Secondary Capture reason naming gate/allow-secondary-capture"
sr_valid "$WORK/mixed.dcm" || fail "the SR fails dciodvfy"
log "mixed study: one SR in Orthanc listing the PA, the lateral and the SC (with reasons), not the CT; dciodvfy clean"

lid=$(study_id_of 2.25.312.1)
curl -sf "$(ourl "/instances/$(study_srs "$lid" | head -n 1)/file")" -o "$WORK/lat.dcm" || fail "download"
dsrdump "$WORK/lat.dcm" | grep -q '"Triage priority")="NOT_ANALYSED"' || fail "lateral-only SR: priority not NOT_ANALYSED"
sr_valid "$WORK/lat.dcm" || fail "lateral-only SR fails dciodvfy"
log "a study with nothing analysed: an SR saying so"
stop_orthanc
log "PASS"
