#!/usr/bin/env bash
# test_node_nonfinite.sh — a model that gives no finite score (issue 14,
# item 5), with every weight finite so that loading alone cannot tell:
#   - a model NaN even for a neutral image (a batch-norm bias of 3e38 in the
#     last block) is refused by serve at start, and by a SIGHUP reload (the
#     running model keeps serving);
#   - a model that scores a neutral image but overflows on real ones (fc
#     weights of +-3e38) serves; its images are not analysed with
#     CXR_ERR_NN_NONFINITE and a reason, never ROUTINE without a score; the
#     study JSON holds no NaN; after 3 such images /healthz answers 503 and
#     /status says "failing" with the reason;
#   - a reload to a sound model makes /healthz ok again, and scores.
. "$(dirname "$0")/node_lib.sh"
need_tools storescu echoscu curl sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=""
cp "$WORK/model.safetensors" "$WORK/sound.safetensors"

# edit_model SRC DST TENSOR VALUE [rows]: every value of TENSOR set to VALUE
# (rows: the first row +VALUE, the others -VALUE); the file stays valid
edit_model() {
    "$CXR_PYTHON" - "$@" <<'PY' || fail "cannot edit the model"
import json, struct, sys
src, dst, name, value = sys.argv[1:5]
rows = len(sys.argv) > 5
b = bytearray(open(src, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
e = json.loads(b[8:8 + n])[name]
assert e["dtype"] == "F32", e
lo, hi = e["data_offsets"]
count = (hi - lo) // 4
per = count // e["shape"][0]
for i in range(count):
    v = float(value) * (-1 if rows and i >= per else 1)
    struct.pack_into("<f", b, 8 + n + lo + 4 * i, v)
open(dst, "wb").write(b)
PY
}
edit_model "$WORK/sound.safetensors" "$WORK/nan.safetensors" layer4.1.bn2.bias 3e38
edit_model "$WORK/sound.safetensors" "$WORK/overflow.safetensors" fc.weight 3e38 rows

# strict JSON: Python's json accepts NaN and Infinity unless told not to
strict_json() {
    "$CXR_PYTHON" -c 'import json, sys
def bad(c): raise ValueError("not JSON: " + c)
json.loads(sys.stdin.read(), parse_constant=bad)'
}

# ---- NaN for a neutral image: serve refuses to start
cp "$WORK/nan.safetensors" "$WORK/model.safetensors"
write_conf "$WORK/node.xml"
rc=0
timeout 120 "$CXR_BIN" serve --config "$WORK/node.xml" >"$WORK/refused.log" 2>&1 || rc=$?
[ "$rc" -ne 124 ] || fail "serve with a NaN model still runs after 120 s"
[ "$rc" -eq 2 ] && grep -q "no finite score" "$WORK/refused.log" ||
    fail "serve with a NaN model: exit $rc: $(tail -3 "$WORK/refused.log")"
log "a model NaN for a neutral image: serve refuses it"

# ---- overflowing on real images: served, images not analysed, unhealthy
cp "$WORK/overflow.safetensors" "$WORK/model.safetensors"
start_node "$WORK/node.xml"
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || fail "not healthy before any image"
make_instances "$WORK/in" 3 1 606
send_files CR01 "$DICOM_PORT" "$WORK"/in/*.dcm || fail "storescu"
processed() { [ "$(sqlite3 "$WORK/spool/jobs.sqlite" 'SELECT count(*) FROM instances WHERE state<>0')" -eq 3 ]; }
wait_until 120 "the 3 images processed" processed
rows=$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT state || '|' || status || '|' || reason FROM instances")
n=$(printf '%s\n' "$rows" | grep -c "^2|306|the model gave no finite score")
[ "$n" -eq 3 ] || fail "images of a model with infinite output are not all 'not analysed' (306): $rows"
study=$(curl -sf "http://127.0.0.1:$HTTP_PORT/studies/2.25.606.1") || fail "GET /studies"
printf '%s' "$study" | strict_json || fail "the study JSON is not JSON: $study"
printf '%s' "$study" | grep -q '"priority":"ROUTINE"' && fail "a study without a score is ROUTINE: $study"
code=$(curl -s -o "$WORK/health.txt" -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/healthz")
[ "$code" = 503 ] && grep -q "unhealthy: scoring fails: the last 3 images" "$WORK/health.txt" ||
    fail "/healthz after 3 images without a score: $code $(cat "$WORK/health.txt")"
status=$(curl -sf "http://127.0.0.1:$HTTP_PORT/status") || fail "GET /status"
printf '%s' "$status" | strict_json || fail "/status is not JSON: $status"
printf '%s' "$status" | grep -q '"state":"failing"' || fail "/status does not say failing: $status"
log "a model with infinite output: images not analysed (306), /healthz 503, /status failing"

# ---- SIGHUP to the NaN model: refused, the running one stays
cp "$WORK/nan.safetensors" "$WORK/model.safetensors"
kill -HUP "$NODE_PID"
wait_until 60 "the refused reload in the log" grep -q "reload refused" "$WORK/node.log"
grep "reload refused" "$WORK/node.log" | grep -q "no finite score" ||
    fail "the refused reload does not say why: $(grep 'reload refused' "$WORK/node.log")"
check "C-ECHO after a refused reload" echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"

# ---- a sound model: healthy again, and scoring
cp "$WORK/sound.safetensors" "$WORK/model.safetensors"
kill -HUP "$NODE_PID"
wait_until 60 "the reload" grep -q "reloaded:" "$WORK/node.log"
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || fail "/healthz after a reload to a sound model"
FIRST=3 make_instances "$WORK/in2" 1 1 606
send_files CR01 "$DICOM_PORT" "$WORK"/in2/*.dcm || fail "storescu after the reload"
scored() { [ "$(sqlite3 "$WORK/spool/jobs.sqlite" "SELECT count(*) FROM instances WHERE state=1")" -eq 1 ]; }
wait_until 120 "the image after the reload scored" scored
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || fail "/healthz after a score"
stop_node
log "PASS"
