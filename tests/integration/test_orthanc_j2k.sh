#!/usr/bin/env bash
# test_orthanc_j2k.sh — the plugin leaves Orthanc's own JPEG 2000 behaviour
# as it was. The plugin decodes JPEG 2000 for scoring with OpenJPEG on the
# frame's bytes and registers no codec in the DCMTK it shares with Orthanc,
# so what Orthanc answers for a JPEG 2000 instance is the same before and
# after the plugin scored one (Debian's Orthanc 1.10.1 cannot decode JPEG
# 2000 itself: /preview is 415 there):
#   - two JPEG 2000 instances the plugin never reads (an NM .4.90, a CT
#     .4.91: not chest radiographs) are stored, and the status of their
#     /preview and /frames/0/preview noted;
#   - a JPEG 2000 chest radiograph (.4.91) is stored and scored: one SR, its
#     probability equal to what `cxr-triage score` gives the very file
#     Orthanc holds (to 1e-6);
#   - the same requests answer the same statuses, and the scored image's
#     /preview answers what the other .4.91 answered.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc
setup_work
make_model
NM="$CXR_SHARED_DATA/dicom-corpus/orthanc-tests/TransferSyntaxes/1.2.840.10008.1.2.4.90.dcm"
CT="$CXR_SHARED_DATA/dicom-corpus/orthanc-tests/TransferSyntaxes/1.2.840.10008.1.2.4.91.dcm"
CXR="$CXR_SHARED_DATA/dicom-cxr/nema-wg04/RG1_J2KI"
for f in "$NM" "$CT" "$CXR"; do
    [ -f "$f" ] || skip "no $f (../shared/data; see its PROVENANCE.md)"
done
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json"
start_orthanc
[ "$(status_field state)" = ready ] || fail "plugin not ready: $(status_field reason)"

jsonq() { "$CXR_PYTHON" -c "import json, sys; v = json.load(sys.stdin); print($1)"; }
upload() { curl -sf --max-time 60 -X POST --data-binary @"$1" "$(ourl /instances)" | jsonq 'v["ID"]'; }
code() { curl -s -o /dev/null --max-time 60 -w '%{http_code}' "$(ourl "$1")"; }
statuses() { # what Orthanc answers for instance $1
    echo "preview $(code "/instances/$1/preview") frame-preview $(code "/instances/$1/frames/0/preview")"
}

nm=$(upload "$NM") && [ -n "$nm" ] || fail "upload $NM"
ct=$(upload "$CT") && [ -n "$ct" ] || fail "upload $CT"
nm_before=$(statuses "$nm")
ct_before=$(statuses "$ct")
log "before the plugin scored a JPEG 2000 image: NM .4.90: $nm_before; CT .4.91: $ct_before"

cxr=$(upload "$CXR") && [ -n "$cxr" ] || fail "upload $CXR"
study=$(ocurl "/instances/$cxr/study" | jsonq 'v["ID"]')
scored() { [ "$(study_srs "$study" | wc -l)" -ge 1 ] && plugin_idle; }
wait_until 180 "the SR of the JPEG 2000 chest image" scored
score=$(ocurl "/cxr-triage/studies/$study" | jsonq '[i["score"] for i in v["instances"] if i["orthanc_id"] == "'"$cxr"'"][0]')
curl -sf "$(ourl "/instances/$cxr/file")" -o "$WORK/held.dcm" || fail "download the scored file"
"$CXR_BIN" score --config "$WORK/cxr.xml" --json "$WORK/held.dcm" >"$WORK/score.json" 2>/dev/null
"$CXR_PYTHON" - "$WORK/score.json" "$score" <<'PY' || fail "the plugin's probability differs from cxr-triage score"
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert r["analysed"], r
assert abs(r["probability"] - float(sys.argv[2])) <= 1e-6, (r["probability"], sys.argv[2])
print(f"probability {r['probability']:.6f} by both doors")
PY
log "the JPEG 2000 chest image was scored: one SR, probability $score (cxr-triage score agrees)"

nm_after=$(statuses "$nm")
ct_after=$(statuses "$ct")
cxr_after=$(statuses "$cxr")
log "after: NM .4.90: $nm_after; CT .4.91: $ct_after; the scored CR .4.91: $cxr_after"
[ "$nm_after" = "$nm_before" ] || fail "Orthanc answers '$nm_after' for the NM .4.90 after the plugin scored a JPEG 2000 image, '$nm_before' before"
[ "$ct_after" = "$ct_before" ] || fail "Orthanc answers '$ct_after' for the CT .4.91 after the plugin scored a JPEG 2000 image, '$ct_before' before"
[ "$cxr_after" = "$ct_before" ] || fail "Orthanc answers '$cxr_after' for the scored .4.91, '$ct_before' for another .4.91 before"
[ "$(status_field errors)" = 0 ] || fail "plugin errors: $(status_field last_error)"

stop_orthanc
log "PASS"
