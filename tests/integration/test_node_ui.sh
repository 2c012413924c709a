#!/usr/bin/env bash
# test_node_ui.sh — the node's reading worklist page (/ui/, the same page the
# Orthanc plugin serves) in headless Chromium:
#   - / and /ui redirect to /ui/; an unknown file of the page is a 404;
#   - /status names the model and the queue (what the page's status line shows);
#   - the page lists the studies of /worklist in its order, most severe first,
#     with one badge per study, and marks each study whose patient is outside
#     the model's intended population (a pediatric model, adult test patients,
#     gate/age-policy warn) with the warning's text visible on the row, and
#     links each to its study page (study.html#uid), which shows the study's
#     facts and every image's result from /studies/{uid};
#   - a study marked read (POST /studies/{uid}/read, JSON only) leaves the list;
#   - a screenshot is kept as a test artifact.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu curl
setup_work
. "$(dirname "$0")/ui_lib.sh"
make_model
"$CXR_BIN" model set "$WORK/model.safetensors" --age-range 1-5 --name kids-model \
    --out "$WORK/model.safetensors" >/dev/null || fail "model set --age-range"
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=
make_instances "$WORK/in" 4 4 701
# adult test patients, a pediatric model: analysed only because this "site"
# says it validated the model on its patients (issue 16: the default refuses)
GATE_EXTRA="<age-policy>warn</age-policy>" write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"
URL="http://127.0.0.1:$HTTP_PORT"

code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$URL/ui")
[ "$code" = "301 $URL/ui/" ] || fail "/ui does not redirect to /ui/: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/ui/nothing.js")
[ "$code" = 404 ] || fail "an unknown file of the page gave $code"
curl -sf "$URL/ui/app.js" | grep -q "worklist" || fail "app.js not served"

send_files CR01 "$DICOM_PORT" "$WORK"/in/*.dcm || fail "storescu"
analysed() {
    curl -sf "$URL/worklist" | "$CXR_PYTHON" -c '
import json, sys
w = json.load(sys.stdin)["studies"]
sys.exit(0 if len(w) == 4 and all(s["images_analysed"] == 1 for s in w) else 1)'
}
wait_until 60 "4 studies analysed" analysed
grep -q 'WARN .*node: the model .* is UNTRAINED' "$WORK/node.log" || fail "no warning that the model is untrained"

curl -sf "$URL/status" >"$WORK/status.json" || fail "GET /status"
"$CXR_PYTHON" - "$WORK/status.json" <<'PY' || fail "status: $(cat "$WORK/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["state"] == "ready", s
assert s["model"]["name"] == "kids-model" and len(s["model"]["sha256"]) == 64, s
assert s["model"]["untrained"] is True, s   # `model init` weights: said, not hidden
assert s["queue"]["depth"] == 0, s
assert s["spool"]["free_bytes"] > 0 and s["spool"]["job_store_bytes"] > 0, s
PY

chrome dom --dump-dom "$URL/ui/" >"$WORK/page.html" || fail "chromium --dump-dom failed (see $WORK/chromium.log)"
curl -sf "$URL/worklist" >"$WORK/worklist.json" || fail "GET /worklist"
uid=$("$CXR_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["studies"][0]["study_instance_uid"])' "$WORK/worklist.json")
curl -sf "$URL/ui/../studies/$uid" | grep -q "\"instances\"" || fail "the page's details link target /studies/$uid"
"$CXR_PYTHON" - "$WORK/page.html" "$WORK/worklist.json" <<'PY' || fail "the page does not show the worklist"
import json, os, sys
sys.path.insert(0, os.environ["UI_LIB_DIR"])
from ui_page import parse
p = parse(sys.argv[1])
w = json.load(open(sys.argv[2]))["studies"]
assert len(w) == 4, w
assert [r[0] for r in p.rows] == [e["study_instance_uid"] for e in w], (p.rows, w)
levels = [r[1] for r in p.rows]
assert levels == sorted(levels, reverse=True), f"rows not most severe first: {levels}"
assert p.badges == [e["priority"] for e in w], p.badges
assert all("intended maximum of 5 years" in e.get("warning", "") for e in w), w
assert len(p.warns) == 4 and all("intended maximum of 5 years" in t for t in p.warns), p.warns
assert "kids-model" in p.status, f"status line: {p.status!r}"
assert p.links == [["study.html#" + e["study_instance_uid"]] for e in w], p.links
print(f"page: {len(p.rows)} rows, levels {levels}")
PY
# the study page (study.html#uid): the study's facts and each image's result,
# readable, from /studies/{uid}
chrome study --dump-dom "$URL/ui/study.html#$uid" >"$WORK/study.html" || fail "chromium --dump-dom of the study page"
"$CXR_PYTHON" - "$WORK/study.html" "$uid" <<'PY' || fail "the study page does not show the study"
import re, sys
page, uid = open(sys.argv[1]).read(), sys.argv[2]
assert uid in page, "Study Instance UID not on the page"
rows = re.findall(r'<tr class="image ([a-z_]+)">(.*?)</tr>', page, re.S)
assert len(rows) == 1 and rows[0][0] == "analysed", rows
assert re.search(r"\d+\.\d %", rows[0][1]), rows[0][1]
assert "intended maximum of 5 years" in rows[0][1], rows[0][1]
assert "1 analysed, 0 not analysed" in page, "image counts"
print("study page: 1 analysed image with its score and warning")
PY
# a reader marks the first study read (the page's "read" button sends this
# request): it leaves the list, the count of read studies says 1; a form post
# (what another site's page could send) is refused
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d 'x=1' "$URL/studies/$uid/read")
[ "$code" = 415 ] || fail "a form POST marking a study read answered $code"
curl -sf -X POST -H 'Content-Type: application/json' -d '{}' "$URL/studies/$uid/read" | grep -q '"read":true' ||
    fail "POST /studies/$uid/read"
chrome read --dump-dom "$URL/ui/" >"$WORK/page-read.html" || fail "chromium --dump-dom after marking"
"$CXR_PYTHON" - "$WORK/page-read.html" "$uid" <<'PY' || fail "the page still lists the study marked read"
import os, re, sys
sys.path.insert(0, os.environ["UI_LIB_DIR"])
from ui_page import parse
page, uid = sys.argv[1], sys.argv[2]
p = parse(page)
assert len(p.rows) == 3 and uid not in [r[0] for r in p.rows], p.rows
assert re.search(r'<span id="nread">1</span>', open(page).read()), "count of read studies"
print("page after marking one read: 3 rows")
PY
log "a study marked read leaves the page's list (JSON request only)"
SHOT="$CXR_BUILD_DIR/test-artifacts/node-ui.png"
screenshot "$URL/ui/" "$SHOT" 1280,480
log "page: the worklist in order, badges, age warnings, status line; screenshot: $SHOT"
stop_node
log "PASS"
