#!/usr/bin/env bash
# test_deb_install.sh DEBDIR UPGRADEDIR — the Debian packages as an admin meets
# them, in a fresh Debian 12 root (CI runs it there through .ci/fresh-root; it
# changes the system it runs on, so never run it on a machine you care about).
#
#   1. apt-get install ./cxr-triage_*.deb ./orthanc-cxr-triage_*.deb from DEBDIR,
#      dependencies from Debian and nothing else; the files, the user, the state
#      folder, the man page; `systemd-analyze verify` of the unit is clean.
#   2. The node started exactly as the unit's ExecStartPre/ExecStart do, as its
#      User/Group with its UMask: C-ECHO and C-STORE of a chest X-ray with DCMTK,
#      its SR delivered to a DCMTK storescp; a second destination that is down
#      leaves a dead letter.
#   3. Debian's Orthanc with its packaged configuration plus the plugin's
#      snippet, as Debian's unit starts it: a chest X-ray uploaded over REST
#      gets its SR in the same study.
#   4. Upgrade to the packages of UPGRADEDIR (a higher version): the admin's
#      edited configuration, the spool, the job store, the worklist and the dead
#      letter survive; the node serves them again.
#   5. Remove keeps the state and the configuration; purge removes them.
set -uo pipefail
debs=${1:?usage: test_deb_install.sh DEBDIR UPGRADEDIR}
updebs=${2:?usage: test_deb_install.sh DEBDIR UPGRADEDIR}
src=$(cd "$(dirname "$0")/../.." && pwd)
chest="$src/tests/data/kermany_child_pneumonia_demo.dcm"   # inside the model's population
work=$(mktemp -d /tmp/cxr-deb-test.XXXXXX)
pids=()
export DEBIAN_FRONTEND=noninteractive

