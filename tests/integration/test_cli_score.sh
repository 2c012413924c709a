#!/usr/bin/env bash
# test_cli_score.sh — the `cxr-triage` command as a user runs it (issue 2):
# model init/info, config check (good and broken), version, and `score` with
# its text and JSON output, its SR files (each passing dciodvfy and naming
# its source image) and its exit statuses 0 / 1 / 2.
. "$(dirname "$0")/cli_lib.sh"
export CXR_LOG_LEVEL=warn
for tool in dcmdump dciodvfy; do
    command -v $tool >/dev/null || { echo "[$T] SKIP: $tool missing"; exit 77; }
done
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
DATA=$CXR_SOURCE_DIR/tests/data
CHEST1=$DATA/cr_mono1_10_chest_nometa.dcm       # CR chest PA, no meta header
CHEST2=$DATA/siim_cr_chest_jpeg_baseline.dcm    # Secondary Capture chest
EXTREMITY=$DATA/wg04_RG3_JPLY.dcm               # CR of an extremity: not analysed

# ---- model init / info
"$CXR_BIN" model init --arch resnet18 --seed 7 --input 96x96 --out "$W/m.safetensors" >"$W/init.txt" \
    || fail "model init"
grep -q "untrained" "$W/init.txt" || fail "model init does not say the model is untrained"
"$CXR_BIN" model init --arch resnet18 --seed 7 --input 96x96 --out "$W/m2.safetensors" >/dev/null
cmp -s "$W/m.safetensors" "$W/m2.safetensors" || fail "same seed gave different model files"
"$CXR_BIN" model info "$W/m.safetensors" >"$W/info.txt" || fail "model info"
sha=$(sha256sum "$W/m.safetensors" | cut -d' ' -f1)
grep -q "$sha" "$W/info.txt" || fail "model info does not show the file's SHA-256"
grep -q "resnet18" "$W/info.txt" || fail "model info does not show the architecture"
"$CXR_BIN" model info --json "$W/m.safetensors" | "$CXR_PYTHON" -c 'import json,sys; d=json.load(sys.stdin); assert d' \
    || fail "model info --json is not JSON"
head -c 1000 "$W/m.safetensors" >"$W/cut.safetensors"
"$CXR_BIN" model info "$W/cut.safetensors" 2>"$W/cut.err"; rc=$?
[ $rc -eq 2 ] || fail "a truncated model gave exit $rc, not 2"
grep -q "cut.safetensors" "$W/cut.err" || fail "the error does not name the truncated file"
"$CXR_BIN" model init --arch resnet99 --out "$W/x" 2>/dev/null; [ $? -eq 2 ] || fail "unknown arch not a usage error"
ok "model init/info"

# ---- model set: edited metadata, same weights, same storage type
"$CXR_BIN" model init --arch resnet18 --seed 7 --input 96x96 --storage f16 --out "$W/h.safetensors" >/dev/null \
    || fail "model init --storage f16"
"$CXR_BIN" model set "$W/h.safetensors" --age-range 1-5 --name kids --version 9.9 --note "checked here" \
    --out "$W/h2.safetensors" >"$W/set.txt" || fail "model set"
"$CXR_BIN" model info "$W/h2.safetensors" >"$W/h2.txt" || fail "model info after set"
grep -q "population: *age 1 to 5 years" "$W/h2.txt" || fail "age range not set: $(cat "$W/h2.txt")"
grep -q "model: *kids 9.9" "$W/h2.txt" || fail "name/version not set"
grep -q "checked here" "$W/h2.txt" || fail "note not appended to the description"
grep -q "$(sha256sum "$W/h2.safetensors" | cut -d' ' -f1)" "$W/set.txt" || fail "model set does not print the new SHA-256"
s1=$(stat -c %s "$W/h.safetensors"); s2=$(stat -c %s "$W/h2.safetensors")
[ $((s2 - s1)) -lt 1000 ] && [ $((s1 - s2)) -lt 1000 ] || fail "storage type changed: $s1 -> $s2 bytes"
"$CXR_PYTHON" - "$W/h.safetensors" "$W/h2.safetensors" <<'EOF' || fail "model set changed the weights"
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), "tensors differ"
assert a["conv1.weight"][0] == "F16", a["conv1.weight"][0]
EOF
"$CXR_BIN" model set "$W/h.safetensors" --age-range 5-1 --out "$W/x" 2>/dev/null; [ $? -eq 2 ] || fail "age range 5-1 accepted"
"$CXR_BIN" model set "$W/cut.safetensors" --age-range 1-5 --out "$W/x" 2>/dev/null; [ $? -eq 2 ] || fail "model set of a corrupt file not exit 2"
[ ! -e "$W/x" ] || fail "model set wrote a file after an error"
ok "model set"

