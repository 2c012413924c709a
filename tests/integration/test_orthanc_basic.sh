#!/usr/bin/env bash
# test_orthanc_basic.sh — the plugin in a real Orthanc (Debian's orthanc
# package, own temporary configuration, ports and storage):
#   - storescu sends the real chest files of ../shared/data/dicom-cxr
#     (tests/data and synthetic CR images on a clean clone);
#   - each study with an image gets exactly one SR, stored in the same study
#     (new series), passing dciodvfy and referencing exactly its images: those
#     `cxr-triage score` analyses and those it does not (issue 16: a study
#     with nothing analysed gets an SR saying so);
#   - the probability of every image equals what `cxr-triage score --json`
#     reports for the very file Orthanc holds (downloaded back), to 1e-6:
#     both doors give the same result;
#   - study metadata (priority, level, score, model SHA-256, time, SR UID);
#   - GET /cxr-triage/worklist orders studies by priority, score, arrival and
#     gives each the priority computed here from those probabilities. The
#     model is an untrained test model: its thresholds are set in the
#     configuration (priority section) between the probabilities it gives
#     these files, so that the studies spread over URGENT, PRIORITY, ROUTINE;
#   - POST /cxr-triage/studies/{uid}/score looks at a scored study again
#     without a second SR (same images, same model); 404 for an unknown one;
#   - GET /cxr-triage/status and the Orthanc metrics count them; Orthanc
#     stops cleanly (exit 0) with the plugin loaded.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc dciodvfy
setup_work
make_model
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
pick_chest_files
log "$SOURCE"

# ---- thresholds between the probabilities of the untrained model
write_cxr_conf "$WORK/cxr.xml"
"$CXR_BIN" score --config "$WORK/cxr.xml" --json "${FILES[@]}" >"$WORK/score-orig.json" 2>/dev/null
"$CXR_PYTHON" - "$WORK/score-orig.json" >"$WORK/thresholds" <<'PY' || fail "cannot pick thresholds"
import json, sys
best = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("analysed"):
        s = r["study_instance_uid"]
        best[s] = max(best.get(s, 0.0), r["probability"])
m = sorted(best.values(), reverse=True)
assert m, "no analysable image"
if len(m) == 1:
    print(m[0] / 2, min(1.0, m[0] + 0.01)); sys.exit(0)
# urgent: the widest gap among the top three; priority: the widest gap below it
gaps = [(m[i] - m[i + 1], i) for i in range(len(m) - 1)]
gu, iu = max(g for g in gaps if g[1] <= 2)
rest = [g for g in gaps if g[1] > iu]
thr_u = (m[iu] + m[iu + 1]) / 2
thr_p = (m[max(rest)[1]] + m[max(rest)[1] + 1]) / 2 if rest else m[-1] / 2
print(f"{thr_p:.9f} {thr_u:.9f}")
PY
read -r THR_P THR_U <"$WORK/thresholds"
log "untrained test model: priority threshold $THR_P, urgent threshold $THR_U (set in the configuration)"
write_cxr_conf "$WORK/cxr.xml" "<priority><urgent-threshold>$THR_U</urgent-threshold><priority-threshold>$THR_P</priority-threshold></priority>"

write_orthanc_json "$WORK/orthanc.json"
start_orthanc
[ "$(status_field state)" = ready ] || fail "plugin not ready: $(status_field reason)"

