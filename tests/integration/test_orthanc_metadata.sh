#!/usr/bin/env bash
# test_orthanc_metadata.sh — the plugin writes study metadata only where
# plugin/metadata says, and by default only where the gate looked:
#   - gated (default): an MR study gets no CxrTriage* metadata at all; a CR
#     chest PA study gets its result (level >= 1); a CR lateral study, which
#     the gate looked at and refused, gets level 0 (NOT_ANALYSED);
#   - all (after POST /cxr-triage/reload): a new MR study gets level 0;
#   - none: a new CR PA study is scored (its SR stored) but gets no metadata.
# GET /cxr-triage/status names the setting in force (metadata.policy).
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json"
start_orthanc
[ "$(status_field state)" = ready ] || fail "plugin not ready: $(status_field reason)"
[ "$(status_field metadata.policy)" = gated ] || fail "status: metadata.policy is '$(status_field metadata.policy)', want gated"

make_instances "$WORK/pa" 2 1 5101
VIEW=LL make_instances "$WORK/ll" 2 1 5102
make_instances "$WORK/mr" 2 1 5103
make_instances "$WORK/mr2" 1 1 5105
make_instances "$WORK/pa2" 1 1 5104
"$CXR_PYTHON" - "$WORK"/mr/*.dcm "$WORK"/mr2/*.dcm <<'PY' || fail "cannot make the MR study"
import sys, pydicom
for f in sys.argv[1:]:  # CR images made MR
    ds = pydicom.dcmread(f)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.Modality, ds.BodyPartExamined = "MR", "HEAD"
    del ds.ViewPosition
    ds.save_as(f, write_like_original=False)
PY

jsonq() { "$CXR_PYTHON" -c "import json, sys; v = json.load(sys.stdin); print($1)"; }
# the CxrTriage* metadata names a study has, space-separated
cxr_md() { ocurl "/studies/$1/metadata" | jsonq '" ".join(sorted(m for m in v if m.startswith("CxrTriage")))'; }
plugin_state() { curl -s --max-time 30 "$(ourl "/cxr-triage/studies/$1")" | jsonq 'v.get("state", "")' 2>/dev/null; }
all_done() {
    local id
    for id in "$@"; do [ "$(plugin_state "$id")" = done ] || return 1; done
    plugin_idle
}

send_dicom "$WORK"/pa/*.dcm "$WORK"/ll/*.dcm "$WORK"/mr/*.dcm || fail "storescu to Orthanc failed"
pa=$(study_id_of 2.25.5101.1)
ll=$(study_id_of 2.25.5102.1)
mr=$(study_id_of 2.25.5103.1)
[ -n "$pa" ] && [ -n "$ll" ] && [ -n "$mr" ] || fail "the three studies are not all in Orthanc"
wait_until 180 "the plugin done with the three studies" all_done "$pa" "$ll" "$mr"

[ -z "$(cxr_md "$mr")" ] || fail "gated: the MR study got metadata: $(cxr_md "$mr")"
[ "$(study_srs "$mr" | wc -l)" = 0 ] || fail "the MR study got an SR"
[ "$(ocurl "/studies/$pa/metadata/CxrTriageLevel")" -ge 1 ] || fail "gated: the CR PA study has no level"
ocurl "/studies/$pa/metadata/CxrTriageSr" >/dev/null || fail "gated: the CR PA study has no CxrTriageSr"
[ "$(ocurl "/studies/$ll/metadata/CxrTriageLevel")" = 0 ] || fail "gated: the CR lateral study has no level 0"
log "gated: MR study untouched; CR PA: $(cxr_md "$pa"); CR lateral: level 0"

# all: a new MR study gets level 0
PLUGIN_EXTRA="<metadata>all</metadata>" write_cxr_conf "$WORK/cxr.xml"
curl -sf -X POST "$(ourl /cxr-triage/reload)" >/dev/null || fail "POST reload"
policy_is() { [ "$(status_field metadata.policy)" = "$1" ]; }
wait_until 60 "the reloaded configuration (metadata all)" policy_is all
send_dicom "$WORK"/mr2/*.dcm || fail "storescu to Orthanc failed"
mr2=$(study_id_of 2.25.5105.1)
[ -n "$mr2" ] || fail "the second MR study is not in Orthanc"
wait_until 120 "the plugin done with the second MR study" all_done "$mr2"
[ "$(ocurl "/studies/$mr2/metadata/CxrTriageLevel")" = 0 ] || fail "all: the MR study has no level 0"
log "all: an MR study got $(cxr_md "$mr2")"

# none: a new CR PA study is scored, its SR stored, without metadata
PLUGIN_EXTRA="<metadata>none</metadata>" write_cxr_conf "$WORK/cxr.xml"
curl -sf -X POST "$(ourl /cxr-triage/reload)" >/dev/null || fail "POST reload"
wait_until 60 "the reloaded configuration (metadata none)" policy_is none
send_dicom "$WORK"/pa2/*.dcm || fail "storescu to Orthanc failed"
pa2=$(study_id_of 2.25.5104.1)
[ -n "$pa2" ] || fail "the last CR study is not in Orthanc"
has_sr() { [ "$(study_srs "$pa2" | wc -l)" -ge 1 ]; }
wait_until 180 "the SR of the last CR study" has_sr
wait_until 60 "the plugin done with the last CR study" all_done "$pa2"
[ -z "$(cxr_md "$pa2")" ] || fail "none: the CR study got metadata: $(cxr_md "$pa2")"
log "none: a scored CR study with its SR and no metadata"
[ "$(status_field errors)" = 0 ] || fail "plugin errors: $(status_field last_error)"

stop_orthanc
log "PASS"