# ---- config check / version
# config check opens what serve opens: the shipped spool (/var/lib/cxr-triage)
# may not be writable by whoever runs the tests, so a copy in $W points it
# there, and the shipped relative model path at the same file.
sed -e "s#<spool-dir>[^<]*</spool-dir>#<spool-dir>$W/spool</spool-dir>#" \
    -e "s#<path>../models/#<path>$CXR_SOURCE_DIR/models/#" \
    "$CXR_SOURCE_DIR/conf/cxr-triage.xml" >"$W/shipped.xml"
"$CXR_BIN" config check "$W/shipped.xml" >"$W/eff.xml" 2>"$W/eff.err"
rc=$?
[ $rc -eq 0 ] || fail "shipped config refused: $(cat "$W/eff.err")"
xmllint --noout --schema "$CXR_SOURCE_DIR/conf/cxr-triage.xsd" "$W/eff.xml" || fail "printed config fails the XSD"
printf '<cxr-triage version="1">\n<model>\n<threads>many</threads>\n</model>\n</cxr-triage>\n' >"$W/bad.xml"
"$CXR_BIN" config check "$W/bad.xml" >/dev/null 2>"$W/bad.err"; rc=$?
[ $rc -eq 2 ] || fail "broken config gave exit $rc"
grep -q "bad.xml:3" "$W/bad.err" && grep -q "model/threads" "$W/bad.err" \
    || fail "config error lacks file:line and key: $(cat "$W/bad.err")"
"$CXR_BIN" version >"$W/version.txt" || fail "version"
grep -q "cpu(oneDNN" "$W/version.txt" && grep -q "JPEG2000" "$W/version.txt" || fail "version lacks backends/codecs"
ok "config check, version"

# ---- score: text output, SRs, exit 1 when something is not analysed
cat >"$W/conf.xml" <<EOF
<cxr-triage version="1">
  <model><path>$W/m.safetensors</path><threads>1</threads></model>
  <gate><allow-secondary-capture>true</allow-secondary-capture></gate>
</cxr-triage>
EOF
"$CXR_BIN" score --config "$W/conf.xml" --sr-out "$W/sr" "$CHEST1" "$CHEST2" "$EXTREMITY" >"$W/out.txt"; rc=$?
[ $rc -eq 1 ] || fail "score with a not-analysed input gave exit $rc, not 1"
[ "$(wc -l <"$W/out.txt")" -eq 3 ] || fail "expected one line per input: $(cat "$W/out.txt")"
grep "$EXTREMITY" "$W/out.txt" | grep -q "not analysed: body part EXTREMITY" || fail "extremity reason missing"
for f in "$CHEST1" "$CHEST2"; do
    line=$(grep "^$f" "$W/out.txt")
    echo "$line" | grep -Eq "p=[01]\.[0-9]{4}" || fail "no probability for $f: $line"
    echo "$line" | grep -Eq "(present|absent)" || fail "no finding for $f"
    echo "$line" | grep -Eq "(URGENT|PRIORITY|ROUTINE)" || fail "no priority for $f"
