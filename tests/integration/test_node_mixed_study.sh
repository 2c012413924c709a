#!/usr/bin/env bash
# test_node_mixed_study.sh — issue 16: what the PACS sees when the AI did not
# look at every image. With the shipped gate (Secondary Capture not admitted):
#   - one study of a PA, a lateral and a Secondary Capture (modality CR) gets
#     one SR listing all three: the PA with its finding, the lateral and the
#     SC as not analysed (Measurement not attempted) with their reasons,
#     naming keys as the configuration spells them; it passes dciodvfy;
#   - a study whose only image was refused still gets an SR saying so
#     (priority NOT_ANALYSED), unless sr/report-not-analysed is false;
#   - a CT sent along is not listed (not a radiograph a chest triage reads).
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp dcmdump dsrdump dciodvfy curl
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
start_storescp "$DEST_PORT" "$WORK/recv"
ALLOW_SC=false write_conf "$WORK/node.xml" "<allow><ae-title>CR01</ae-title></allow>"
start_node "$WORK/node.xml"

make_instances "$WORK/m" 1 1 301                                   # PA
VIEW=LL FIRST=1 make_instances "$WORK/m" 1 1 301                   # lateral
SOPCLASS=SC FIRST=2 make_instances "$WORK/m" 1 1 301               # Secondary Capture
SOPCLASS=CT MODALITY=CT FIRST=3 make_instances "$WORK/m" 1 1 301   # a CT sent along
VIEW=LL make_instances "$WORK/l" 1 1 302                           # a study of a lateral only
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/m/*.dcm "$WORK"/l/*.dcm \
    >/dev/null 2>&1 || fail "storescu"
two_srs() { [ "$(count_files "$WORK/recv")" -ge 2 ]; }
wait_until 60 "the SRs of the mixed and the lateral-only study" two_srs

mixed=$(grep -l "2.25.301.1.1" "$WORK"/recv/* | head -n 1)
[ -n "$mixed" ] || fail "no SR for the mixed study"
printf '2.25.301.1.1\n2.25.301.1.2\n2.25.301.1.3\n' >"$WORK/want"
sr_refs "$mixed" >"$WORK/refs"
diff -u "$WORK/want" "$WORK/refs" >/dev/null || fail "mixed study's SR references $(tr '\n' ' ' <"$WORK/refs")"
[ "$(dsrdump "$mixed" | grep -c 'Measurement not attempted')" -eq 2 ] ||
    fail "mixed study's SR: not two images marked Measurement not attempted"
[ "$(dsrdump "$mixed" | grep -c '"Certainty of Finding")="[0-9]')" -eq 1 ] ||
    fail "mixed study's SR: not one measured certainty"
dsrdump +Pl "$mixed" | grep -q '"not analysed: lateral view (ViewPosition LL)"' || fail "no lateral reason"
dsrdump +Pl "$mixed" | grep -q 'not analysed: Secondary Capture.*(gate/allow-secondary-capture)' ||
    fail "no Secondary Capture reason naming gate/allow-secondary-capture"
sr_valid "$mixed" || fail "mixed study's SR fails dciodvfy"
curl -sf "http://127.0.0.1:$HTTP_PORT/studies/2.25.301.1" | grep -q '"images_not_analysed":3' ||
    fail "the study page does not count the lateral, the SC and the CT as not analysed"
log "mixed study: one SR listing the PA (analysed), the lateral and the SC (not analysed, with reasons); the CT not listed; dciodvfy clean"

lat=$(grep -l "2.25.302.1.1" "$WORK"/recv/* | head -n 1)
[ -n "$lat" ] || fail "no SR for the study with nothing analysed"
dsrdump "$lat" | grep -q '"Triage priority")="NOT_ANALYSED"' || fail "lateral-only SR: priority not NOT_ANALYSED"
dsrdump +Pl "$lat" | grep -q '"not analysed: lateral view (ViewPosition LL)"' || fail "lateral-only SR lacks the reason"
sr_valid "$lat" || fail "lateral-only SR fails dciodvfy"
log "a study with nothing analysed: an SR saying so, priority NOT_ANALYSED"
stop_node

# ---- sr/report-not-analysed false: no SR for such a study
sed -i 's#</cxr-triage>#<sr><report-not-analysed>false</report-not-analysed></sr></cxr-triage>#' "$WORK/node.xml"
start_node "$WORK/node.xml"
VIEW=LL make_instances "$WORK/l2" 1 1 303
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/l2/*.dcm >/dev/null 2>&1 || fail "storescu l2"
reported() { grep -q "study 2.25.303.1: nothing analysed and sr/report-not-analysed is false, no SR" "$WORK/node.log"; }
wait_until 60 "the report decision of the lateral-only study" reported
[ "$(count_files "$WORK/recv")" -eq 2 ] || fail "an SR was made with sr/report-not-analysed false"
log "sr/report-not-analysed false: no SR for a study with nothing analysed"
stop_node
log "PASS"
