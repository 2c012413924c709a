# cli_lib.sh — the prologue of the command-line tests (test_cli_score.sh,
# test_train_cli.sh, test_default_model.sh; sourced, not a test itself):
# defaults for running a script by hand, fail/ok/skip, and a skip when the
# binary is missing. Exit 77 means "skipped" to CTest.
#
# Environment (set by CTest): CXR_BIN, CXR_SOURCE_DIR, CXR_BUILD_DIR,
# CXR_SHARED_DATA, CXR_PYTHON.
set -u
: "${CXR_SOURCE_DIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CXR_BUILD_DIR:=$CXR_SOURCE_DIR/build}"
: "${CXR_BIN:=$CXR_BUILD_DIR/cxr-triage}"
: "${CXR_SHARED_DATA:=$CXR_SOURCE_DIR/../shared/data}"
: "${CXR_PYTHON:=/usr/bin/python3}"

T=$(basename "$0" .sh)
fail() { echo "[$T] FAIL: $*"; exit 1; }
ok() { echo "[$T] ok: $*"; }
skip() { echo "[$T] SKIP: $*"; exit 77; }
[ -x "$CXR_BIN" ] || skip "no binary $CXR_BIN"