done
n=$(ls "$W/sr" | wc -l)
[ "$n" -eq 2 ] || fail "expected 2 SR files, found $n"
for sr in "$W"/sr/*.dcm; do
    dciodvfy "$sr" 2>&1 | grep -q Error && { dciodvfy "$sr" 2>&1 | grep Error; fail "dciodvfy errors in $sr"; }
    dcmdump +P 0008,0060 "$sr" | grep -q "\[SR\]" || fail "$sr is not Modality SR"
done
for f in "$CHEST1" "$CHEST2"; do
    uid=$(dcmdump +P 0008,0018 "$f" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -1)
    study=$(dcmdump +P 0020,000d "$f" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -1)
    sr="$W/sr/SR_$uid.dcm"
    [ -f "$sr" ] || fail "no SR named after $uid"
    dcmdump +P 0008,1155 "$sr" | grep -q "$uid" || fail "SR does not reference $uid"
    dcmdump +P 0020,000d "$sr" | grep -q "\[$study\]" || fail "SR is not in the source's study"
done
ok "score text output and SRs"

# ---- score --json: one object per input; exit 0 when all analysed
"$CXR_BIN" score --config "$W/conf.xml" --json "$CHEST1" "$CHEST2" >"$W/out.json"; rc=$?
[ $rc -eq 0 ] || fail "score of two chest films gave exit $rc, not 0"
"$CXR_PYTHON" - "$W/out.json" "$W/out.txt" <<'EOF' || fail "JSON output check"
import json, sys, re
objs = [json.loads(l) for l in open(sys.argv[1])]
assert len(objs) == 2, objs
text = open(sys.argv[2]).read()
for o in objs:
    assert o["analysed"] is True
    assert 0.0 <= o["probability"] <= 1.0
    assert o["finding"] in ("present", "absent")
    assert o["priority"] in ("URGENT", "PRIORITY", "ROUTINE")
    for k in ("read", "gate", "present", "preprocess", "infer", "sr"):
        assert k in o["timing_ms"], k
    # the same probability as the text run of the same file
    m = re.search(re.escape(o["file"]) + r"\t\S+\tp=([0-9.]+)", text)
    assert m and abs(float(m.group(1)) - o["probability"]) < 6e-5, (o, m)
EOF
ok "score --json"

# ---- decompression bombs (issue 14, item 3): two deflated data sets of a few
# hundred KB, one whose Pixel Data expands to 400 MB behind a 512 x 512
# header, one with 64 MB of a private element before its pixels, between
# proper images: the bombs are not analysed, named as bombs (CXR_ERR_LIMIT),
# the others are scored. The timeout is a last resort against a hang.
BOMBS="$CXR_SOURCE_DIR/tests/integration/bombs.py"
"$CXR_PYTHON" "$BOMBS" dicom "$W/bomb.dcm" 400000000 || fail "cannot make the deflate bomb"
"$CXR_PYTHON" "$BOMBS" dicom-header "$W/hbomb.dcm" 64000000 || fail "cannot make the header bomb"
"$CXR_PYTHON" "$BOMBS" dicom-good "$W/deflated.dcm" || fail "cannot make a deflated image"
timeout 300 "$CXR_BIN" score --config "$W/conf.xml" --json "$CHEST1" "$W/bomb.dcm" "$W/hbomb.dcm" \
    "$W/deflated.dcm" >"$W/bombs.json"; rc=$?
[ $rc -ne 124 ] || fail "score did not finish within 300 s of two bombs"
[ $rc -eq 1 ] || fail "score with two bombs gave exit $rc, not 1"
"$CXR_PYTHON" - "$W/bombs.json" <<'EOF' || fail "bombs: $(cat "$W/bombs.json")"
import json, sys
objs = {o["file"].rsplit("/", 1)[1]: o for o in map(json.loads, open(sys.argv[1]))}
assert objs["cr_mono1_10_chest_nometa.dcm"]["analysed"] and objs["deflated.dcm"]["analysed"], objs
for name, where in (("bomb.dcm", "512 x 512 pixels"), ("hbomb.dcm", "before its Pixel Data")):
    o = objs[name]
    assert not o["analysed"] and o["status"] == "CXR_ERR_LIMIT", o
    assert "decompression bomb" in o["reason"] and where in o["reason"], o["reason"]
EOF
ok "decompression bombs refused by score, the images around them scored"

# ---- models without finite scores (issue 14, item 5), every weight finite:
# fc weights of +-3e38 overflow on any real image; a batch-norm bias of 3e38
# in the last block gives NaN even for a neutral image. The first scores
# nothing (not analysed, exit 1, valid JSON: no NaN anywhere); the second is
# refused at load (exit 2) instead of printing "probability":NaN.
"$CXR_PYTHON" - "$W/m.safetensors" "$W" <<'EOF' || fail "cannot edit the model"
import json, struct, sys
b0 = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b0[:8])[0]
h = json.loads(b0[8:8 + n])
for out, name, rows in (("overflow", "fc.weight", True), ("nan", "layer4.1.bn2.bias", False)):
    b = bytearray(b0)
    lo, hi = h[name]["data_offsets"]
    per = (hi - lo) // 4 // h[name]["shape"][0]
    for i in range((hi - lo) // 4):
        struct.pack_into("<f", b, 8 + n + lo + 4 * i, -3e38 if rows and i >= per else 3e38)
    open(f"{sys.argv[2]}/{out}.safetensors", "wb").write(b)
EOF
"$CXR_BIN" score --config "$W/conf.xml" --model "$W/overflow.safetensors" --json "$CHEST1" "$CHEST2" \
    >"$W/inf.json"; rc=$?
[ $rc -eq 1 ] || fail "score with a model that gives no finite score: exit $rc, not 1"
"$CXR_PYTHON" - "$W/inf.json" <<'EOF' || fail "no finite score: $(cat "$W/inf.json")"
import json, sys
def bad(c):
    raise ValueError("not JSON: " + c)
for line in open(sys.argv[1]):
    o = json.loads(line, parse_constant=bad)
    assert not o["analysed"] and o["status"] == "CXR_ERR_NN_NONFINITE", o
    assert o["priority"] == "NOT_ANALYSED" and o.get("probability") is None, o
    assert "no finite score" in o["reason"], o
EOF
"$CXR_BIN" score --config "$W/conf.xml" --model "$W/nan.safetensors" --json "$CHEST1" \
    >"$W/nan.json" 2>"$W/nan.err"; rc=$?
[ $rc -eq 2 ] || fail "score with a NaN model: exit $rc, not 2: $(cat "$W/nan.json")"
grep -q "nan.safetensors: a neutral test image gives no finite score" "$W/nan.err" ||
    fail "the NaN model's refusal does not say why: $(cat "$W/nan.err")"
ok "a model without finite scores: not analysed, valid JSON, exit 1; NaN for a neutral image: refused"

# ---- usage and fatal errors: exit 2
"$CXR_BIN" score --config "$W/conf.xml" 2>/dev/null; [ $? -eq 2 ] || fail "score without inputs not exit 2"
"$CXR_BIN" score --model "$W/cut.safetensors" --config "$W/conf.xml" "$CHEST1" 2>"$W/fatal.err"; rc=$?
[ $rc -eq 2 ] || fail "score with a corrupt model gave exit $rc"
grep -q "cut.safetensors" "$W/fatal.err" || fail "corrupt model error does not name the file"
"$CXR_BIN" score --config "$W/conf.xml" "$W/does-not-exist.dcm" >"$W/missing.txt"; rc=$?
[ $rc -eq 1 ] || fail "a missing input gave exit $rc, not 1"
grep -q "not analysed" "$W/missing.txt" || fail "missing input not listed with a reason"
ok "exit statuses"

# ---- the 16 real chest files, when ../shared is present
if [ -d "$CXR_SHARED_DATA/dicom-cxr" ]; then
    cat >"$W/perm.xml" <<EOF
<cxr-triage version="1">
  <model><path>$W/m.safetensors</path><threads>1</threads></model>
  <gate><allow-secondary-capture>true</allow-secondary-capture>
        <allow-missing-body-part>true</allow-missing-body-part>
        <allow-missing-view-position>true</allow-missing-view-position></gate>
</cxr-triage>
EOF
    files=$(grep -v '^path' "$CXR_SHARED_DATA/dicom-cxr/MANIFEST.tsv" | cut -f1 | sed "s|^|$CXR_SHARED_DATA/dicom-cxr/|")
    "$CXR_BIN" score --config "$W/perm.xml" --sr-out "$W/sr16" $files >"$W/out16.txt"; rc=$?
    [ $rc -eq 0 ] || { cat "$W/out16.txt"; fail "not every real chest file was analysed (exit $rc)"; }
    [ "$(grep -c 'p=' "$W/out16.txt")" -eq 16 ] || fail "expected 16 analysed"
    for sr in "$W"/sr16/*.dcm; do
        dciodvfy "$sr" 2>&1 | grep -q Error && fail "dciodvfy errors in $sr"
    done
    ok "16 real chest files analysed, SRs valid"
else
    echo "[$T] SKIP part: $CXR_SHARED_DATA/dicom-cxr absent"
fi
echo "[$T] PASS"
