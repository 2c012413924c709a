#!/usr/bin/env bash
# test_train_cli.sh — `cxr-triage train` and `evaluate` as an admin runs them
# (issue 4), kept short (well under 2 minutes on 2 cores):
#   - a tiny labeled tar.gz (synthetic PNGs with Kermany-style patient names,
#     the JPEG/PNG fixtures of tests/data/train, a real DICOM chest film, a
#     truncated JPEG and a text file) trains a small resnet18 at 48x48 with an
#     explicit validation folder: exit 1 because entries were skipped, the
#     skipped ones named with reasons (a PNG decompression bomb among them,
#     refused from its header), class counts printed;
#   - the model file loads (`model info --json`) with calibrated thresholds,
#     the training data digest, validation metrics and name/version/created;
#   - the report exists, is one self-contained file with SVG and no network
#     reference, and lists the skipped entries;
#   - `evaluate --json` and `evaluate --report` on the validation folder;
#   - the model lists its training images: `evaluate` on them warns with the
#     count (stderr, JSON, report), on the validation folder it does not, and
#     with the bundled model (no list) it says so once;
#   - `score` with the new model on a DICOM file from tests/data;
#   - Ctrl-C (SIGINT) during training leaves a checkpoint and exit 1;
#     `--resume` finishes the run;
#   - `--init ... --freeze-backbone` keeps the backbone byte for byte;
#   - usage errors exit 2;
#   - with ../shared/data/cxr-kermany: a 48-image subset trains and evaluates.
. "$(dirname "$0")/cli_lib.sh"
export CXR_LOG_LEVEL=warn
PY=$(command -v python3 || true)
[ -n "$PY" ] || { echo "[$T] SKIP: python3 missing (writes the synthetic PNGs)"; exit 77; }
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
DATA=$CXR_SOURCE_DIR/tests/data
# --accept-weak: these tiny runs (10 validation images) check the plumbing; a
# model's quality is test_train_weak.sh's subject.
SMALL=(--arch resnet18 --width 4 --input 48x48 --batch 8 --threads 2 --accept-weak)

