#!/usr/bin/env bash
# test_config_check.sh — `cxr-triage config check` opens what `serve` opens
# at start, the way serve opens it (issue 16, finding 6: a copied
# configuration whose relative model path pointed nowhere passed the check,
# then serve failed):
#   - a site configuration with relative paths (model, spool, sr/output-dir)
#     next to its model passes, naming the resolved model path;
#   - the same file copied to another folder fails with exit 2, naming the
#     resolved path and that model/path is relative to the file's folder;
#     serve refuses the copy with the same path;
#   - a truncated model, a model holding a NaN weight, an sr/output-dir that
#     cannot be created and a TLS certificate that does not exist each fail,
#     naming what is wrong;
#   - a spool held by a running node passes, saying which pid holds it;
#   - what serve refuses, config check refuses with the same message (issue
#     14, item 6): allowlist CIDRs 10.0.0.0/33 and /-1, node/bind-address
#     ::, an http/bind-address that is a host name; serve exits 2 on each;
#   - a FIFO as the configuration file, as model/path or as the TLS
#     certificate is refused as "not a regular file (it is a FIFO)" instead
#     of being waited on (the timeouts are last resorts against a hang).
. "$(dirname "$0")/node_lib.sh"
setup_work
need_tools
make_model
mkdir -p "$WORK/site" "$WORK/copy"
cp "$WORK/model.safetensors" "$WORK/site/model.safetensors"

# site_conf FILE [MODEL] [NODE_EXTRA] [SR_DIR]: relative paths, as a site's file has them
site_conf() {
    cat >"$1" <<EOF
<cxr-triage>
  <model><path>${2:-model.safetensors}</path><threads>1</threads><batch-size>2</batch-size></model>
  <node><port>$(free_port)</port><spool-dir>spool</spool-dir>${3:-}</node>
  <http><port>0</port></http>
  <sr><output-dir>${4:-sr-copies}</output-dir></sr>
</cxr-triage>
EOF
}

# expect_fail NAME CONF WHAT...: config check exits 2 and stderr holds each WHAT
expect_fail() {
    local name=$1 conf=$2 rc=0
    shift 2
    "$CXR_BIN" config check "$conf" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
    [ "$rc" -eq 2 ] || fail "$name: config check exit $rc, expected 2: $(cat "$WORK/$name.err")"
    grep -q "configuration NOT OK" "$WORK/$name.err" || fail "$name: no verdict: $(cat "$WORK/$name.err")"
    grep -q "configuration OK" "$WORK/$name.err" && fail "$name: says OK: $(cat "$WORK/$name.err")"
    local w
    for w in "$@"; do
        grep -qF -- "$w" "$WORK/$name.err" || fail "$name: the message lacks '$w': $(cat "$WORK/$name.err")"
    done
}

# ---- the site's file next to its model passes
site_conf "$WORK/site/cxr.xml"
"$CXR_BIN" config check "$WORK/site/cxr.xml" >"$WORK/good.out" 2>"$WORK/good.err" ||
    fail "the site configuration fails: $(cat "$WORK/good.err")"
grep -q "configuration OK: $WORK/site/cxr.xml" "$WORK/good.err" || fail "no OK line: $(cat "$WORK/good.err")"
grep -q "ok    model: $WORK/site/model.safetensors" "$WORK/good.err" ||
    fail "the resolved model path is not named: $(cat "$WORK/good.err")"
grep -q "ok    spool: $WORK/site/spool: does not exist yet; will be created in $WORK/site" "$WORK/good.err" ||
    fail "the spool is not resolved against the file's folder: $(cat "$WORK/good.err")"
grep -q "<cxr-triage" "$WORK/good.out" || fail "the effective configuration is not printed"
[ ! -e "$WORK/site/spool" ] && [ ! -e "$WORK/site/sr-copies" ] || fail "config check created folders"
log "a configuration next to its model passes; nothing created"

# ---- copied elsewhere: the relative model path points nowhere
cp "$WORK/site/cxr.xml" "$WORK/copy/cxr.xml"
expect_fail copied "$WORK/copy/cxr.xml" "FAIL  model: model $WORK/copy/model.safetensors" \
    'model/path "model.safetensors" is relative' "against $WORK/copy"
rc=0
"$CXR_BIN" serve --config "$WORK/copy/cxr.xml" >"$WORK/serve-copy.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -qF "$WORK/copy/model.safetensors" "$WORK/serve-copy.log" ||
    fail "serve on the copy: exit $rc: $(cat "$WORK/serve-copy.log")"
