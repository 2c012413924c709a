#!/usr/bin/env bash
# test_node_tls.sh — DICOM TLS (BCP 195) with certificates the test makes
# (its own CA, RSA 2048, SHA-256):
#   - storescu +tls with a client certificate from the test CA: stored, and
#     the SR reaches a storescp destination over TLS too (the node presents
#     its certificate and verifies the destination's against the CA);
#   - plain TCP to the TLS port fails;
#   - a client certificate from another CA fails;
#   - a client that does not trust the node's CA refuses the node;
#   - 8 connections that never start their TLS handshake, held open, do
#     not delay a TLS client (DCMTK's handshake has no timeout of its own).
. "$(dirname "$0")/node_lib.sh"
need_tools storescu storescp echoscu dcmdump curl openssl sqlite3
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=$(free_port)
P=$WORK/pki
mkdir -p "$P"
ossl() { openssl "$@" >>"$WORK/openssl.log" 2>&1 || fail "openssl $1 failed: $(tail -3 "$WORK/openssl.log")"; }
ca() {   # ca NAME
    ossl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=cxr-triage test $1" \
        -keyout "$P/$1.key" -out "$P/$1.pem"
}
cert() { # cert NAME CA CN
    ossl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$3" -keyout "$P/$1.key" -out "$P/$1.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$P/$1.ext"
    ossl x509 -req -in "$P/$1.csr" -CA "$P/$2.pem" -CAkey "$P/$2.key" -CAcreateserial -days 2 \
        -sha256 -extfile "$P/$1.ext" -out "$P/$1.pem"
}
ca ca
ca otherca
cert node ca 127.0.0.1
cert modality ca modality
cert pacs ca 127.0.0.1
cert rogue otherca modality
chmod 600 "$P"/*.key

start_storescp "$DEST_PORT" "$WORK/recv" +tls "$P/pacs.key" "$P/pacs.pem" +cf "$P/ca.pem"
NODE_EXTRA="<tls>true</tls><tls-certificate>$P/node.pem</tls-certificate>
  <tls-private-key>$P/node.key</tls-private-key><tls-ca-certificates>$P/ca.pem</tls-ca-certificates>
  <tls-verify-peer>true</tls-verify-peer>"
DEST_EXTRA="<tls>true</tls>"
write_conf "$WORK/node.xml"
start_node "$WORK/node.xml"
make_instances "$WORK/in" 1 1 707

TLS_OK=(+tls "$P/modality.key" "$P/modality.pem" +cf "$P/ca.pem")
check "C-ECHO over TLS with a certificate from the CA" \
    echoscu "${TLS_OK[@]}" -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
storescu "${TLS_OK[@]}" -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" "$WORK"/in/*.dcm \
    >"$WORK/tls_ok.log" 2>&1 || fail "storescu over TLS: $(tail -3 "$WORK/tls_ok.log")"
got_sr() { [ "$(count_files "$WORK/recv")" -ge 1 ]; }
wait_until 60 "the SR at the TLS destination" got_sr
sr_refs "$WORK"/recv/* | grep -qx "2.25.707.1.1" || fail "the SR over TLS does not reference the instance"
log "TLS: stored with a CA-signed client certificate; SR delivered over TLS"

out=$(echoscu -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" 2>&1) && fail "plain TCP accepted on the TLS port"
out=$(echoscu +tls "$P/rogue.key" "$P/rogue.pem" +cf "$P/ca.pem" -aet CR01 -aec CXRTRIAGE \
    127.0.0.1 "$DICOM_PORT" 2>&1) && fail "a client certificate from another CA was accepted"
out=$(echoscu +tls "$P/modality.key" "$P/modality.pem" +cf "$P/otherca.pem" -aet CR01 -aec CXRTRIAGE \
    127.0.0.1 "$DICOM_PORT" 2>&1) && fail "the client accepted a node certificate it cannot verify"
kill -0 "$NODE_PID" || fail "the node died on failed TLS handshakes"
check "C-ECHO over TLS after the failures" \
    echoscu "${TLS_OK[@]}" -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT"
[ "$(sqlite3 "$WORK/spool/jobs.sqlite" 'SELECT count(*) FROM instances')" -eq 1 ] ||
    fail "a failed TLS association stored something"
log "TLS: plain TCP, a foreign client certificate and an untrusted node certificate all fail"

"$CXR_PYTHON" - "$DICOM_PORT" "$WORK/silent.ready" <<'PY' 2>"$WORK/silent.log" &
import os, socket, sys, time
conns = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(8)]
open(sys.argv[2] + ".tmp", "w").write("8\n")
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(3600)
PY
SILENT_PID=$!
NODE_PIDS+=("$SILENT_PID")
silent_ready() { [ -s "$WORK/silent.ready" ] || { kill -0 "$SILENT_PID" || fail "silent connections: $(cat "$WORK/silent.log")"; false; }; }
wait_until 60 "8 silent connections to the TLS port" silent_ready
echoscu -to 10 -ta 10 "${TLS_OK[@]}" -aet CR01 -aec CXRTRIAGE 127.0.0.1 "$DICOM_PORT" >"$WORK/echo_silent.log" 2>&1 ||
    fail "C-ECHO over TLS while 8 connections withhold their handshake: $(tail -3 "$WORK/echo_silent.log")"
kill -0 "$SILENT_PID" || fail "the silent connections were not held"
log "TLS: 8 connections withholding their handshake do not delay a TLS client"
stop_node
log "PASS"