# ---- the data: synthetic greyscale PNGs (stripes across = NORMAL, down =
# PNEUMONIA, random phase/period/noise), written with the standard library
"$PY" - "$W" <<'EOF' || fail "cannot write the synthetic PNGs"
import os, random, struct, sys, zlib
root = sys.argv[1]
def png(path, w, h, pix):
    raw = b"".join(b"\0" + bytes(pix[r * w:(r + 1) * w]) for r in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
import math
rnd = random.Random(7)
def image(cls):
    w = h = 56
    per, ph = rnd.uniform(6, 12), rnd.uniform(0, 6.28)
    return [max(0, min(255, int(128 + 90 * math.sin(2 * math.pi * (c if cls else r) / per + ph)
                               + rnd.gauss(0, 20)))) for r in range(h) for c in range(w)]
for split, n in (("data", 14), ("val", 5)):
    for cls, name in ((0, "NORMAL"), (1, "PNEUMONIA")):
        d = os.path.join(root, split, name)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            pid = i // 2 + (0 if split == "data" else 100) + 1000 * cls
            png(os.path.join(d, f"person{pid}_img{i}.png"), 56, 56, image(cls))
EOF
cp "$DATA/train/gray.jpg" "$W/data/NORMAL/fixture_gray.jpg"
cp "$DATA/train/rgb.png" "$W/data/PNEUMONIA/fixture_rgb.png"
cp "$DATA/siim_cr_chest_jpeg_baseline.dcm" "$W/data/PNEUMONIA/chest.dcm"
cp "$DATA/train/truncated.jpg" "$W/data/NORMAL/broken.jpg"
echo "not an image" >"$W/data/PNEUMONIA/notes.txt"
# a PNG bomb (issue 14, item 3): ~260 KB declaring 16384 x 16384 zero pixels
"$CXR_PYTHON" "$CXR_SOURCE_DIR/tests/integration/bombs.py" png "$W/data/NORMAL/bomb.png" 16384 16384 ||
    fail "cannot write the PNG bomb"
tar -czf "$W/data.tar.gz" -C "$W/data" . || fail "tar"

# ---- train from the archive with an explicit validation folder
"$CXR_BIN" train --data "$W/data.tar.gz" --val "$W/val" "${SMALL[@]}" --epochs 3 --seed 5 \
    --out "$W/m.safetensors" --report "$W/r.html" --name test-model --version 0.0.1 \
    >"$W/train.out" 2>"$W/train.err"
rc=$?
[ $rc -eq 1 ] || fail "train exit $rc, expected 1 (entries skipped): $(tail -5 "$W/train.err")"
grep -q "broken.jpg" "$W/train.err" && grep -q "notes.txt" "$W/train.err" \
    || fail "the skipped entries are not listed: $(cat "$W/train.err")"
grep -q "NORMAL/bomb.png: PNG: 16384x16384 is 268435456 pixels.*decompression bomb" "$W/train.err" \
    || fail "the PNG bomb is not listed as skipped with its reason: $(cat "$W/train.err")"
grep -Eq "training +31 images: NORMAL 15, PNEUMONIA 16" "$W/train.err" \
    || fail "class counts not printed before training: $(head -12 "$W/train.err")"
grep -q "epoch 3/3:" "$W/train.err" || fail "no epoch summary"
grep -q "validation AUC" "$W/train.out" || fail "no final summary on stdout"
ok "train from a tar.gz: skipped entries listed, class counts printed, exit 1"

# ---- the model file
"$CXR_BIN" model info --json "$W/m.safetensors" >"$W/info.json" || fail "model info"
"$PY" - "$W/info.json" <<'EOF' || fail "model metadata incomplete: $(cat "$W/info.json")"
import json, sys
d = json.load(open(sys.argv[1]))
flat = json.dumps(d)
def find(o, key):
    if isinstance(o, dict):
        if key in o:
            return o[key]
        for v in o.values():
            r = find(v, key)
            if r is not None:
                return r
    return None
op, ur = find(d, "operating_threshold"), find(d, "urgent_threshold")
assert op is not None and 0 <= float(op) <= 1, op
assert ur is not None and float(ur) >= float(op), (op, ur)
dig = find(d, "training_data_digest")
assert dig and str(dig).startswith("sha256:") and len(str(dig)) == 71, dig
m = find(d, "metrics")
m = json.loads(m) if isinstance(m, str) else m
assert m and "auc" in m and m["split"] == "validation", m
assert m["training"]["epochs"] == 3, m["training"]
assert find(d, "name") == "test-model" and find(d, "version") == "0.0.1"
assert find(d, "created")
EOF
ok "model file: thresholds, digest, validation metrics, name/version/created"

# ---- the report: one file, SVG, no network reference, skipped entries
[ -s "$W/r.html" ] || fail "no report"
grep -q "<svg" "$W/r.html" || fail "report without SVG charts"
grep -q "notes.txt" "$W/r.html" || fail "report does not list the skipped entries"
if grep -Eiq "(src|href)=[\"']?(https?:|//)|url\((['\"])?(https?:|//)|<script|@import" "$W/r.html"; then
    fail "the report references the network or has a script"
fi
ok "report: self-contained, SVG, skipped entries, no network reference"

# ---- evaluate
"$CXR_BIN" evaluate --model "$W/m.safetensors" --data "$W/val" --json --resamples 200 \
    >"$W/eval.json" 2>"$W/eval.err" || fail "evaluate exit $?: $(cat "$W/eval.err")"
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d["calibration"]; assert d["n"]==10 and d["positives"]==5 and "ci95" in d["auc"] and len(c["bins"])==10 and sum(b["n"] for b in c["bins"])==10 and 0<=c["ece"]<=1, d' \
    "$W/eval.json" || fail "evaluate --json: $(cat "$W/eval.json")"
"$CXR_BIN" evaluate --model "$W/m.safetensors" --data "$W/val" --report "$W/e.html" \
    >"$W/eval.txt" 2>&1 || fail "evaluate --report"
grep -q "sensitivity" "$W/eval.txt" && [ -s "$W/e.html" ] || fail "evaluate text or report missing"
ok "evaluate: JSON with CIs, text, report"

# ---- evaluate warns when it scores the model's training images (issue 16,
# finding 6: evaluating on the training images gave AUC 1.000 without a word).
# The model lists its training images (digests of their files): the folder
# its archive was made from is those images; the validation folder is not.
"$CXR_BIN" model info --json "$W/m.safetensors" >"$W/info2.json" || fail "model info"
"$PY" -c 'import json,sys; t=json.load(open(sys.argv[1]))["training_images"]; assert t["images"]==31 and t["digests"]==31 and t["sample_bits"]==0, t' \
    "$W/info2.json" || fail "the model does not list its 31 training images: $(grep -A4 training_images "$W/info2.json")"
rc=0
"$CXR_BIN" evaluate --model "$W/m.safetensors" --data "$W/data" --json --resamples 200 --report "$W/seen.html" \
    >"$W/seen.json" 2>"$W/seen.err" || rc=$?
[ "$rc" -le 1 ] || fail "evaluate on the training images: exit $rc: $(tail -3 "$W/seen.err")"
n=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); o=d["training_overlap"]; assert d["training_list"] and o["images"]==d["n"] and o["fraction"]==1.0 and not o["estimated"], d; print(d["n"])' \
    "$W/seen.json") || fail "evaluate --json does not count the training images: $(cat "$W/seen.json")"
