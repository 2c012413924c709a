#!/usr/bin/env bash
# test_node_basic.sh — the node with real DICOM peers (DCMTK echoscu,
# storescu, storescp; dciodvfy):
#   - C-ECHO succeeds; an unknown calling AE and a wrong called AE are rejected
#     at association time;
#   - the real chest files of ../shared/data/dicom-cxr (synthetic CR images on
#     a clean clone) give exactly one SR per study with an image at a storescp
#     destination, each passing dciodvfy and referencing its study and exactly
#     its images: those `cxr-triage score` analyses and those it does not (both
#     doors agree; issue 16: a study with nothing analysed gets an SR too);
#   - a copy of each SR in sr/output-dir;
#   - the worklist, a study page (a lateral view stays listed with its reason,
#     no patient ID without permission) and the metrics;
#   - a late lateral view of a reported study gives a new SR naming its
#     predecessor and listing the lateral view as not analysed with its reason;
#     a late frontal image the same, analysed;
#     (a study of a PA, a lateral and a Secondary Capture image and a study
#     with nothing analysed: test_node_mixed_study.sh);
#   - SIGHUP with a broken configuration or a missing model is refused and the
#     node keeps serving; a good one is taken and scoring goes on;
#   - SIGTERM: clean exit 0.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump dciodvfy curl
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
start_storescp "$DEST_PORT" "$WORK/recv"
write_conf "$WORK/node.xml" "<allow><ae-title>CR01</ae-title></allow>
  <sr><output-dir>$WORK/srcopy</output-dir></sr>"
start_node "$WORK/node.xml"