log "the copied configuration fails config check as serve fails, with the same path"

# ---- a truncated model; a model with a NaN weight
head -c 4000 "$WORK/model.safetensors" >"$WORK/site/cut.safetensors"
site_conf "$WORK/site/cut.xml" cut.safetensors
expect_fail truncated "$WORK/site/cut.xml" "FAIL  model:" "$WORK/site/cut.safetensors"
"$CXR_PYTHON" - "$WORK/model.safetensors" "$WORK/site/nan.safetensors" <<'PY' || fail "cannot write the NaN model"
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
e = h["fc.bias"]
assert e["dtype"] == "F32", e
b[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][0] + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(b)
PY
site_conf "$WORK/site/nan.xml" nan.safetensors
expect_fail nan "$WORK/site/nan.xml" "$WORK/site/nan.safetensors" "tensor 'fc.bias' holds NaN"
log "a truncated model and a NaN weight fail, naming the file"

# ---- sr/output-dir that cannot be created; a TLS certificate that is not there
site_conf "$WORK/site/out.xml" model.safetensors "" "cxr.xml/copies"
expect_fail output-dir "$WORK/site/out.xml" "FAIL  sr/output-dir: $WORK/site/cxr.xml/copies"
site_conf "$WORK/site/tls.xml" model.safetensors \
    "<tls>true</tls><tls-certificate>node.pem</tls-certificate><tls-private-key>node.key</tls-private-key>"
expect_fail tls "$WORK/site/tls.xml" "FAIL  tls:" "$WORK/site/node.pem"
log "an sr/output-dir below a file and a missing TLS certificate fail"

# ---- --plugin: the plugin's view (the model, plugin/state-dir), not the
# node's spool: a host that only runs Orthanc has no node spool to write
site_conf "$WORK/site/plug.xml" model.safetensors "" "sr-copies"
sed -i "s#<spool-dir>spool</spool-dir>#<spool-dir>cxr.xml/spool</spool-dir>#; s#</cxr-triage>#<plugin><state-dir>state</state-dir></plugin></cxr-triage>#" "$WORK/site/plug.xml"
expect_fail plugin-as-node "$WORK/site/plug.xml" "FAIL  spool:"
"$CXR_BIN" config check --plugin "$WORK/site/plug.xml" >/dev/null 2>"$WORK/plug.err" ||
    fail "config check --plugin fails on the node's spool: $(cat "$WORK/plug.err")"
grep -q "ok    plugin/state-dir: $WORK/site/state" "$WORK/plug.err" || fail "state-dir not checked: $(cat "$WORK/plug.err")"
grep -q "spool" "$WORK/plug.err" && fail "--plugin tried the node's spool: $(cat "$WORK/plug.err")"
sed -i "s#<state-dir>state</state-dir>#<state-dir>cxr.xml/state</state-dir>#" "$WORK/site/plug.xml"
rc=0
"$CXR_BIN" config check --plugin "$WORK/site/plug.xml" >/dev/null 2>"$WORK/plug2.err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "FAIL  plugin/state-dir: $WORK/site/cxr.xml/state" "$WORK/plug2.err" ||
    fail "a state-dir below a file passes --plugin: exit $rc: $(cat "$WORK/plug2.err")"
cp "$WORK/site/plug.xml" "$WORK/copy/plug.xml"
rc=0
"$CXR_BIN" config check --plugin "$WORK/copy/plug.xml" >/dev/null 2>"$WORK/plug3.err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "FAIL  model:" "$WORK/plug3.err" || fail "--plugin passes a missing model: $(cat "$WORK/plug3.err")"
log "--plugin: the model and plugin/state-dir are checked, the node's spool is not"

