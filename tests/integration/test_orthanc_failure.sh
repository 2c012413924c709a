#!/usr/bin/env bash
# test_orthanc_failure.sh — a broken model or configuration never takes
# Orthanc down, unless the configuration says Required:
#   1. a corrupt model file: Orthanc starts and stores as usual; the plugin
#      reports "broken" with the model's problem on GET /cxr-triage/status
#      (and the metric cxr_triage_ready 0), keeps the arriving study queued,
#      scores nothing; once the file is fixed, POST /cxr-triage/reload scores
#      the queued study;
#   2. a reload with a broken model is refused: the working model keeps
#      scoring;
#   3. plugin/required true with a missing model: Orthanc refuses to start
#      (non-zero exit) and its log says why;
#   4. CxrTriage.Required true with a configuration file that is not XML:
#      the same;
#   5. no CxrTriage section at all: Orthanc starts, the plugin says it is
#      not configured.
. "$(dirname "$0")/orthanc_lib.sh"
need_orthanc
setup_work
make_model
cp "$WORK/model.safetensors" "$WORK/good.safetensors"
HTTP_PORT=$(free_port)
DICOM_PORT=$(free_port)

# ---- 1. corrupt model: Orthanc up, plugin broken, study kept queued
head -c 4096 "$WORK/good.safetensors" >"$WORK/model.safetensors"   # truncated
write_cxr_conf "$WORK/cxr.xml"
write_orthanc_json "$WORK/orthanc.json"
start_orthanc
[ "$(status_field state)" = broken ] || fail "state $(status_field state) with a truncated model"
reason=$(status_field reason)
case "$reason" in *model*) ;; *) fail "the status does not name the model: $reason" ;; esac
# Orthanc refreshes plugin metrics when asked; under load the first answer may
# come late: wait for the state, not for one request
ready_metric_0() { [ "$(orthanc_metric cxr_triage_ready)" = 0 ]; }
wait_until 60 "Orthanc's metric cxr_triage_ready to read 0" ready_metric_0
log "truncated model: Orthanc up, status says: $reason"
make_instances "$WORK/a" 2 1 801
send_dicom "$WORK"/a/*.dcm || fail "storescu while the model is broken"
queued() { [ "$(status_field queue.depth)" -ge 1 ]; }
wait_until 20 "the study recorded in the plugin's queue" queued
sleep 3
[ "$(status_field counts.srs)" -eq 0 ] || fail "an SR was made with a broken model"
cp "$WORK/good.safetensors" "$WORK/model.safetensors"
curl -sf -X POST "$(ourl /cxr-triage/reload)" >/dev/null || fail "POST /cxr-triage/reload"
ready() { [ "$(status_field state)" = ready ]; }
wait_until 30 "the plugin ready after the reload" ready
scored() { [ "$(status_field counts.srs_stored)" -ge "$1" ] && plugin_idle; }
wait_until 60 "the queued study scored once the model is fixed" scored 1
log "model fixed + reload: the queued study was scored"

# ---- 2. a reload with a broken model is refused
head -c 4096 "$WORK/good.safetensors" >"$WORK/model.safetensors"
curl -sf -X POST "$(ourl /cxr-triage/reload)" >/dev/null || fail "POST /cxr-triage/reload (2)"
refused() { grep -q "reload refused" "$WORK/orthanc.log"; }
wait_until 30 "the refused reload in Orthanc's log" refused
[ "$(status_field state)" = ready ] || fail "a refused reload left the plugin $(status_field state)"
make_instances "$WORK/b" 1 1 802
send_dicom "$WORK"/b/*.dcm || fail "storescu after the refused reload"
wait_until 60 "scoring with the previous model" scored 2
log "reload with a broken model refused; the previous model keeps scoring"
stop_orthanc
cp "$WORK/good.safetensors" "$WORK/model.safetensors"

# start_refused WHAT: Orthanc must exit non-zero by itself within 60 s.
start_refused() {
    : >"$WORK/orthanc.log"
    (cd "$WORK" && exec Orthanc "$WORK/orthanc.json" >>"$WORK/orthanc.log" 2>&1) &
    ORTHANC_PID=$!
    NODE_PIDS+=("$ORTHANC_PID")
    local i
    for i in $(seq 1 600); do
        if ! kill -0 "$ORTHANC_PID" 2>/dev/null; then
            wait "$ORTHANC_PID"
            local rc=$?
            [ "$rc" -ne 0 ] || fail "$1: Orthanc exited 0"
            return 0
        fi
        ocurl /system >/dev/null 2>&1 && fail "$1: Orthanc started"
        sleep 0.1
    done
    fail "$1: Orthanc neither started nor exited"
}

# ---- 3. plugin/required with a missing model
MODEL_PATH="$WORK/no-such-model.safetensors" PLUGIN_EXTRA="<required>true</required>" \
    write_cxr_conf "$WORK/cxr.xml"
start_refused "plugin/required with a missing model"
grep -q "no-such-model" "$WORK/orthanc.log" || fail "Orthanc's log does not name the missing model"
grep -q "Required: refusing to load" "$WORK/orthanc.log" || fail "Orthanc's log does not say why it stopped"
log "plugin/required + missing model: Orthanc refuses to start, its log names the model"

# ---- 4. CxrTriage.Required with a configuration that is not XML
echo "this is not XML" >"$WORK/cxr.xml"
JSON_CT_EXTRA=', "Required": true' write_orthanc_json "$WORK/orthanc.json"
start_refused "CxrTriage.Required with a broken configuration"
grep -q "cxr.xml" "$WORK/orthanc.log" || fail "Orthanc's log does not name the configuration file"
log "CxrTriage.Required + broken configuration: Orthanc refuses to start"

# ---- 5. not configured
write_orthanc_json "$WORK/orthanc.json"
sed -i '/"CxrTriage"/d' "$WORK/orthanc.json"
: >"$WORK/orthanc.log"
start_orthanc
[ "$(status_field state)" = not-configured ] || fail "state $(status_field state) without CxrTriage"
log "no CxrTriage section: Orthanc up, plugin not configured"
stop_orthanc
log "PASS"
