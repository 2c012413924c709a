#!/usr/bin/env bash
# test_train_weak.sh — `train` does not install a model that is not clearly
# better than chance (issue 16, finding 6: a 1-epoch run wrote a model with
# validation AUC 0.306 and specificity 0 to --out, exit 0, no word):
#   - images whose labels have nothing to do with their pixels, 1 epoch: a
#     warning with the validation AUC and its interval, exit 1, --out (an
#     existing model there) unchanged, the model left at --out.weak (it
#     loads), the report carries the warning;
#   - the same with --accept-weak: the warning, exit 0, the model at --out;
#   - learnable images (stripes across vs down), enough epochs: no warning,
#     exit 0, the model at --out and no .weak file.
# Small and fast: resnet18 at width 4, 48x48, a few dozen 56x56 PNGs.
. "$(dirname "$0")/cli_lib.sh"
export CXR_LOG_LEVEL=warn
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
SMALL=(--arch resnet18 --width 4 --input 48x48 --batch 8 --threads 2 --seed 3)

# noise/{data,val}: labels independent of the pixels; stripes/{data,val}: learnable
"$CXR_PYTHON" - "$W" <<'EOF' || fail "cannot write the PNGs"
import math, os, random, struct, sys, zlib
root = sys.argv[1]
def png(path, w, h, pix):
    raw = b"".join(b"\0" + bytes(pix[r * w:(r + 1) * w]) for r in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
rnd = random.Random(11)
def noise(cls):
    return [rnd.randrange(256) for _ in range(56 * 56)]
def stripes(cls):
    per, ph = rnd.uniform(6, 12), rnd.uniform(0, 6.28)
    return [max(0, min(255, int(128 + 90 * math.sin(2 * math.pi * (c if cls else r) / per + ph)
                               + rnd.gauss(0, 20)))) for r in range(56) for c in range(56)]
for kind, make in (("noise", noise), ("stripes", stripes)):
    for split, n in (("data", 14), ("val", 6)):
        for cls, name in ((0, "NORMAL"), (1, "PNEUMONIA")):
            d = os.path.join(root, kind, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                png(os.path.join(d, f"person{1000 * cls + 100 * (split == 'val') + i}_img{i}.png"),
                    56, 56, make(cls))
EOF

# ---- weak, not accepted: --out keeps the model that was there
"$CXR_BIN" model init --arch resnet18 --input 48x48 --seed 1 --out "$W/installed.safetensors" >/dev/null ||
    fail "model init"
before=$(sha256sum "$W/installed.safetensors" | cut -d' ' -f1)
rc=0
"$CXR_BIN" train --data "$W/noise/data" --val "$W/noise/val" "${SMALL[@]}" --epochs 1 \
    --out "$W/installed.safetensors" --report "$W/weak.html" >"$W/weak.out" 2>"$W/weak.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a weak model: exit $rc, expected 1: $(tail -5 "$W/weak.err")"
grep -q "WARNING: the kept model is not clearly better than chance on the 12 validation images (AUC [0-9.]*, 95 % CI \[[0-9.]*, [0-9.]*\]" "$W/weak.err" ||
    fail "no warning with the AUC and its interval: $(cat "$W/weak.err")"
grep -q "installed.safetensors was not written; the model is at $W/installed.safetensors.weak" "$W/weak.err" ||
    fail "the exit message does not say where the model is: $(tail -3 "$W/weak.err")"
[ "$(sha256sum "$W/installed.safetensors" | cut -d' ' -f1)" = "$before" ] || fail "a weak model replaced --out"
"$CXR_BIN" model info "$W/installed.safetensors.weak" >/dev/null || fail "the .weak model does not load"
grep -q 'class="warning"><b>Warning:</b> the kept model is not clearly better than chance' "$W/weak.html" ||
    fail "the report does not carry the warning"
grep -q "WEAK" "$W/weak.out" || fail "the summary line does not say WEAK: $(cat "$W/weak.out")"
ok "weak model: $(grep -o 'AUC [0-9.]*, 95 % CI \[[0-9., ]*\]' "$W/weak.err" | head -1); exit 1, --out unchanged, left at .weak"

# ---- weak, accepted
rc=0
"$CXR_BIN" train --data "$W/noise/data" --val "$W/noise/val" "${SMALL[@]}" --epochs 1 --accept-weak \
    --out "$W/accepted.safetensors" >"$W/acc.out" 2>"$W/acc.err" || rc=$?
[ "$rc" -eq 0 ] || fail "--accept-weak: exit $rc, expected 0: $(tail -5 "$W/acc.err")"
grep -q "WARNING: the kept model is not clearly better than chance" "$W/acc.err" ||
    fail "--accept-weak without the warning: $(cat "$W/acc.err")"
grep -q -- "--accept-weak: it was written to --out" "$W/acc.err" || fail "the warning does not say it was kept"
"$CXR_BIN" model info "$W/accepted.safetensors" >/dev/null || fail "--accept-weak: no model at --out"
[ ! -e "$W/accepted.safetensors.weak" ] || fail "--accept-weak also wrote a .weak file"
ok "--accept-weak: warning, exit 0, model at --out"

# ---- a learnable set: no warning
rc=0
"$CXR_BIN" train --data "$W/stripes/data" --val "$W/stripes/val" "${SMALL[@]}" --epochs 30 \
    --out "$W/good.safetensors" >"$W/good.out" 2>"$W/good.err" || rc=$?
[ "$rc" -eq 0 ] || fail "a learnable set: exit $rc: $(tail -5 "$W/good.err")"
! grep -q "WARNING" "$W/good.err" || fail "a clearly better than chance model was called weak: $(grep WARNING "$W/good.err")"
[ -s "$W/good.safetensors" ] && [ ! -e "$W/good.safetensors.weak" ] || fail "the good model is not at --out"
ok "learnable set: $(grep -o 'validation AUC [0-9.]*' "$W/good.out"), no warning, model at --out"
echo "[$T] PASS"
