#!/usr/bin/env bash
# test_orthanc_forward.sh — forwarding through Orthanc's modalities
# (plugin/forward-sr, plugin/forward-study), with retries:
#   - each SR reaches the "pacs" modality (a storescp), and the whole study
#     (images and SR) reaches the "archive" modality;
#   - a forward to a modality that is down is retried, then dead: listed on
#     GET /cxr-triage/forwards?state=dead with its error and in the study's
#     page, counted in the status; once the destination is up,
#     POST /cxr-triage/forwards/retry sends it.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc storescp echoscu
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
PACS_PORT=$(free_port)
ARCHIVE_PORT=$(free_port)
DOWN_PORT=$(free_port)

start_storescp "$PACS_PORT" "$WORK/pacs"
PACS_PID=$STORESCP_PID
start_storescp "$ARCHIVE_PORT" "$WORK/archive"
PLUGIN_EXTRA="<forward-sr>modality:pacs modality:down</forward-sr>
  <forward-study>modality:archive</forward-study>
  <retry-seconds>1</retry-seconds><retry-max-attempts>2</retry-max-attempts>" \
    write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json" "\"DicomModalities\": {
    \"pacs\": [\"PACS\", \"127.0.0.1\", $PACS_PORT],
    \"archive\": [\"PACS\", \"127.0.0.1\", $ARCHIVE_PORT],
    \"down\": [\"PACS\", \"127.0.0.1\", $DOWN_PORT] },
  \"DicomScuTimeout\": 5"
start_orthanc
make_instances "$WORK/in" 4 2 901
send_dicom "$WORK"/in/*.dcm || fail "storescu"

files_in() { find "$1" -type f 2>/dev/null | wc -l; }
delivered() { [ "$(files_in "$WORK/pacs")" -ge 2 ] && [ "$(files_in "$WORK/archive")" -ge 6 ]; }
wait_until 90 "2 SRs at pacs and 2 whole studies (4 images + 2 SRs) at archive" delivered
for f in "$WORK"/pacs/*; do
    [ "$(dcm_value "$f" 0008,0060)" = SR ] || fail "pacs received a non-SR: $(basename "$f")"
done
[ "$(for f in "$WORK"/archive/*; do dcm_value "$f" 0008,0060; done | sort | uniq -c | tr -s ' ' | tr '\n' ';')" = " 4 CR; 2 SR;" ] ||
    fail "archive did not receive the 2 studies with their SRs"
log "SRs forwarded to pacs, whole studies to archive"

dead_two() { [ "$(status_field counts.forwards_dead)" -eq 2 ]; }
wait_until 60 "the 2 forwards to the modality that is down marked dead" dead_two
ocurl "/cxr-triage/forwards?state=dead" >"$WORK/dead.json" || fail "GET forwards"
"$CXR_PYTHON" - "$WORK/dead.json" <<'PY' || fail "dead forwards listing"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["count"] == 2, d
for f in d["forwards"]:
    assert f["target"] == "modality:down" and f["state"] == "dead" and f["attempts"] == 2, f
    assert f["last_error"], f
print("dead:", d["forwards"][0]["last_error"][:100])
PY
id=$(study_id_of 2.25.901.1)
ocurl "/cxr-triage/studies/$id" | grep -q '"state":"dead"' || fail "the study's page does not show its dead forward"

# the destination comes up; the dead forwards are retried on request
start_storescp "$DOWN_PORT" "$WORK/down"
curl -sf -X POST "$(ourl /cxr-triage/forwards/retry)" | grep -q '"retried":2' || fail "POST forwards/retry"
retried() { [ "$(files_in "$WORK/down")" -ge 2 ] && [ "$(status_field counts.forwards_dead)" -eq 0 ]; }
wait_until 60 "the retried forwards delivered" retried
[ "$(status_field counts.forwards_done)" -eq 6 ] || fail "forwards done: $(status_field counts.forwards_done), want 6"
log "forwards to a destination that was down: dead after 2 attempts, listed, delivered after POST retry"
stop_orthanc
log "PASS"