grep -q "WARNING: $n of the $n evaluated images (100.0 %) are images this model was trained on: the metrics are optimistic" "$W/seen.err" ||
    fail "no warning on stderr for $n training images: $(cat "$W/seen.err")"
grep -q 'class="warning"><b>Warning:</b> '"$n"' of the '"$n"' evaluated images' "$W/seen.html" ||
    fail "the report does not carry the overlap warning"
grep -q "WARNING" "$W/eval.err" && fail "evaluate on the validation folder warned: $(grep WARNING "$W/eval.err")"
"$PY" -c 'import json,sys; o=json.load(open(sys.argv[1]))["training_overlap"]; assert o["images"]==0 and o["fraction"]==0, o' \
    "$W/eval.json" || fail "the validation folder counted as training images: $(cat "$W/eval.json")"
grep -q "training images: none of these" "$W/eval.txt" || fail "the text output does not say the images are new"
"$CXR_BIN" evaluate --model "$CXR_SOURCE_DIR/models/cxr-default.safetensors" --data "$W/val" --resamples 0 \
    >/dev/null 2>"$W/bundled.err" || fail "evaluate with the bundled model: $(tail -3 "$W/bundled.err")"
[ "$(grep -c "carries no list of the images it was trained on" "$W/bundled.err")" -eq 1 ] ||
    fail "a model without a list is not said (once) to have none: $(cat "$W/bundled.err")"
ok "evaluate: $n training images warned about (stderr, JSON, report); new images not; the bundled model has no list"

# ---- evaluate measures what the node analyses: DICOM entries pass the node's
# gate. A Secondary Capture (the node's default refuses it) is skipped with the
# key that admits it; with a configuration that admits it, it is scored.
cp -r "$W/val" "$W/val_sc"
cp "$DATA/siim_cr_chest_jpeg_baseline.dcm" "$W/val_sc/PNEUMONIA/sc_chest.dcm"
rc=0
"$CXR_BIN" evaluate --model "$W/m.safetensors" --data "$W/val_sc" --json --resamples 200 \
    >"$W/eval_sc.json" 2>"$W/eval_sc.err" || rc=$?
[ "$rc" -eq 1 ] || fail "evaluate with a refused entry: exit $rc (want 1): $(cat "$W/eval_sc.err")"
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["n"]==10 and d["skipped"]==1, d' \
    "$W/eval_sc.json" || fail "the Secondary Capture was scored: $(cat "$W/eval_sc.json")"
grep -q "sc_chest.dcm.*gate/allow-secondary-capture" "$W/eval_sc.err" ||
    fail "the skipped Secondary Capture does not name its key: $(grep sc_chest "$W/eval_sc.err")"
printf '<cxr-triage><gate><allow-secondary-capture>true</allow-secondary-capture></gate></cxr-triage>\n' >"$W/sc.xml"
"$CXR_BIN" evaluate --config "$W/sc.xml" --model "$W/m.safetensors" --data "$W/val_sc" --json \
    --resamples 200 >"$W/eval_sc2.json" 2>"$W/eval_sc2.err" || fail "evaluate --config: $(cat "$W/eval_sc2.err")"
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["n"]==11 and d["skipped"]==0, d' \
    "$W/eval_sc2.json" || fail "evaluate --config did not admit the Secondary Capture: $(cat "$W/eval_sc2.json")"
ok "evaluate: DICOM entries pass the configuration's gate (default: the node's)"

# ---- recalibration on "local" labeled images: new thresholds, same weights
sha_before=$(sha256sum "$W/m.safetensors" | cut -d' ' -f1)
"$CXR_BIN" evaluate --model "$W/m.safetensors" --data "$W/val" --resamples 0 --json \
    --calibrate-out "$W/recal.safetensors" --target-sensitivity 1.0 --urgent-specificity 0.8 \
    >"$W/recal.json" 2>"$W/recal.err" || fail "evaluate --calibrate-out: $(tail -3 "$W/recal.err")"
