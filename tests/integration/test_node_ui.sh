#!/usr/bin/env bash
# test_node_ui.sh — the node's reading worklist page (/ui/, the same page the
# Orthanc plugin serves) in headless Chromium:
#   - / and /ui redirect to /ui/; an unknown file of the page is a 404;
#   - /status names the model and the queue (what the page's status line shows);
#   - the page lists the studies of /worklist in its order, most severe first,
#     with one badge per study, and marks each study whose patient is outside
#     the model's intended population (a pediatric model, adult test patients)
#     with the warning's text, and links each to its /studies/{uid} details;
#   - a screenshot is kept as a test artifact.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu curl
CHROMIUM=$(command -v chromium || command -v chromium-browser) ||
    skip "chromium is not installed (packaging/debian-packages.txt lists it)"
setup_work
make_model
"$CXR_BIN" model set "$WORK/model.safetensors" --age-range 1-5 --name kids-model \
    --out "$WORK/model.safetensors" >/dev/null || fail "model set --age-range"
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=
make_instances "$WORK/in" 4 4 701
write_conf "$WORK/node.xml"
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

curl -sf "$URL/status" >"$WORK/status.json" || fail "GET /status"
"$CXR_PYTHON" - "$WORK/status.json" <<'PY' || fail "status: $(cat "$WORK/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["state"] == "ready", s
assert s["model"]["name"] == "kids-model" and len(s["model"]["sha256"]) == 64, s
assert s["queue"]["depth"] == 0, s
PY

chrome() {
    timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --user-data-dir="$WORK/chrome-$1" --virtual-time-budget=8000 \
        "${@:2}" 2>>"$WORK/chromium.log"
}
chrome dom --dump-dom "$URL/ui/" >"$WORK/page.html" || fail "chromium --dump-dom failed (see $WORK/chromium.log)"
curl -sf "$URL/worklist" >"$WORK/worklist.json" || fail "GET /worklist"
uid=$("$CXR_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["studies"][0]["study_instance_uid"])' "$WORK/worklist.json")
curl -sf "$URL/ui/../studies/$uid" | grep -q "\"instances\"" || fail "the page's details link target /studies/$uid"
"$CXR_PYTHON" - "$WORK/page.html" "$WORK/worklist.json" <<'PY' || fail "the page does not show the worklist"
import json, sys
from html.parser import HTMLParser
class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.badges, self.warns, self.status, self._in = [], [], [], "", None
        self.links = []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "study" in a.get("class", "").split():
            self.rows.append((a.get("data-uid"), int(a.get("data-level"))))
        if tag == "a" and self.rows:
            self.links.append(a.get("href", ""))
        if tag == "span" and a.get("class") == "badge":
            self._in = "badge"
        if tag == "span" and a.get("class") == "warn":
            self.warns.append(a.get("title", ""))
        if tag == "div" and a.get("id") == "status":
            self._in = "status"
    def handle_data(self, data):
        if self._in == "badge":
            self.badges.append(data.strip())
        elif self._in == "status":
            self.status += data
    def handle_endtag(self, tag):
        if tag in ("span", "div"):
            self._in = None
p = Page()
p.feed(open(sys.argv[1], encoding="utf-8").read())
w = json.load(open(sys.argv[2]))["studies"]
assert len(w) == 4, w
assert [r[0] for r in p.rows] == [e["study_instance_uid"] for e in w], (p.rows, w)
levels = [r[1] for r in p.rows]
assert levels == sorted(levels, reverse=True), f"rows not most severe first: {levels}"
assert p.badges == [e["priority"] for e in w], p.badges
assert all("intended maximum of 5 years" in e.get("warning", "") for e in w), w
assert len(p.warns) == 4 and all("intended maximum of 5 years" in t for t in p.warns), p.warns
assert "kids-model" in p.status, f"status line: {p.status!r}"
assert p.links == ["../studies/" + e["study_instance_uid"] for e in w], p.links
print(f"page: {len(p.rows)} rows, levels {levels}")
PY
mkdir -p "$CXR_BUILD_DIR/test-artifacts"
SHOT="$CXR_BUILD_DIR/test-artifacts/node-ui.png"
rm -f "$SHOT"
chrome shot --window-size=1280,480 --screenshot="$SHOT" "$URL/ui/" >/dev/null ||
    fail "chromium --screenshot failed (see $WORK/chromium.log)"
[ "$(head -c 8 "$SHOT" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "no PNG screenshot at $SHOT"
log "page: the worklist in order, badges, age warnings, status line; screenshot: $SHOT"
stop_node
log "PASS"
