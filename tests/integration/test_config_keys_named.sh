#!/usr/bin/env bash
# test_config_keys_named.sh — every configuration key that a message names
# (an error, a not-analysed reason, a log line: "(gate/allow-secondary-capture)")
# is a key of the key table, spelled as the configuration file spells it. A
# reason once told admins to set gate/allow_secondary_capture, which no file
# can contain.
. "$(dirname "$0")/cli_lib.sh"
"$CXR_BIN" config doc >"${TMPDIR:-/tmp}/cxr-keys.$$" || fail "config doc"
trap 'rm -f "${TMPDIR:-/tmp}/cxr-keys.$$"' EXIT
"$CXR_PYTHON" - "$CXR_SOURCE_DIR" "${TMPDIR:-/tmp}/cxr-keys.$$" <<'PY' || fail "see above"
import os, re, sys
src, table = sys.argv[1], open(sys.argv[2]).read()
keys = set(re.findall(r"^\| `([a-z-]+/[a-z0-9-]+)` \|", table, re.M))
sections = {k.split("/")[0] for k in keys}
assert len(keys) > 60, f"only {len(keys)} keys read from `config doc`"
literal = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
named = re.compile(r"\b(" + "|".join(sorted(sections)) + r")/([a-z][a-z0-9_*-]*)")
bad, seen = [], 0
for folder in ("common", "conf", "dicom", "nn", "triage", "node", "train", "plugin", "cli"):
    for root, _, files in os.walk(os.path.join(src, folder)):
        for f in files:
            if not f.endswith((".c", ".cc", ".h")):
                continue
            path = os.path.join(root, f)
            for no, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                for lit in literal.findall(line):
                    for sec, key in named.findall(lit):
                        seen += 1
                        if f"{sec}/{key}" not in keys:
                            bad.append(f"{os.path.relpath(path, src)}:{no}: {sec}/{key}")
if bad:
    print("messages name keys the configuration does not have:\n  " + "\n  ".join(bad))
    sys.exit(1)
assert seen >= 20, f"only {seen} key names found in messages: the scan broke"
print(f"{seen} key names in messages, all in the key table")
PY
ok "PASS"
