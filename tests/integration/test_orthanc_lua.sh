#!/usr/bin/env bash
# test_orthanc_lua.sh — the Lua routing example (plugin/examples/route-urgent.lua)
# in a real Orthanc with the plugin: of two studies, the one the plugin marks
# URGENT is sent (its images and its SR) to a reading destination (DCMTK
# storescp declared in DicomModalities), exactly once; the ROUTINE one is not.
# The model is an untrained test model: the urgent threshold is set in the
# configuration between the probabilities it gives the two studies.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc storescp echoscu
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
READ_PORT=$(free_port)

make_instances "$WORK/in" 4 2 501
write_cxr_conf "$WORK/cxr.xml"
"$CXR_BIN" score --config "$WORK/cxr.xml" --json "$WORK"/in/*.dcm >"$WORK/score.json" 2>/dev/null
"$CXR_PYTHON" - "$WORK/score.json" >"$WORK/plan" <<'PY' || fail "cannot pick the threshold"
import json, sys
best = {}
for r in map(json.loads, open(sys.argv[1])):
    assert r.get("analysed"), r
    best[r["study_instance_uid"]] = max(best.get(r["study_instance_uid"], 0), r["probability"])
(hi, phi), (lo, plo) = sorted(best.items(), key=lambda kv: -kv[1])
assert phi > plo, "the two studies score the same"
print(hi, lo, f"{(phi + plo) / 2:.9f}", f"{plo / 2:.9f}")
PY
read -r URGENT_UID ROUTINE_UID THR_U THR_P <"$WORK/plan"
log "untrained test model: urgent threshold $THR_U (configuration) makes $URGENT_UID URGENT, $ROUTINE_UID not"
write_cxr_conf "$WORK/cxr.xml" "<priority><urgent-threshold>$THR_U</urgent-threshold><priority-threshold>$THR_P</priority-threshold></priority>"

start_storescp "$READ_PORT" "$WORK/reading"
write_orthanc_json "$WORK/orthanc.json" "\"LuaScripts\": [\"$CXR_SOURCE_DIR/plugin/examples/route-urgent.lua\"],
  \"DicomModalities\": { \"reading\": [\"PACS\", \"127.0.0.1\", $READ_PORT] }"
start_orthanc
send_dicom "$WORK"/in/*.dcm || fail "storescu"

received_of() {  # files received for a Study Instance UID
    local f n=0
    for f in "$WORK"/reading/*; do
        [ -f "$f" ] && [ "$(dcm_value "$f" 0020,000d)" = "$1" ] && n=$((n + 1))
    done
    echo "$n"
}
urgent_sent() { [ "$(received_of "$URGENT_UID")" -ge 3 ]; }
wait_until 60 "the URGENT study (2 images + its SR) at the reading destination" urgent_sent
sleep 4   # a second send, or the ROUTINE study, would arrive by now
[ "$(received_of "$URGENT_UID")" -eq 3 ] || fail "URGENT study: $(received_of "$URGENT_UID") files received, want 3 (sent once)"
[ "$(received_of "$ROUTINE_UID")" -eq 0 ] || fail "the ROUTINE study was sent too"
modalities=$(for f in "$WORK"/reading/*; do dcm_value "$f" 0008,0060; done | sort | tr '\n' ' ')
[ "$modalities" = "CR CR SR " ] || fail "received $modalities, want CR CR SR"
id=$(study_id_of "$URGENT_UID")
[ "$(ocurl "/studies/$id/metadata/CxrTriagePriority")" = URGENT ] || fail "metadata of the URGENT study"
[ "$(ocurl "/studies/$id/metadata/CxrTriageRouted")" = reading ] || fail "the script did not mark the study routed"
grep -q "cxr-triage: sending study $id" "$WORK/orthanc.log" || fail "the script's log line is missing"
log "URGENT study sent once to the reading destination (images and SR); ROUTINE study kept"
stop_orthanc
log "PASS"