[ "$(sha256sum "$W/m.safetensors" | cut -d' ' -f1)" = "$sha_before" ] || fail "recalibration changed the input model"
"$CXR_BIN" model info --json "$W/recal.safetensors" >"$W/recal-info.json" || fail "model info of the recalibrated model"
"$CXR_BIN" evaluate --model "$W/recal.safetensors" --data "$W/val" --resamples 0 --json \
    >"$W/recal-eval.json" 2>/dev/null || fail "evaluate of the recalibrated model"
"$PY" - "$W/recal.json" "$W/recal-info.json" "$W/recal-eval.json" "$W/m.safetensors" "$W/recal.safetensors" <<'EOF' || fail "recalibration"
import json, struct, sys
r = json.load(open(sys.argv[1]))["recalibration"]
info = json.load(open(sys.argv[2]))
ev = json.load(open(sys.argv[3]))
# sensitivity 1.0 on these images, and the new file says so
assert r["operating"]["sensitivity"]["value"] == 1.0, r
assert ev["operating"]["threshold"] == r["operating_threshold"], (ev["operating"], r)
assert ev["operating"]["sensitivity"]["value"] == 1.0, ev["operating"]
assert ev["urgent"]["threshold"] >= ev["operating"]["threshold"], ev
m = info["metrics"]
assert m["split"] == "recalibration" and m["before_recalibration"]["split"] == "validation", m
assert m["data_digest"].startswith("sha256:") and abs(m["operating"]["threshold"] - r["operating_threshold"]) < 1e-6, m
assert abs(info["operating_threshold"] - r["operating_threshold"]) < 1e-6, info
assert abs(info["urgent_threshold"] - r["urgent_threshold"]) < 1e-6 and m["urgent_specificity"] == 0.8, info
assert "Thresholds recalibrated on 10 images" in info["description"], info["description"]
def tensors(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
a, b = tensors(sys.argv[4]), tensors(sys.argv[5])
assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), "weights changed"
EOF
"$CXR_BIN" evaluate --model "$W/m.safetensors" --data "$W/val" --calibrate-out "$W/x" \
    --target-sensitivity 1.5 2>/dev/null; [ $? -eq 2 ] || fail "a bad --target-sensitivity is not a usage error"
ok "evaluate --calibrate-out: thresholds from local images, weights unchanged, provenance in the metadata"

# ---- score a DICOM file with the new model
# (the new model states the population its DICOM ages gave; this film has no
# age, which the default gate refuses: the age check is off here)
echo "<cxr-triage><gate><age-policy>ignore</age-policy></gate></cxr-triage>" >"$W/noage.xml"
"$CXR_BIN" score --config "$W/noage.xml" --model "$W/m.safetensors" --json "$DATA/cr_mono1_10_chest_nometa.dcm" \
    >"$W/score.json" 2>"$W/score.err" || fail "score with the trained model: $(cat "$W/score.err")"
grep -q '"probability"' "$W/score.json" || fail "score output: $(cat "$W/score.json")"
ok "score with the trained model"

# ---- Ctrl-C leaves a checkpoint; --resume finishes
"$CXR_BIN" train --data "$W/data" --val "$W/val" "${SMALL[@]}" --epochs 30 --seed 9 \
    --out "$W/int.safetensors" --checkpoint-dir "$W/ck" >"$W/int.out" 2>"$W/int.err" &
pid=$!
for _ in $(seq 1 600); do
    grep -q "epoch 2/30:" "$W/int.err" 2>/dev/null && break
    sleep 0.1
done
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 1 ] || fail "interrupted train exit $rc, expected 1: $(tail -3 "$W/int.err")"
grep -q "interrupted" "$W/int.err" && [ -s "$W/ck/checkpoint.safetensors" ] \
    || fail "no checkpoint after Ctrl-C: $(tail -3 "$W/int.err")"
[ ! -e "$W/int.safetensors" ] || fail "an interrupted run wrote the model"
"$CXR_BIN" train --data "$W/data" --val "$W/val" "${SMALL[@]}" --epochs 30 --seed 9 \
    --out "$W/int.safetensors" --checkpoint-dir "$W/ck" --resume >"$W/res.out" 2>"$W/res.err"
rc=$?
[ $rc -eq 1 ] || fail "resumed train exit $rc: $(tail -3 "$W/res.err")"
grep -q "resumed from" "$W/res.err" && grep -q "epoch 30/30:" "$W/res.err" && [ -s "$W/int.safetensors" ] \
    || fail "resume did not finish the run: $(tail -3 "$W/res.err")"
"$CXR_BIN" train --data "$W/data" --val "$W/val" "${SMALL[@]}" --epochs 30 --seed 10 \
    --out "$W/x.safetensors" --checkpoint-dir "$W/ck" --resume >/dev/null 2>"$W/bad.err"