log() { printf '[deb-install] %s\n' "$*"; }
fail() {
    log "FAIL: $*"
    local f
    for f in "$work"/*.log /var/log/orthanc/*.log; do
        [ -f "$f" ] || continue
        log "---- last lines of $f"
        tail -n 30 "$f"
    done
    exit 1
}
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    return 0
}
trap cleanup EXIT
# wait_until SECONDS WHAT command...: polls a state; the time is a last resort.
wait_until() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    fail "timed out after ${secs}s waiting for: $what"
}
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs packages)"
one() {   # the single file matching a glob
    local m=("$@")
    [ ${#m[@]} -eq 1 ] && [ -f "${m[0]}" ] || fail "expected one file, found: ${m[*]}"
    printf '%s' "${m[0]}"
}
node_deb=$(one "$debs"/cxr-triage_*.deb)
plugin_deb=$(one "$debs"/orthanc-cxr-triage_*.deb)
up_node_deb=$(one "$updebs"/cxr-triage_*.deb)
up_plugin_deb=$(one "$updebs"/orthanc-cxr-triage_*.deb)
conf=/etc/cxr-triage/cxr-triage.xml
unit=/lib/systemd/system/cxr-triage.service

# ---- 1. install: the packages and what Debian resolves for them, nothing else
apt-get update -qq || fail "apt-get update"
apt-get install -y -q "$node_deb" "$plugin_deb" >"$work/apt-install.log" 2>&1 ||
    fail "apt-get install $node_deb $plugin_deb"
version=$(dpkg-query -W -f='${Version}' cxr-triage)
log "installed cxr-triage $version and orthanc-cxr-triage $(dpkg-query -W -f='${Version}' orthanc-cxr-triage)"
cxr-triage version >"$work/version.txt" || fail "cxr-triage version: $(cat "$work/version.txt")"
cxr-triage model info /usr/share/cxr-triage/cxr-default.safetensors >"$work/model.txt" ||
    fail "the bundled model does not load"
cxr-triage config check "$conf" >"$work/config.txt" 2>&1 ||
    fail "the packaged configuration does not pass config check: $(cat "$work/config.txt")"
grep -q '/usr/share/cxr-triage/cxr-default.safetensors' "$work/config.txt" ||
    fail "the packaged configuration does not use the packaged model"
[ -f /usr/share/cxr-triage/model-card.md ] || fail "no model card in /usr/share/cxr-triage"
[ -f /usr/share/man/man8/cxr-triage.8.gz ] || fail "no man page cxr-triage(8)"
dpkg-query -W -f='${Conffiles}\n' cxr-triage | grep -q " $conf " || fail "$conf is not a conffile"
getent passwd cxr-triage >/dev/null || fail "no system user cxr-triage"
[ "$(stat -c %U:%G "/var/lib/cxr-triage")" = cxr-triage:cxr-triage ] || fail "/var/lib/cxr-triage not owned by cxr-triage"
[ -e /usr/share/orthanc/plugins/libcxr_triage_orthanc.so ] || fail "the plugin is not in Orthanc's plugin folder"
[ -f /etc/orthanc/cxr-triage.json ] || fail "no /etc/orthanc/cxr-triage.json"
log "files, user, state folder, conffile, man page: as packaged"

# The unit, checked by systemd's own verifier (systemd does not run in a
# chroot: its binaries are enough for verify; man-db lets it check the unit's
# man: documentation link).
apt-get install -y -q --no-install-recommends systemd man-db >>"$work/apt-install.log" 2>&1 ||
    fail "cannot install systemd and man-db for systemd-analyze verify"
systemd-analyze verify "$unit" >"$work/verify.txt" 2>&1 || fail "systemd-analyze verify failed: $(cat "$work/verify.txt")"
[ ! -s "$work/verify.txt" ] || fail "systemd-analyze verify is not clean: $(cat "$work/verify.txt")"
log "systemd-analyze verify $unit: clean"

# The test's own peers, installed only now so that step 1 proved the packages'
# dependencies complete without them.
apt-get install -y -q --no-install-recommends dcmtk curl sqlite3 >>"$work/apt-install.log" 2>&1 ||
    fail "cannot install the test peers (dcmtk, curl, sqlite3)"
export TCP_NODELAY=1

# ---- 2. the node as the unit starts it
unit_value() { sed -n "s/^$1=//p" "$unit" | head -n 1; }
user=$(unit_value User)
group=$(unit_value Group)
umask_=$(unit_value UMask)
pre=$(unit_value ExecStartPre)
start=$(unit_value ExecStart)
[ -n "$user" ] && [ -n "$start" ] || fail "the unit has no User= or ExecStart="
# as_unit COMMAND-LINE: the unit's user, group, umask and working folder. It
# execs: run it in a subshell or in the background (then $! is the command).
as_unit() {
    cd / && umask "$umask_" &&
        exec setpriv --reuid="$user" --regid="$group" --init-groups --reset-env /bin/sh -c "exec $1"
}
pacs_port=11200
down_port=11201
# An admin's edits: a PACS, an off-site archive that is down (one attempt, so
# its SR is dead-lettered at once), a short stability wait.
sed -i -e "s|</cxr-triage>|  <destination><name>pacs</name><ae-title>PACS</ae-title><host>127.0.0.1</host><port>$pacs_port</port></destination>\n  <destination><name>offsite</name><ae-title>OFFSITE</ae-title><host>127.0.0.1</host><port>$down_port</port></destination>\n</cxr-triage>|" \
    -e 's|<retry-max-attempts>12</retry-max-attempts>|<retry-max-attempts>1</retry-max-attempts>|' \
    -e 's|<study-stable-seconds>5</study-stable-seconds>|<study-stable-seconds>1</study-stable-seconds>|' "$conf"
grep -q "<name>offsite</name>" "$conf" || fail "could not edit $conf"

start_node() {
    (as_unit "$pre") >"$work/pre.log" 2>&1 || fail "ExecStartPre ($pre) failed: $(cat "$work/pre.log")"
    as_unit "$start" >>"$work/node.log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
    node_up() {
        kill -0 "$node_pid" 2>/dev/null || fail "the node exited during start-up"
        echoscu -aet PROBE -aec CXRTRIAGE 127.0.0.1 11112 >/dev/null 2>&1
    }
    wait_until 120 "the node to answer C-ECHO on 11112" node_up
}
stop_node() {   # as systemctl stop: SIGTERM, exit 0
    kill -TERM "$node_pid"
    wait "$node_pid"
    local rc=$?
    [ "$rc" -eq 0 ] || fail "the node exited with $rc after SIGTERM"
}
start_node
[ "$(stat -c %U /var/lib/cxr-triage/spool/jobs.sqlite)" = "$user" ] || fail "the job store is not owned by $user"
log "node started as the unit does (user $user, umask $umask_); C-ECHO answered"

mkdir -p "$work/pacs"
storescp -aet PACS -od "$work/pacs" "$pacs_port" >"$work/storescp.log" 2>&1 &
pids+=($!)
pacs_up() { echoscu -aet PROBE -aec PACS 127.0.0.1 "$pacs_port" >/dev/null 2>&1; }
wait_until 30 "storescp up" pacs_up
storescu -aet CR01 -aec CXRTRIAGE 127.0.0.1 11112 "$chest" >"$work/storescu.log" 2>&1 || fail "storescu to the node"
study=$(dcmdump +P 0020,000d "$chest" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -n 1)
[ -n "$study" ] || fail "no Study Instance UID in $chest"
sr_at_pacs() { [ "$(find "$work/pacs" -type f | wc -l)" -ge 1 ]; }
wait_until 180 "the SR at the PACS (storescp)" sr_at_pacs
sr=$(find "$work/pacs" -type f | head -n 1)
dcm_value() { dcmdump +P "$2" "$1" | head -n 1 | sed -n 's/.*\[\(.*\)\].*/\1/p'; }
[ "$(dcm_value "$sr" 0008,0060)" = SR ] || fail "what reached the PACS is not an SR"
[ "$(dcm_value "$sr" 0020,000d)" = "$study" ] || fail "the SR is not in the study ($(dcm_value "$sr" 0020,000d))"
curl -sf http://127.0.0.1:8090/status | grep -q '"untrained":false' ||
    fail "the bundled model is not reported as trained on /status: $(curl -s http://127.0.0.1:8090/status)"
worklist_has_study() { curl -sf http://127.0.0.1:8090/worklist | grep -q "$study"; }
wait_until 30 "the study on the worklist" worklist_has_study
queue() { setpriv --reuid="$user" --regid="$group" --init-groups cxr-triage queue "$@" --config "$conf"; }
dead_letter() { queue list --dead 2>/dev/null | grep -q offsite; }
wait_until 60 "the off-site delivery in the dead letters" dead_letter
log "C-STORE -> SR at the PACS ($(basename "$sr")), study on the worklist, off-site SR dead-lettered"

# ---- 3. Debian's Orthanc with the plugin
orthanc_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/orthanc.service)
[ -n "$orthanc_start" ] || fail "no ExecStart in orthanc.service"
(cd / && exec setpriv --reuid=orthanc --regid=orthanc --init-groups --reset-env /bin/sh -c "exec $orthanc_start") \
    >"$work/orthanc.log" 2>&1 &
orthanc_pid=$!
pids+=("$orthanc_pid")
orthanc_up() {
    kill -0 "$orthanc_pid" 2>/dev/null || fail "Orthanc exited during start-up (see /var/log/orthanc)"
    curl -sf http://127.0.0.1:8042/system >/dev/null
}
wait_until 120 "Orthanc's REST API on 8042" orthanc_up
curl -sf http://127.0.0.1:8042/plugins | grep -q cxr-triage || fail "Orthanc did not load the plugin: $(curl -s http://127.0.0.1:8042/plugins)"
status() { curl -sf http://127.0.0.1:8042/cxr-triage/status; }
status >"$work/plugin-status.json" || fail "GET /cxr-triage/status"
dcmconv +F "$chest" "$work/chest-part10.dcm" || fail "dcmconv"
curl -sf -X POST --data-binary @"$work/chest-part10.dcm" http://127.0.0.1:8042/instances >"$work/upload.json" ||
    fail "upload to Orthanc"
ostudy=$(sed -n 's/.*"ParentStudy" *: *"\([^"]*\)".*/\1/p' "$work/upload.json")
[ -n "$ostudy" ] || fail "no ParentStudy in Orthanc's answer: $(cat "$work/upload.json")"
sr_in_study() {
    curl -sf "http://127.0.0.1:8042/studies/$ostudy/series?expand" | grep -q '"Modality" *: *"SR"'
}
# Debian's orthanc.json keeps Orthanc's StableAge of 60 s: the study is scored a
# minute after its last image.
wait_until 300 "the SR in the Orthanc study (StableAge 60 s, then scoring)" sr_in_study
log "Orthanc $(curl -sf http://127.0.0.1:8042/system | sed -n 's/.*"Version" *: *"\([^"]*\)".*/\1/p') loaded the plugin from the packaged snippet; the uploaded chest X-ray got its SR in the study"
kill -TERM "$orthanc_pid"
wait "$orthanc_pid"

# ---- 4. upgrade with the node stopped (as systemd does around an upgrade)
stop_node
cp "$conf" "$work/conf-before-upgrade.xml"
apt-get install -y -q "$up_node_deb" "$up_plugin_deb" >"$work/apt-upgrade.log" 2>&1 ||
    fail "apt-get install of the upgrade"
upversion=$(dpkg-query -W -f='${Version}' cxr-triage)
dpkg --compare-versions "$upversion" gt "$version" || fail "the upgrade did not raise the version ($version -> $upversion)"
cmp -s "$conf" "$work/conf-before-upgrade.xml" || fail "the upgrade changed the admin's configuration"
start_node
worklist_has_study || fail "the study received before the upgrade is not on the worklist"
dead_letter || fail "the dead letter did not survive the upgrade"
log "upgraded $version -> $upversion: configuration kept, study on the worklist, dead letter kept"
stop_node

# ---- 5. remove keeps, purge removes
apt-get remove -y -q orthanc-cxr-triage cxr-triage >"$work/apt-remove.log" 2>&1 || fail "apt-get remove"
[ ! -e /usr/bin/cxr-triage ] || fail "remove left /usr/bin/cxr-triage"
[ -f /var/lib/cxr-triage/spool/jobs.sqlite ] || fail "remove deleted the job store"
[ -f "$conf" ] || fail "remove deleted the configuration"
apt-get purge -y -q orthanc-cxr-triage cxr-triage >>"$work/apt-remove.log" 2>&1 || fail "apt-get purge"
[ ! -e /var/lib/cxr-triage ] || fail "purge left /var/lib/cxr-triage"
[ ! -e "$conf" ] || fail "purge left $conf"
[ ! -e /etc/orthanc/cxr-triage.json ] || fail "purge left /etc/orthanc/cxr-triage.json"
log "remove kept state and configuration; purge removed them"
rm -rf "$work"
log "PASS"
