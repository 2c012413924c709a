#!/usr/bin/env bash
# bench/orthanc_suite.sh — Orthanc's own integration test
# test_decode_transfer_syntax (orthanc-tests, tag Orthanc-1.10.1) against an
# Orthanc that loads the plugin, to show that the plugin leaves Orthanc's
# behaviour as it was:
#
#   bench/orthanc_suite.sh ORTHANC_TESTS
#
# ORTHANC_TESTS: a checkout of https://github.com/orthanc-server/orthanc-tests
# at tag Orthanc-1.10.1, or a git directory holding that tag (its Tests/ and
# Database/{TransferSyntaxes,Lua} are taken). Nothing is downloaded. The test
# is run three times, each in its own Python process:
#   1. against an Orthanc without the plugin (the reference);
#   2. against an Orthanc with the plugin, before the plugin read any image;
#   3. against the same Orthanc after the plugin scored a chest image
#      (the plugin once registered a JPEG 2000 decoder into the DCMTK it
#      shares with Orthanc at that point, and the test then failed).
# Exit status 1 when run 2 or 3 does not end as run 1 did.
# The suite was written for Python 2: a copy is converted with Python 3's
# lib2to3 first. Its test case also needs a second Orthanc (its "local"
# instance, AET ORTHANCTEST): the Orthanc of run 1 plays it. Needs Orthanc,
# the plugin (build target cxr_triage_orthanc), DCMTK tools, pydicom,
# httplib2 and Pillow for /usr/bin/python3 (skips otherwise).
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
OT=${1:-}
if [ -z "$OT" ] || [ "$OT" = -h ] || [ "$OT" = --help ]; then
    sed -n '2,25p' "$0"
    [ -n "$OT" ] && exit 0
    echo "SKIP bench/orthanc_suite.sh: give the orthanc-tests checkout (tag Orthanc-1.10.1)"
    exit 0
fi
export CXR_SOURCE_DIR=$SRC CXR_BUILD_DIR=${BUILD:-$SRC/build}
. "$SRC/tests/integration/orthanc_lib.sh"
skip() {
    echo "SKIP bench/orthanc_suite.sh: $*"
    exit 0
}
need_orthanc
"$CXR_PYTHON" -c 'import httplib2, PIL, lib2to3' 2>/dev/null ||
    skip "$CXR_PYTHON lacks httplib2, Pillow or lib2to3 (python3-httplib2, python3-pil)"
setup_work

# ---- the suite, converted to Python 3
mkdir -p "$WORK/ot"
if [ -d "$OT/Tests" ]; then
    cp -r "$OT/Tests" "$WORK/ot/" && mkdir -p "$WORK/ot/Database" &&
        cp -r "$OT/Database/TransferSyntaxes" "$OT/Database/Lua" "$WORK/ot/Database/" ||
        fail "cannot copy Tests/ and Database/ from $OT"
else
    git --git-dir="$OT" archive Orthanc-1.10.1 Tests Database/TransferSyntaxes Database/Lua \
        2>"$WORK/archive.log" | tar -x -C "$WORK/ot"
fi
[ -f "$WORK/ot/Tests/Tests.py" ] && [ -f "$WORK/ot/Database/TransferSyntaxes/1.2.840.10008.1.2.4.90.dcm" ] ||
    fail "$OT is neither a checkout nor a git directory of orthanc-tests with tag Orthanc-1.10.1"

"$CXR_PYTHON" -m lib2to3 -w -n "$WORK/ot/Tests/Tests.py" "$WORK/ot/Tests/Toolbox.py" \
    >"$WORK/2to3.log" 2>&1 || fail "lib2to3 could not convert the suite (see $WORK/2to3.log)"

# ---- two Orthancs: the reference (no plugin, also the suite's "local"
# instance) and the one with the plugin
make_model
write_cxr_conf "$WORK/cxr.xml"
REF_HTTP=$(free_port)
REF_DICOM=$(free_port)
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)
EXTRA='"ExecuteLuaEnabled": true, "DicomModalities": {}'
write_orthanc_json "$WORK/orthanc.json" "$EXTRA"
mkdir -p "$WORK/ref"
sed -e "s#$WORK/orthanc-db#$WORK/ref/db#g" -e "s#\"HttpPort\": $HTTP_PORT#\"HttpPort\": $REF_HTTP#" \
    -e "s#\"DicomPort\": $DICOM_PORT#\"DicomPort\": $REF_DICOM#" -e 's#"DicomAet": "ORTHANC"#"DicomAet": "ORTHANCTEST"#' \
    -e '/"Plugins"/d' -e '/"CxrTriage"/d' "$WORK/orthanc.json" >"$WORK/ref/orthanc.json"
(cd "$WORK/ref" && exec Orthanc "$WORK/ref/orthanc.json" >"$WORK/ref/orthanc.log" 2>&1) &
NODE_PIDS+=($!)
start_orthanc
ref_up() { curl -sf --max-time 5 "http://127.0.0.1:$REF_HTTP/system" >/dev/null; }
wait_until 60 "the reference Orthanc's REST API" ref_up
[ "$(status_field state)" = ready ] || fail "plugin not ready: $(status_field reason)"

# run_suite HTTP DICOM AET: test_decode_transfer_syntax against that Orthanc
run_suite() {
    (cd "$WORK/ot/Tests" && "$CXR_PYTHON" -W ignore - "$@" <<'PY'
import sys, unittest
http, dicom, aet = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ref_http, ref_dicom = int(sys.argv[4]), int(sys.argv[5])
sys.argv = sys.argv[:1]
import Tests, Toolbox
local = Toolbox.DefineOrthanc(server="127.0.0.1", restPort=ref_http, aet="ORTHANCTEST", dicomPort=ref_dicom)
remote = Toolbox.DefineOrthanc(server="127.0.0.1", restPort=http, aet=aet, dicomPort=dicom)
Tests.SetOrthancParameters(local, remote, False)
r = unittest.TextTestRunner(verbosity=2).run(unittest.TestSuite([Tests.Orthanc("test_decode_transfer_syntax")]))
sys.exit(0 if r.wasSuccessful() else 1)
PY
    ) >>"$WORK/suite.log" 2>&1
    echo $?
}
ref=$(run_suite "$REF_HTTP" "$REF_DICOM" ORTHANCTEST "$REF_HTTP" "$REF_DICOM")
before=$(run_suite "$HTTP_PORT" "$DICOM_PORT" ORTHANC "$REF_HTTP" "$REF_DICOM")

# the plugin scores a chest image
make_instances "$WORK/cr" 1 1 6161
send_dicom "$WORK"/cr/*.dcm || fail "storescu to Orthanc failed"
scored() { [ "$(status_field counts.srs_stored)" -ge 1 ]; }
wait_until 120 "the plugin to score a chest image" scored
after=$(run_suite "$HTTP_PORT" "$DICOM_PORT" ORTHANC "$REF_HTTP" "$REF_DICOM")

word() { [ "$1" = 0 ] && echo passed || echo FAILED; }
echo "test_decode_transfer_syntax (orthanc-tests Orthanc-1.10.1), Orthanc $(ocurl /system | "$CXR_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Version"])'):"
echo "  without the plugin:                      $(word "$ref")"
echo "  with the plugin, before it read an image: $(word "$before")"
echo "  with the plugin, after it scored one:     $(word "$after")"
if [ "$before" != "$ref" ] || [ "$after" != "$ref" ]; then
    echo "the plugin changes Orthanc's behaviour; the suite's output:"
    grep -E "^(FAIL|ERROR|AssertionError|Exception)|Error:" "$WORK/suite.log" | head -n 20
    exit 1
fi
