#!/usr/bin/env bash
# make_fixtures.sh OLD_TREE — writes jobs-v2.sqlite and queue-v1.sqlite here:
# the node's job store and the Orthanc plugin's queue file as cxr-triage 0.1.0
# writes them (header values as struct memory images), for the upgrade tests
# (check_node_store: test_release_store_upgraded; check_plugin:
# test_release_queue_upgraded). OLD_TREE is a checkout of 0.1.0 (commit
# 6ae9ab4 made them) built with `make`; Debian's Orthanc must be installed.
# One study 2.25.90N.1: two PA CR images (analysed) and one lateral (not
# analysed), an untrained 64x64 model, its SR. The files are VACUUMed into
# 4 KiB pages and the rollback journal, to keep them small.
set -u   # not -e: the test libraries probe with commands that may fail
old=$(cd "${1:?usage: make_fixtures.sh OLD_TREE}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
export CXR_BIN=$old/build/cxr-triage CXR_SOURCE_DIR=$old CXR_BUILD_DIR=$old/build
export CXR_PYTHON=/usr/bin/python3

( # the node's job store, spool files outside it
    . "$old/tests/integration/node_lib.sh"
    setup_work
    make_model
    DICOM_PORT=$(free_port) HTTP_PORT=$(free_port) DEST_PORT=$(free_port)
    NODE_EXTRA="<spool-inline-max-kb>0</spool-inline-max-kb>" write_conf "$WORK/node.xml"
    start_node "$WORK/node.xml"
    make_instances "$WORK/a" 2 1 901
    VIEW=LL FIRST=2 make_instances "$WORK/a" 1 1 901
    send_files CR01 "$DICOM_PORT" "$WORK"/a/*.dcm
    delivery() { [ "$(sqlite3 "$WORK/spool/jobs.sqlite" 'SELECT count(*) FROM deliveries')" -ge 1 ]; }
    wait_until 60 "the SR's delivery row" delivery
    stop_node
    cp "$WORK/spool/jobs.sqlite" "$here/jobs-v2.sqlite"
)
( # the plugin's queue
    . "$old/tests/integration/orthanc_lib.sh"
    setup_work
    make_model
    HTTP_PORT=$(free_port) DICOM_PORT=$(free_port)
    write_cxr_conf "$WORK/cxr.xml"
    write_orthanc_json "$WORK/orthanc.json"
    start_orthanc
    make_instances "$WORK/a" 2 1 902
    VIEW=LL FIRST=2 make_instances "$WORK/a" 1 1 902
    send_dicom "$WORK"/a/*.dcm
    stored() { [ "$(status_field counts.srs_stored)" -ge 1 ] && plugin_idle; }
    wait_until 120 "the SR stored in Orthanc" stored
    stop_orthanc
    cp "$WORK/state/queue.sqlite" "$here/queue-v1.sqlite"
)
for f in jobs-v2.sqlite queue-v1.sqlite; do
    sqlite3 "$here/$f" "PRAGMA journal_mode=DELETE; PRAGMA page_size=4096; VACUUM;" >/dev/null
    rm -f "$here/$f-wal" "$here/$f-shm"
done
sha256sum "$here"/*.sqlite