send_dicom "${FILES[@]}" || { tail -n 20 "$WORK/storescu.log"; fail "storescu to Orthanc failed"; }
NSTUDIES=$(ocurl /studies | "$CXR_PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')
log "Orthanc holds $NSTUDIES studies"

# ---- what Orthanc holds, scored by the other door (cxr-triage score)
mkdir -p "$WORK/held"
for inst in $(ocurl /instances | "$CXR_PYTHON" -c 'import json,sys; print("\n".join(json.load(sys.stdin)))'); do
    curl -sf "$(ourl "/instances/$inst/file")" -o "$WORK/held/$inst.dcm" || fail "download $inst"
done
"$CXR_BIN" score --config "$WORK/cxr.xml" --json "$WORK"/held/*.dcm >"$WORK/score.json" 2>/dev/null
# one SR per study with a radiograph (analysed or not; a CT or an SR sent
# along is not listed: cxr_dicom_gate_concerns)
NEXPECT=$("$CXR_PYTHON" -c '
import json, sys
NON_IMAGE = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.", "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.66")
READ = ("", "CR", "DX", "OT")
print(len({r["study_instance_uid"] for r in map(json.loads, open(sys.argv[1]))
           if r.get("series_instance_uid") and r.get("sop_class_uid")
           and not r["sop_class_uid"].startswith(NON_IMAGE) and r.get("modality", "") in READ}))' "$WORK/score.json")
[ "$NEXPECT" -ge 1 ] || fail "no study with an image"

done_all() { [ "$(status_field counts.srs_stored)" -ge "$NEXPECT" ] && plugin_idle; }
wait_until 180 "$NEXPECT SRs stored and the queue empty" done_all
sleep 4   # our own SRs make the studies stable again (StableAge 1 s): nothing more may come
wait_until 30 "the queue empty again" plugin_idle
log "$NEXPECT studies reported"

# ---- every study: SR count, SR content, metadata, per-image probabilities, worklist
SHA=$(status_field model.sha256)
[ "$(status_field model.untrained)" = True ] || fail "status does not say the test model is untrained"
grep -q 'is UNTRAINED' "$WORK/orthanc.log" || fail "Orthanc's log has no warning that the model is untrained"
mkdir -p "$WORK/sr"
"$CXR_PYTHON" - "$(ourl "")" "$WORK/score.json" "$WORK/sr" "$SHA" "$THR_P" "$THR_U" <<'PY' || fail "results in Orthanc"
import json, re, sys, urllib.request
base, score_file, sr_dir, sha = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
thr_p, thr_u = float(sys.argv[5]), float(sys.argv[6])
def get(path, raw=False):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        data = r.read()
    return data if raw else json.loads(data)
def find_study(uid):
    req = urllib.request.Request(base + "/tools/find", method="POST",
                                 data=json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": uid}}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())[0]
names = {3: "URGENT", 2: "PRIORITY", 1: "ROUTINE", 0: "NOT_ANALYSED"}
by_study, probs, refs = {}, {}, {}
NON_IMAGE = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.",
             "1.2.840.10008.5.1.4.1.1.104.", "1.2.840.10008.5.1.4.1.1.66")
READ = ("", "CR", "DX", "OT")  # gate/modalities CR DX; SC admitted here, so OT too
for r in map(json.loads, open(score_file)):
    s = by_study.setdefault(r["study_instance_uid"], {"analysed": [], "listed": [], "max": None})
    cls = r.get("sop_class_uid") or ""
    if r.get("series_instance_uid") and cls and not cls.startswith(NON_IMAGE) and r.get("modality", "") in READ:
        s["listed"].append(r["sop_instance_uid"])
    if r.get("analysed"):
        s["analysed"].append(r["sop_instance_uid"])
        probs[r["sop_instance_uid"]] = r["probability"]
        s["max"] = r["probability"] if s["max"] is None else max(s["max"], r["probability"])
def level(p):
    return 0 if p is None else 3 if p >= thr_u else 2 if p >= thr_p else 1
seen_levels = set()
for uid, s in by_study.items():
    oid = find_study(uid)
    series = get(f"/studies/{oid}/series")
    srs = [i for se in series if se["MainDicomTags"].get("Modality") == "SR" for i in se["Instances"]]
    if not s["listed"]:
        assert not srs, f"study {uid} has no image but {len(srs)} SR(s)"
        continue
    assert len(srs) == 1, f"study {uid}: {len(srs)} SRs, want exactly 1"
    sr = srs[0]
    tags = get(f"/instances/{sr}/simplified-tags")
    assert tags["StudyInstanceUID"] == uid, "SR filed in another study"
    open(f"{sr_dir}/{uid}.dcm", "wb").write(get(f"/instances/{sr}/file", raw=True))
    open(f"{sr_dir}/{uid}.refs", "w").write("\n".join(sorted(set(s["listed"]))) + "\n")
    if not s["analysed"]:
        continue
    want = level(s["max"])
    seen_levels.add(want)
    md = {k: get(f"/studies/{oid}/metadata/{k}", raw=True).decode() for k in
          ("CxrTriagePriority", "CxrTriageLevel", "CxrTriageScore", "CxrTriageModel",
           "CxrTriageScoredAt", "CxrTriageSr")}
    assert md["CxrTriagePriority"] == names[want], (uid, md, want)
    assert md["CxrTriageLevel"] == str(want), md
    assert abs(float(md["CxrTriageScore"]) - s["max"]) <= 1e-6, (md, s["max"])
    assert md["CxrTriageModel"].endswith(sha), md
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", md["CxrTriageScoredAt"]), md
    assert md["CxrTriageSr"] == tags["SOPInstanceUID"], md
    page = get(f"/cxr-triage/studies/{oid}")
    assert page["orthanc_id"] == oid and page["state"] == "done", page
    assert page["sr_count"] == 1 and page["sr_orthanc_id"] == sr, page
    for inst in page["instances"]:
        if inst["sop_instance_uid"] in probs:
            d = abs(inst["score"] - probs[inst["sop_instance_uid"]])
            assert d <= 1e-6, f"{inst['sop_instance_uid']}: plugin {inst['score']} vs score {probs[inst['sop_instance_uid']]}"
        elif inst["state"] == "not_analysed":
            assert inst["reason"], inst
w = get("/cxr-triage/worklist")
got = {e["study_instance_uid"]: e for e in w["studies"]}
for uid, s in by_study.items():
    if s["analysed"]:
        e = got[uid]
        assert e["priority_level"] == level(s["max"]) and e["priority"] == names[level(s["max"])], (e, s)
        assert abs(e["score"] - s["max"]) <= 1e-6 and e["sr_count"] == 1, e
        assert "patient_id" not in e, "patient ID shown without plugin/show-patient-id"
keys = [(e["priority_level"], e["score"] if e["score"] is not None else -1, -e["first_received_ms"])
        for e in w["studies"]]
assert keys == sorted(keys, reverse=True), "worklist not ordered by priority, score, arrival"
print("levels seen:", sorted(seen_levels, reverse=True))
assert len(seen_levels) >= 2 or len([s for s in by_study.values() if s["analysed"]]) < 2, "thresholds did not spread the studies"
PY
for sr in "$WORK"/sr/*.dcm; do
    sr_valid "$sr" || fail "dciodvfy finds errors in the SR of $(basename "$sr" .dcm)"
    [ "$(dcm_value "$sr" 0008,0060)" = SR ] || fail "$(basename "$sr") is not an SR"
    sr_refs "$sr" >"$WORK/refs"
    diff -u "${sr%.dcm}.refs" "$WORK/refs" >/dev/null ||
        fail "the SR of $(basename "$sr" .dcm) references $(tr '\n' ' ' <"$WORK/refs") instead of $(tr '\n' ' ' <"${sr%.dcm}.refs")"
done
log "one valid SR per study, listing every image, in the study; metadata, per-image probabilities (<= 1e-6 from score) and worklist order checked"

# ---- POST /cxr-triage/studies/{id}/score on a scored study (by its Study
# Instance UID): queued and looked at again, but the same images and model
# make no second SR; an unknown study is a 404
uid=$(ls "$WORK"/sr/*.dcm | head -n 1 | xargs -n 1 basename | sed 's/\.dcm$//')
id=$(study_id_of "$uid")
curl -sf -X POST "$(ourl "/cxr-triage/studies/$uid/score")" | grep -q "\"orthanc_id\":\"$id\"" ||
    fail "POST score by Study Instance UID"
sleep 2
wait_until 30 "the queue empty after the re-score" plugin_idle
[ "$(study_srs "$id" | wc -l)" -eq 1 ] || fail "a re-score with the same model made a second SR"
[ "$(status_field counts.srs)" -eq "$NEXPECT" ] || fail "a re-score made an SR"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(ourl /cxr-triage/studies/1.2.3.4.5.6.7/score)")
[ "$code" = 404 ] || fail "POST score of an unknown study answered $code"
log "POST .../score: queued again, no second SR with the same model; unknown study 404"

# ---- status and Orthanc metrics
[ "$(status_field counts.srs_stored)" -eq "$NEXPECT" ] || fail "status: srs_stored $(status_field counts.srs_stored), want $NEXPECT"
[ "$(status_field errors)" -eq 0 ] || fail "status: errors $(status_field errors): $(status_field last_error)"
m=$(orthanc_metric cxr_triage_srs_stored)
[ "${m%.*}" = "$NEXPECT" ] || fail "Orthanc metric cxr_triage_srs_stored is '$m', want $NEXPECT"
[ "$(orthanc_metric cxr_triage_ready)" = 1 ] || fail "Orthanc metric cxr_triage_ready"
log "status and metrics count $NEXPECT SRs"

stop_orthanc
log "PASS"
