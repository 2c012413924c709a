#!/usr/bin/env bash
# test_make_run.sh — the README's first command, `make run`, on a fresh
# machine (CI runs it first thing in a fresh Debian 12 root, before `make
# test`): it installs what it needs, builds, and starts the node on the
# embedded defaults; then the README's "Try it" commands (storescu of the
# example file, curl of the worklist) run as written and the study shows up
# scored; Ctrl-C (SIGINT) stops the node cleanly.
set -uo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d /tmp/cxr-make-run.XXXXXX)
log() { printf '[make-run] %s\n' "$*"; }
fail() {
    log "FAIL: $*"
    log "---- last lines of make run's output"
    tail -n 40 "$work/run.log"
    exit 1
}
pgid=""
cleanup() {
    [ -n "$pgid" ] && kill -9 -- "-$pgid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The README's "Try it" block: the lines after "Try it:" up to the end of the
# code block, run as they are written.
mapfile -t try < <(awk '/Try it:$/ { on = 1; next } on && /^```sh/ { inside = 1; next }
                        inside && /^```/ { exit } inside { sub(/[[:space:]]+#.*/, ""); print }' README.md)
[ ${#try[@]} -ge 2 ] || fail "no 'Try it' commands found in README.md"
echo "${try[0]}" | grep -q '^storescu ' || fail "README's first 'Try it' line is not a storescu: ${try[0]}"

# make run in its own process group, as a terminal would run it.
setsid make run >"$work/run.log" 2>&1 &
pgid=$!
# It installs Debian packages and builds on a fresh machine: minutes. The
# limit is only a last resort; it waits for the node's "listening" line.
for ((i = 0; i < 3600; i++)); do
    grep -q 'listening: DICOM' "$work/run.log" && break
    kill -0 "$pgid" 2>/dev/null || fail "make run exited before the node listened"
    sleep 1
done
grep -q 'listening: DICOM' "$work/run.log" || fail "make run: the node did not listen within an hour"
log "make run: the node listens ($(grep -c '^install-deps: installing' "$work/run.log") install step(s) ran)"

eval "${try[0]}" >"$work/storescu.log" 2>&1 || fail "README: '${try[0]}' failed: $(cat "$work/storescu.log")"
file=${try[0]##* }
study=$(dcmdump +P 0020,000d "$file" | head -n 1 | sed -n 's/.*\[\(.*\)\].*/\1/p')
[ -n "$study" ] || fail "no Study Instance UID in $file"
worklist="${try[1]}"
echo "$worklist" | grep -q '^curl ' || fail "README's second 'Try it' line is not a curl: $worklist"
for ((i = 0; i < 600; i++)); do
    eval "$worklist" >"$work/worklist.json" 2>/dev/null &&
        grep -q "\"$study\"" "$work/worklist.json" && grep -q '"score":[0-9]' "$work/worklist.json" && break
    sleep 0.5
done
grep -q "\"$study\"" "$work/worklist.json" || fail "README: the stored study is not on '$worklist' within 5 min"
log "README's Try it: the example study is on the worklist: $(head -c 300 "$work/worklist.json")"

kill -INT -- "-$pgid"
wait "$pgid"
rc=$?
pgid=""
# make reports the interrupted recipe; what counts is that the node stopped
# cleanly and said so.
grep -q 'node: stopped' "$work/run.log" || fail "no clean stop in the node's log after Ctrl-C (make exited $rc)"
log "Ctrl-C: the node stopped (make exited $rc)"
log "PASS"