# ---- association policy
check "C-ECHO from an allowed calling AE" echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
out=$(echoscu -aet STRANGER -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" 2>&1) && fail "unknown calling AE accepted"
echo "$out" | grep -q "Calling AE Title Not Recognized" || fail "unknown calling AE: wrong rejection: $out"
out=$(echoscu -aet CR01 -aec NOTME 127.0.0.1 "$DICOM_PORT" 2>&1) && fail "wrong called AE accepted"
echo "$out" | grep -q "Called AE Title Not Recognized" || fail "wrong called AE: wrong rejection: $out"
[ "$(metric 'cxr_node_associations_total{result="rejected"}')" -ge 2 ] || fail "metrics: rejected associations"
log "association policy: echo ok, unknown calling AE and wrong called AE rejected"

# ---- the inputs
FILES=()
if [ -f "$CXR_SHARED_DATA/dicom-cxr/MANIFEST.tsv" ]; then
    while IFS=$'\t' read -r path _; do
        [ "$path" = path ] || FILES+=("$CXR_SHARED_DATA/dicom-cxr/$path")
    done <"$CXR_SHARED_DATA/dicom-cxr/MANIFEST.tsv"
    log "sending the ${#FILES[@]} real chest files of $CXR_SHARED_DATA/dicom-cxr"
else
    log "no $CXR_SHARED_DATA/dicom-cxr (a fresh clone): synthetic CR images instead"
    make_instances "$WORK/in" 6 3 101
    FILES=("$WORK"/in/*.dcm)
fi
# What the other door (cxr-triage score) analyses, per study.
"$CXR_BIN" score --config "$WORK/node.xml" --json "${FILES[@]}" >"$WORK/score.json" 2>/dev/null
"$CXR_PYTHON" - "$WORK/score.json" "$WORK/expected" <<'PY' || fail "cannot read score --json"
import json, os, sys
studies = {}
# The SR lists every image whose header was read, analysed or not, that a
# chest radiograph triage looks at (cxr_dicom_gate_concerns): an image whose
# Modality the gate could admit. A CT or an SR sent along is not listed.
NON_IMAGE = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
             "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.66")
READ = ("", "CR", "DX", "OT")  # gate/modalities CR DX; SC admitted here, so OT too
for line in open(sys.argv[1]):
    r = json.loads(line)
    cls = r.get("sop_class_uid") or ""
    if (r.get("study_instance_uid") and r.get("series_instance_uid") and r.get("sop_instance_uid")
            and cls and not cls.startswith(NON_IMAGE) and r.get("modality", "") in READ):
        studies.setdefault(r["study_instance_uid"], set()).add(r["sop_instance_uid"])
os.makedirs(sys.argv[2])
for s, uids in studies.items():
    with open(os.path.join(sys.argv[2], s), "w") as f:
        f.write("\n".join(sorted(uids)) + "\n")
PY
NSTUDIES=$(ls "$WORK/expected" | wc -l)
[ "$NSTUDIES" -ge 1 ] || fail "no study with an image among the inputs"

# Compressed files are sent as they are (one association per transfer syntax).
send_files CR01 "$DICOM_PORT" "${FILES[@]}" || { cat "$WORK/storescu.log"; fail "storescu failed"; }

sr_count() { [ "$(count_files "$WORK/recv")" -ge "$NSTUDIES" ]; }
wait_until 120 "$NSTUDIES SR(s) at the destination" sr_count
sleep 3   # nothing more may come: one SR per study
[ "$(count_files "$WORK/recv")" -eq "$NSTUDIES" ] ||
    fail "$(count_files "$WORK/recv") SRs for $NSTUDIES studies"
for sr in "$WORK"/recv/*; do
    sr_valid "$sr" || fail "dciodvfy finds errors in $(basename "$sr")"
    [ "$(dcm_value "$sr" 0008,0060)" = SR ] || fail "$(basename "$sr") is not an SR"
    study=$(dcm_value "$sr" 0020,000d)
    [ -f "$WORK/expected/$study" ] || fail "SR for a study that has no image: $study"
    [ ! -f "$WORK/seen.$study" ] || fail "two SRs for study $study"
    touch "$WORK/seen.$study"
    sr_refs "$sr" >"$WORK/refs"
    diff -u "$WORK/expected/$study" "$WORK/refs" >/dev/null ||
        fail "SR of study $study references $(tr '\n' ' ' <"$WORK/refs") instead of $(tr '\n' ' ' <"$WORK/expected/$study")"
done
for sr in "$WORK"/recv/*; do
    [ -f "$WORK/srcopy/$(dcm_value "$sr" 0008,0018).dcm" ] || fail "no copy of $(basename "$sr") in sr/output-dir"
done
log "$NSTUDIES studies -> exactly one valid SR each, referencing every image of the study"

# ---- worklist, study page, metrics
curl -sf "http://127.0.0.1:$HTTP_PORT/worklist" >"$WORK/worklist.json" || fail "GET /worklist"
"$CXR_PYTHON" - "$WORK/worklist.json" "$WORK/expected" <<'PY' || fail "worklist content"
import json, os, sys
w = json.load(open(sys.argv[1]))
order = {"URGENT": 3, "PRIORITY": 2, "ROUTINE": 1, "NOT_ANALYSED": 0}
studies = {s["study_instance_uid"]: s for s in w["studies"]}
for uid in os.listdir(sys.argv[2]):
    assert uid in studies, f"study {uid} missing from the worklist"
    assert studies[uid]["sr_count"] == 1, studies[uid]
    assert "patient_id" not in studies[uid], "patient ID shown without http/show-patient-id"
keys = [(order[s["priority"]], s["score"] if s["score"] is not None else -1, -s["first_received_ms"])
        for s in w["studies"]]
assert keys == sorted(keys, reverse=True), "worklist not ordered by priority, score, arrival"
PY
[ "$(metric cxr_node_srs_created_total)" -eq "$NSTUDIES" ] || fail "metrics: srs_created"
[ "$(metric 'cxr_node_sr_deliveries_total{result="delivered"}')" -eq "$NSTUDIES" ] || fail "metrics: delivered"
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q ok || fail "GET /healthz"

# ---- a late lateral view after the SR: not analysed, listed with its reason
# ---- on the study page and in a successor SR; then a late frontal image
make_instances "$WORK/s1" 1 1 202
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/s1/*.dcm >/dev/null 2>&1 || fail "storescu s1"
want=$((NSTUDIES + 1))
sr_count2() { [ "$(count_files "$WORK/recv")" -ge "$want" ]; }
wait_until 60 "the SR of a new study" sr_count2
first_sr=$(grep -l "2.25.202.1.1" "$WORK"/recv/* | head -n 1)
first_uid=$(dcm_value "$first_sr" 0008,0018)
VIEW=LL FIRST=1 make_instances "$WORK/s1" 1 1 202
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK/s1/img00002.dcm" >/dev/null 2>&1 || fail "storescu lateral"
lateral_done() {
    curl -s "http://127.0.0.1:$HTTP_PORT/studies/2.25.202.1" | grep -q '"reason":"[^"]*lateral\|"reason":"[^"]*LL'
}
wait_until 30 "the lateral view listed as not analysed" lateral_done
want=$((want + 1))
wait_until 60 "the successor SR listing the lateral view" sr_count2
lat_sr=$(ls -t "$WORK"/recv/* | head -n 1)
lat_uid=$(dcm_value "$lat_sr" 0008,0018)
dcmdump "$lat_sr" | grep -q "\[$first_uid\]" || fail "the lateral view's SR does not name $first_uid"
dsrdump +Pl "$lat_sr" | grep -q '"not analysed: lateral view (ViewPosition LL)"' ||
    fail "the lateral view's SR does not give its reason"
[ "$(dsrdump "$lat_sr" | grep -c 'Measurement not attempted')" -eq 1 ] ||
    fail "the lateral view's SR: not exactly one image marked Measurement not attempted"
printf '2.25.202.1.1\n2.25.202.1.2\n' >"$WORK/want_refs"
sr_refs "$lat_sr" | grep -v "^$first_uid\$" >"$WORK/refs"
diff -u "$WORK/want_refs" "$WORK/refs" >/dev/null || fail "the lateral view's SR references $(tr '\n' ' ' <"$WORK/refs")"
sr_valid "$lat_sr" || fail "the lateral view's SR fails dciodvfy"
FIRST=2 make_instances "$WORK/s1" 1 1 202
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK/s1/img00003.dcm" >/dev/null 2>&1 || fail "storescu late"
want=$((want + 1))
wait_until 60 "the successor SR" sr_count2
second_sr=$(ls -t "$WORK"/recv/* | head -n 1)
[ "$(dcm_value "$second_sr" 0020,000d)" = 2.25.202.1 ] || fail "successor SR in the wrong study"
dcmdump "$second_sr" | grep -q "PredecessorDocumentsSequence" || fail "successor SR has no Predecessor Documents Sequence"
dcmdump "$second_sr" | grep -q "\[$lat_uid\]" || fail "successor SR does not name $lat_uid"
printf '2.25.202.1.1\n2.25.202.1.2\n2.25.202.1.3\n' >"$WORK/want_refs"
sr_refs "$second_sr" | grep -v "^$lat_uid\$" >"$WORK/refs"
diff -u "$WORK/want_refs" "$WORK/refs" >/dev/null || fail "successor SR references $(tr '\n' ' ' <"$WORK/refs")"
sr_valid "$second_sr" || fail "successor SR fails dciodvfy"
log "late images: each gives a successor SR naming its predecessor; the lateral view listed in it as not analysed with its reason"

# ---- SIGHUP with a broken configuration: refused, still serving
cp "$WORK/node.xml" "$WORK/node.good"
echo "<cxr-triage><node><port>oops</port>" >"$WORK/node.xml"
kill -HUP "$NODE_PID"
wait_until 20 "the refused reload in the log" grep -q "reload refused" "$WORK/node.log"
check "C-ECHO after a refused reload" echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
sed "s|$WORK/model.safetensors|$WORK/no-such-model.safetensors|" "$WORK/node.good" >"$WORK/node.xml"
kill -HUP "$NODE_PID"
refused_twice() { [ "$(grep -c "reload refused" "$WORK/node.log")" -ge 2 ]; }
wait_until 20 "the refused reload of a missing model" refused_twice
check "C-ECHO after a refused model" echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
# the good configuration again, now keeping every instance as a file
sed 's|</node>|<spool-inline-max-kb>0</spool-inline-max-kb></node>|' "$WORK/node.good" >"$WORK/node.xml"
grep -q "<spool-inline-max-kb>0<" "$WORK/node.xml" || fail "test setup: no inline setting"
kill -HUP "$NODE_PID"
wait_until 20 "a reload" grep -q "reloaded:" "$WORK/node.log"
[ "$(metric cxr_node_reloads_failed_total)" -eq 2 ] || fail "metrics: refused reloads not counted"
[ "$(metric cxr_node_reloads_total)" -eq 1 ] || fail "metrics: reload not counted"
# still scoring with the reloaded engine
FIRST=3 make_instances "$WORK/s1" 1 1 202
analysed_before=$(metric cxr_node_instances_analysed_total)
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK/s1/img00004.dcm" >/dev/null 2>&1 || fail "storescu after reload"
after_reload() { [ "$(metric cxr_node_instances_analysed_total)" -eq $((analysed_before + 1)) ]; }
wait_until 30 "scoring after the reload" after_reload
# small instances were kept in the job store until the reload, as files after it
db() { sqlite3 "$WORK/spool/jobs.sqlite" "$1"; }
[ "$(db "SELECT in_store FROM instances WHERE sop_instance_uid='2.25.202.1.3'")" = 1 ] ||
    fail "a small instance before the reload was not kept in the job store"
[ "$(db "SELECT in_store FROM instances WHERE sop_instance_uid='2.25.202.1.4'")" = 0 ] ||
    fail "after reloading spool-inline-max-kb 0 a small instance was still kept in the job store"
[ -f "$WORK/spool/$(db "SELECT path FROM instances WHERE sop_instance_uid='2.25.202.1.4'")" ] ||
    fail "after reloading spool-inline-max-kb 0: no spool file"
spool_consistent "$WORK/spool"
log "spool-inline-max-kb reloaded: $SPOOL_KEPT instances kept in the job store, then files ($SPOOL_FILES)"
stop_node
grep -q "stopped" "$WORK/node.log" || fail "no clean stop in the log"
log "PASS"
