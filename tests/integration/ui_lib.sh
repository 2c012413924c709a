# ui_lib.sh — headless Chromium for the worklist page tests (test_node_ui.sh,
# test_orthanc_ui.sh; sourced after node_lib.sh or orthanc_lib.sh, which give
# WORK, skip and fail). The page's DOM is read with ui_page.py.
CHROMIUM=$(command -v chromium || command -v chromium-browser) ||
    skip "chromium is not installed (packaging/debian-packages.txt lists it)"
export UI_LIB_DIR
UI_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# chrome PROFILE ARGS...: one headless Chromium run with its own profile.
chrome() {
    timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --user-data-dir="$WORK/chrome-$1" --virtual-time-budget=8000 \
        "${@:2}" 2>>"$WORK/chromium.log"
}

# screenshot URL FILE SIZE: a PNG of the page as a test artifact (checked).
screenshot() {
    mkdir -p "$(dirname "$2")"
    rm -f "$2"
    chrome shot --window-size="$3" --screenshot="$2" "$1" >/dev/null ||
        fail "chromium --screenshot failed (see $WORK/chromium.log)"
    [ "$(head -c 8 "$2" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "no PNG screenshot at $2"
}
