# orthanc_lib.sh — helpers shared by tests/integration/test_orthanc_*.sh
# (sourced, not a test itself). Each test starts a REAL Orthanc (Debian's
# `orthanc` package) with its own temporary JSON configuration, free ports
# and storage folder, and the plugin loaded from the build folder; DCMTK's
# storescu/storescp are the DICOM peers. The packaged service (if the package
# started one on 8042/4242) is left alone: these Orthancs use other ports.
# Exit 77 means "skipped". The generic helpers (work folder, ports, test
# model, synthetic images, dciodvfy, storescp) come from node_lib.sh.
#
# Environment (set by CTest; defaults for running a script by hand):
#   CXR_BIN, CXR_SOURCE_DIR, CXR_BUILD_DIR, CXR_SHARED_DATA, CXR_PYTHON

. "$(dirname "${BASH_SOURCE[0]}")/node_lib.sh"

PLUGIN_SO="$CXR_BUILD_DIR/libcxr_triage_orthanc.so"
ORTHANC_PID=""

# Prints the Orthanc log tail and fails the test.
fail() {
    log "FAIL: $*"
    if [ -n "$WORK" ] && [ -f "$WORK/orthanc.log" ]; then
        log "---- last lines of Orthanc's log"
        tail -n 60 "$WORK/orthanc.log"
    fi
    exit 1
}

need_orthanc() {
    need_tools Orthanc storescu dcmdump curl "$@"
    [ -f "$PLUGIN_SO" ] || skip "no plugin at $PLUGIN_SO (needs orthanc-dev; build the cxr_triage_orthanc target)"
    "$CXR_PYTHON" -c 'import pydicom' 2>/dev/null || skip "$CXR_PYTHON lacks pydicom (python3-pydicom)"
    # A plugin built with the sanitizers would need libasan preloaded into
    # Orthanc, and Debian's Orthanc 1.10.1 then hangs at start-up (a glibc
    # locale lock in std::locale, with or without any plugin): the plugin's
    # core runs under the sanitizers in check_plugin; run these tests on a
    # plain build (by hand: CXR_ORTHANC_WRAP="valgrind ..." for memcheck).
    if ldd "$PLUGIN_SO" | grep -q libasan; then
        skip "sanitizer build: Orthanc 1.10.1 hangs with libasan preloaded (see orthanc_lib.sh)"
    fi
}