# ---- what serve refuses, config check refuses, with serve's own words
# serve_refuses NAME CONF WHAT: serve exits 2 at start, its log holds WHAT
serve_refuses() {
    local rc=0
    timeout 120 "$CXR_BIN" serve --config "$2" >"$WORK/$1.serve" 2>&1 || rc=$?
    [ "$rc" -ne 124 ] || fail "$1: serve still running after 120 s (it should refuse to start)"
    [ "$rc" -eq 2 ] || fail "$1: serve exit $rc, expected 2: $(tail -3 "$WORK/$1.serve")"
    grep -qF -- "$3" "$WORK/$1.serve" || fail "$1: serve does not say '$3': $(tail -3 "$WORK/$1.serve")"
}
for case in "cidr33|<allow><host>10.0.0.0/33</host></allow>|allowed peer host '10.0.0.0/33' is not a valid IPv4 CIDR block" \
    "cidrneg|<allow><ae-title>CR01</ae-title><host>10.0.0.0/-1</host></allow>|allowed peer host '10.0.0.0/-1' is not a valid IPv4 CIDR block" \
    "bind6|<node-extra><bind-address>::</bind-address>|bind address '::' is IPv6" \
    "httpname|<http-bind>localhost|HTTP bind address 'localhost' is not an IPv4 or IPv6 address"; do
    IFS='|' read -r name xml what <<<"$case"
    site_conf "$WORK/site/$name.xml"
    case "$xml" in
    "<node-extra>"*) site_conf "$WORK/site/$name.xml" model.safetensors "${xml#<node-extra>}" ;;
    "<http-bind>"*) sed -i "s|<http><port>0</port></http>|<http><port>0</port><bind-address>${xml#<http-bind>}</bind-address></http>|" "$WORK/site/$name.xml" ;;
    *) sed -i "s|</cxr-triage>|$xml</cxr-triage>|" "$WORK/site/$name.xml" ;;
    esac
    expect_fail "$name" "$WORK/site/$name.xml" "$what"
    serve_refuses "$name" "$WORK/site/$name.xml" "$what"
done
log "CIDR /33 and /-1, DICOM bind ::, an HTTP host name: config check fails as serve does"

# ---- FIFOs where files belong: refused, never waited on
mkfifo "$WORK/site/fifo.xml" "$WORK/site/fifo.safetensors" "$WORK/site/fifo.pem"
rc=0
timeout 120 "$CXR_BIN" config check "$WORK/site/fifo.xml" >/dev/null 2>"$WORK/fifo-conf.err" || rc=$?
[ "$rc" -ne 124 ] || fail "config check waited on a FIFO as its configuration file"
[ "$rc" -eq 2 ] && grep -qF "$WORK/site/fifo.xml: not a regular file (it is a FIFO)" "$WORK/fifo-conf.err" ||
    fail "a FIFO as the configuration: exit $rc: $(cat "$WORK/fifo-conf.err")"
site_conf "$WORK/site/fifo-model.xml" fifo.safetensors
expect_fail_within() { # like expect_fail, but a hang is a failure of its own
    local rc=0
    timeout 120 "$CXR_BIN" config check "$2" >/dev/null 2>"$WORK/$1.err" || rc=$?
    [ "$rc" -ne 124 ] || fail "$1: config check waited on a FIFO"
    expect_fail "$@"
}
expect_fail_within fifo-model "$WORK/site/fifo-model.xml" "FAIL  model:" \
    "$WORK/site/fifo.safetensors: not a regular file (it is a FIFO)"
site_conf "$WORK/site/fifo-tls.xml" model.safetensors \
    "<tls>true</tls><tls-certificate>fifo.pem</tls-certificate><tls-private-key>fifo.pem</tls-private-key>"
expect_fail_within fifo-tls "$WORK/site/fifo-tls.xml" \
    "node/tls-certificate: $WORK/site/fifo.pem is not a regular file (it is a FIFO)"
serve_refuses fifo-tls "$WORK/site/fifo-tls.xml" "$WORK/site/fifo.pem is not a regular file (it is a FIFO)"
log "a FIFO as the configuration, the model or the TLS certificate is refused, not waited on"

# ---- a spool held by a running node: reported, not a failure
site_conf "$WORK/site/run.xml"
"$CXR_BIN" serve --config "$WORK/site/run.xml" >>"$WORK/node.log" 2>&1 &
NODE_PID=$!
NODE_PIDS+=("$NODE_PID")
running() { kill -0 "$NODE_PID" 2>/dev/null || fail "the node exited: $(cat "$WORK/node.log")"; grep -q 'listening: DICOM' "$WORK/node.log"; }
wait_until 120 "the node to listen" running
"$CXR_BIN" config check "$WORK/site/run.xml" >/dev/null 2>"$WORK/held.err" ||
    fail "config check fails while a node holds the spool: $(cat "$WORK/held.err")"
grep -q "held by the running node, pid $NODE_PID" "$WORK/held.err" || fail "the holder is not named: $(cat "$WORK/held.err")"
stop_node
log "a spool held by a running node passes and names its pid"
log "PASS"