[ $? -eq 2 ] && grep -q "other data or options" "$W/bad.err" || fail "resume with another seed accepted"
ok "Ctrl-C: checkpoint, exit 1; --resume finishes; a mismatched --resume is refused"

# ---- transfer learning with a frozen backbone
"$CXR_BIN" train --data "$W/data" --val "$W/val" --init "$W/m.safetensors" --freeze-backbone \
    --epochs 2 --batch 8 --threads 2 --accept-weak --out "$W/ft.safetensors" >/dev/null 2>"$W/ft.err"
[ $? -eq 1 ] || fail "fine-tuning: $(tail -3 "$W/ft.err")"
"$PY" - "$W/m.safetensors" "$W/ft.safetensors" <<'EOF' || fail "the frozen backbone changed"
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
            for k, v in h.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
changed = [k for k in a if a[k] != b[k]]
assert changed and all(k.startswith("fc.") for k in changed), changed
EOF
"$CXR_BIN" train --data "$W/data" --freeze-backbone --out "$W/y" 2>/dev/null
[ $? -eq 2 ] || fail "--freeze-backbone without --init accepted"
"$CXR_BIN" train --data "$W/data" 2>/dev/null
[ $? -eq 2 ] || fail "missing --out not a usage error"
"$CXR_BIN" train --data "$W/data" --out "$W/y" --epochs zero 2>/dev/null
[ $? -eq 2 ] || fail "bad --epochs not a usage error"
ok "--init --freeze-backbone trains only the fc; usage errors exit 2"

# ---- contrast normalisation travels in the model: training and inference alike
"$CXR_BIN" train --data "$W/data" --val "$W/val" "${SMALL[@]}" --epochs 1 --seed 5 --contrast equalize \
    --age-range 1-5 --out "$W/eq.safetensors" >/dev/null 2>"$W/eq.err"
[ $? -le 1 ] || fail "train --contrast equalize: $(tail -3 "$W/eq.err")"
"$CXR_BIN" model info --json "$W/eq.safetensors" | grep -q '"contrast": *"equalize"' \
    || fail "--contrast equalize not in the model's metadata"
"$CXR_BIN" model info --json "$W/m.safetensors" | grep -q '"contrast": *"none"' \
    || fail "the default model's contrast is not none"
"$CXR_BIN" train --data "$W/data" --out "$W/y" --contrast sharpen 2>/dev/null
[ $? -eq 2 ] || fail "bad --contrast not a usage error"
"$CXR_BIN" model info "$W/eq.safetensors" | grep -q "population: *age 1 to 5 years" \
    || fail "--age-range not in the model's metadata"
"$CXR_BIN" model info "$W/m.safetensors" | grep -q "population: *age 38 to 38 years" \
    || fail "without --age-range, the range is not the one measured on the DICOM ages (one file, 38Y)"
"$CXR_BIN" train --data "$W/data" --out "$W/y" --age-range 10-2 2>/dev/null
[ $? -eq 2 ] || fail "bad --age-range not a usage error"
ok "--contrast equalize and --age-range are stored in the model"

# ---- a Kermany subset, when the shared data is here
K=$CXR_SHARED_DATA/cxr-kermany
if [ -d "$K/train/NORMAL" ]; then
    for cls in NORMAL PNEUMONIA; do
        mkdir -p "$W/k/$cls" "$W/kt/$cls"
        ls "$K/train/$cls" | sort | head -24 | while read -r f; do cp "$K/train/$cls/$f" "$W/k/$cls/"; done
        ls "$K/test/$cls" | sort | head -8 | while read -r f; do cp "$K/test/$cls/$f" "$W/kt/$cls/"; done
    done
    "$CXR_BIN" train --data "$W/k" --arch resnet18 --width 8 --input 64x64 --epochs 3 --batch 8 \
        --threads 2 --accept-weak --out "$W/k.safetensors" >/dev/null 2>"$W/k.err" \
        || fail "Kermany subset: $(tail -3 "$W/k.err")"
    grep -q "patient groups" "$W/k.err" || fail "Kermany subset: no patient groups"
    "$CXR_BIN" evaluate --model "$W/k.safetensors" --data "$W/kt" --resamples 200 >"$W/kt.txt" 2>&1 \
        || fail "Kermany subset evaluate: $(tail -3 "$W/kt.txt")"
    ok "Kermany subset (48 images): trained and evaluated ($(grep AUC "$W/kt.txt" | tr -s ' '))"
else
    echo "[$T] SKIP Kermany subset: $K absent"
fi
echo "[$T] PASS"