# The files of ../shared/data/dicom-cxr (all of them), or synthetic CR
# images on a clean clone. Sets FILES and SOURCE.
pick_chest_files() {
    FILES=()
    if [ -f "$CXR_SHARED_DATA/dicom-cxr/MANIFEST.tsv" ]; then
        local path
        while IFS=$'\t' read -r path _; do
            [ "$path" = path ] || FILES+=("$CXR_SHARED_DATA/dicom-cxr/$path")
        done <"$CXR_SHARED_DATA/dicom-cxr/MANIFEST.tsv"
        SOURCE="the ${#FILES[@]} real chest files of $CXR_SHARED_DATA/dicom-cxr"
    else
        local f
        for f in "$CXR_SOURCE_DIR"/tests/data/*.dcm; do
            case "$(dcm_value "$f" 0008,0060)" in CR | DX) FILES+=("$f") ;; esac
        done
        make_instances "$WORK/synth" 6 3 301
        FILES+=("$WORK"/synth/*.dcm)
        SOURCE="no $CXR_SHARED_DATA/dicom-cxr (a fresh clone): tests/data CR/DX files and synthetic CR images"
    fi
}

# write_cxr_conf FILE [EXTRA_XML]: the plugin's XML configuration (the test
# model, 1 thread, batches of 4, SC images analysed, queue in $WORK/state).
write_cxr_conf() {
    local file=$1 extra=${2:-}
    cat >"$file" <<EOF
<cxr-triage>
  <model><path>${MODEL_PATH:-$WORK/model.safetensors}</path><threads>1</threads><batch-size>4</batch-size></model>
  <gate><allow-secondary-capture>${ALLOW_SC:-true}</allow-secondary-capture>${GATE_EXTRA:-}</gate>
  <log><level>info</level></log>
  <plugin><state-dir>$WORK/state</state-dir>${PLUGIN_EXTRA:-}</plugin>
  $extra
</cxr-triage>
EOF
}

# write_orthanc_json FILE [EXTRA_JSON_MEMBERS]: Orthanc's configuration for
# this test ($HTTP_PORT, $DICOM_PORT; StableAge $STABLE_AGE, default 1).
write_orthanc_json() {
    local file=$1 extra=${2:-}
    cat >"$file" <<EOF
{
  "Name": "cxr-triage-test",
  "StorageDirectory": "$WORK/orthanc-db",
  "IndexDirectory": "$WORK/orthanc-db",
  "HttpPort": $HTTP_PORT,
  "DicomPort": $DICOM_PORT,
  "DicomAet": "ORTHANC",
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "HttpServerEnabled": true,
  "StableAge": ${STABLE_AGE:-1},
  "SaveJobs": false,
  "Plugins": ["$PLUGIN_SO"],
  "CxrTriage": { "ConfigFile": "$WORK/cxr.xml" ${JSON_CT_EXTRA:-} },
  "UserMetadata": {
    "CxrTriagePriority": 7701, "CxrTriageLevel": 7702, "CxrTriageScore": 7703,
    "CxrTriageModel": 7704, "CxrTriageScoredAt": 7705, "CxrTriageSr": 7706,
    "CxrTriageRouted": 7707
  }${extra:+,
  $extra}
}
EOF
}

ourl() { printf 'http://127.0.0.1:%s%s' "$HTTP_PORT" "$1"; }
ocurl() { curl -sf --max-time 30 "$(ourl "$1")"; }

# start_orthanc: starts Orthanc on $WORK/orthanc.json and waits until its
# REST API answers (fails if it exits first).
start_orthanc() {
    # CXR_ORTHANC_WRAP: a command Orthanc runs under (e.g. valgrind), by hand
    (cd "$WORK" && exec ${CXR_ORTHANC_WRAP:-} Orthanc "$WORK/orthanc.json" \
        >>"$WORK/orthanc.log" 2>&1) &
    ORTHANC_PID=$!
    NODE_PIDS+=("$ORTHANC_PID")
    local i
    for i in $(seq 1 "${CXR_ORTHANC_START_TENTHS:-300}"); do
        kill -0 "$ORTHANC_PID" 2>/dev/null || fail "Orthanc exited during start-up"
        ocurl /system >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "Orthanc did not answer within 30 s"
}

# stop_orthanc: SIGTERM; Orthanc must exit by itself with status 0.
stop_orthanc() {
    kill -TERM "$ORTHANC_PID" 2>/dev/null || fail "Orthanc not running at stop"
    local i
    for i in $(seq 1 600); do
        if ! kill -0 "$ORTHANC_PID" 2>/dev/null; then
            wait "$ORTHANC_PID"
            local rc=$?
            [ "$rc" -eq 0 ] || fail "Orthanc exited with $rc after SIGTERM"
            return 0
        fi
        sleep 0.1
    done
    fail "Orthanc did not exit within 60 s of SIGTERM"
}

# send_dicom FILE...: C-STORE to Orthanc, the files as they are (one
# association per transfer syntax: storescu proposes a compressed syntax
# only when told which).
send_dicom() {
    local f ts rc=0
    declare -A groups=()
    for f in "$@"; do
        ts=$(dcmdump +P 0002,0010 "$f" 2>/dev/null | sed -n 's/.*UI \[\{0,1\}=\{0,1\}\([^] ]*\).*/\1/p' | head -n 1)
        groups[${ts:-none}]+="$f"$'\n'
    done
    for ts in "${!groups[@]}"; do
        local opt=""
        case "$ts" in
        JPEG2000LosslessOnly | 1.2.840.10008.1.2.4.90) opt=-xv ;;
        JPEG2000 | 1.2.840.10008.1.2.4.91) opt=-xw ;;
        JPEGLSLossless | 1.2.840.10008.1.2.4.80) opt=-xt ;;
        JPEGLSLossy | 1.2.840.10008.1.2.4.81) opt=-xu ;;
        JPEGBaseline | 1.2.840.10008.1.2.4.50) opt=-xy ;;
        JPEGExtended:Process2+4 | 1.2.840.10008.1.2.4.51) opt=-xx ;;
        JPEGLossless* | 1.2.840.10008.1.2.4.57 | 1.2.840.10008.1.2.4.70) opt=-xs ;;
        RLELossless | 1.2.840.10008.1.2.5) opt=-xr ;;
        esac
        local list=()
        mapfile -t list < <(printf '%s' "${groups[$ts]}")
        storescu -nh $opt -aet MODALITY -aec ORTHANC 127.0.0.1 "$DICOM_PORT" "${list[@]}" \
            >>"$WORK/storescu.log" 2>&1 || rc=1
    done
    return $rc
}

# A field of GET /cxr-triage/status, e.g. status_field queue.depth
status_field() {
    ocurl /cxr-triage/status | "$CXR_PYTHON" -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"
}

# True when the plugin has nothing left to do: queue empty.
plugin_idle() { [ "$(status_field queue.depth)" = 0 ]; }

# SR instances (Orthanc IDs) of a study, one per line.
study_srs() {
    ocurl "/studies/$1/series" | "$CXR_PYTHON" -c '
import json, sys
for s in json.load(sys.stdin):
    if s["MainDicomTags"].get("Modality") == "SR":
        for i in s["Instances"]:
            print(i)'
}

# Orthanc study ID of a Study Instance UID.
study_id_of() {
    curl -sf --max-time 30 -X POST -H 'Content-Type: application/json' \
        --data "{\"Level\":\"Study\",\"Query\":{\"StudyInstanceUID\":\"$1\"}}" "$(ourl /tools/find)" |
        "$CXR_PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(r[0] if r else "")'
}

# A metric of /tools/metrics-prometheus (empty when absent).
orthanc_metric() {
    ocurl /tools/metrics-prometheus | awk -v m="$1" '$1 == m { print $2 }'
}
