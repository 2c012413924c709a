#!/usr/bin/env bash
# test_node_http_hostile.sh — the node's HTTP endpoint against hostile
# clients (issue 14):
#   - 64 connections from one address (127.0.0.2) that trickle a request a
#     byte at a time do not keep /healthz, /worklist and /metrics from other
#     clients (127.0.0.1): before, they took every connection slot;
#   - a request naming another host in its Host header (a page reaching the
#     endpoint through DNS rebinding) is refused with 421; IP literals,
#     localhost and the names of http/allowed-hosts pass.
. "$(dirname "$0")/node_lib.sh"
need_tools curl
setup_work
make_model
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
DEST_PORT=
write_conf "$WORK/node.xml"
sed -i "s#<http><port>$HTTP_PORT</port></http>#<http><port>$HTTP_PORT</port><allowed-hosts>reading.example.org</allowed-hosts></http>#" "$WORK/node.xml"
grep -q "<allowed-hosts>reading.example.org" "$WORK/node.xml" || fail "could not set http/allowed-hosts"
start_node "$WORK/node.xml"
URL="http://127.0.0.1:$HTTP_PORT"

# ---- Host header
code() { curl -s -o /dev/null -w '%{http_code}' -H "Host: $1" "$URL/worklist"; }
[ "$(code "evil.example:$HTTP_PORT")" = 421 ] || fail "a foreign Host was answered"
curl -s -H "Host: evil.example" "$URL/worklist" | grep -q "http/allowed-hosts" || fail "421 does not say what to do"
[ "$(code "127.0.0.1:$HTTP_PORT")" = 200 ] || fail "Host 127.0.0.1 refused"
[ "$(code "localhost:$HTTP_PORT")" = 200 ] || fail "Host localhost refused"
[ "$(code "reading.example.org")" = 200 ] || fail "a name of http/allowed-hosts refused"
log "Host header: foreign name 421, IP literal / localhost / allowed name 200"

# ---- slow clients: 64 connections from 127.0.0.2 trickling one byte each
"$CXR_PYTHON" - "$HTTP_PORT" "$WORK/slow.ready" <<'PY' &
import socket, sys, time
port, ready = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(64):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"G")
        socks.append(s)
    except OSError:
        pass
open(ready, "w").write(str(len(socks)))
# keep them alive, one more byte now and then, until killed
while True:
    for s in socks:
        try:
            s.sendall(b"E")
        except OSError:
            pass
    time.sleep(5)
PY
SLOW=$!
NODE_PIDS+=("$SLOW")
wait_until 30 "the slow clients connected" test -s "$WORK/slow.ready"
for path in /healthz /worklist /metrics; do
    curl -sf --max-time 20 "$URL$path" >/dev/null || fail "GET $path failed while 64 slow clients held connections"
done
kill "$SLOW" 2>/dev/null
log "64 slow clients from one address: /healthz, /worklist, /metrics still served to others"
stop_node
log "PASS"
