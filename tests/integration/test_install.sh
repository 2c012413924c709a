#!/usr/bin/env bash
# test_install.sh — what `cmake --install` (and so the Debian packages, whose
# files come from it) puts where, and the packaging's own consistency:
#   - the command, the bundled model and its model card, the configuration
#     whose model/path is the installed model, the man page, the docs, the
#     Orthanc plugin in <prefix>/lib/orthanc with its link in Orthanc's plugin
#     folder; the installed configuration passes `config check`;
#   - every Build-Depends of packaging/debian/control is in
#     packaging/debian-packages.txt (so `make deb` on a machine set up by
#     install-deps.sh has what it needs), and the changelog's version starts
#     with CMake's project version.
. "$(dirname "$0")/cli_lib.sh"
command -v cmake >/dev/null || skip "no cmake"
work=$(mktemp -d "${TMPDIR:-/tmp}/cxr-test-install-XXXXXX")
trap 'rm -rf "$work"' EXIT

prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$CXR_BUILD_DIR/CMakeCache.txt")
[ -n "$prefix" ] || fail "no CMAKE_INSTALL_PREFIX in $CXR_BUILD_DIR/CMakeCache.txt"
DESTDIR="$work/root" cmake --install "$CXR_BUILD_DIR" >"$work/install.log" 2>&1 ||
    fail "cmake --install: $(tail -5 "$work/install.log")"
root="$work/root"
sysconf=/etc
[ "$prefix" = /usr ] || sysconf="$prefix/etc"
for f in "$prefix/bin/cxr-triage" \
         "$prefix/share/cxr-triage/cxr-default.safetensors" \
         "$prefix/share/cxr-triage/model-card.md" \
         "$sysconf/cxr-triage/cxr-triage.xml" \
         "$prefix/share/man/man8/cxr-triage.8" \
         "$prefix/share/doc/cxr-triage/admin-guide.md" \
         "$prefix/share/doc/cxr-triage/configuration.md"; do
    [ -f "$root$f" ] || fail "cmake --install did not install $f"
done
# Every HTML report the model card links to is installed beside it.
for link in $(grep -o '(model-card/[^)]*\.html)' "$CXR_SOURCE_DIR/docs/model-card.md" | tr -d '()'); do
    [ -f "$root$prefix/share/cxr-triage/$link" ] || fail "the model card's $link is not installed"
done
conf="$root$sysconf/cxr-triage/cxr-triage.xml"
model=$(sed -n 's|.*<path>\(.*\)</path>.*|\1|p' "$conf" | head -n 1)
[ "$model" = "$prefix/share/cxr-triage/cxr-default.safetensors" ] ||
    fail "the installed configuration's model/path is '$model', not the installed model"
cmp -s "$root$model" "$CXR_SOURCE_DIR/models/cxr-default.safetensors" || fail "the installed model differs from models/"
# Apart from model/path, the installed configuration is conf/cxr-triage.xml.
diff <(grep -v '<path>' "$conf") <(grep -v '<path>' "$CXR_SOURCE_DIR/conf/cxr-triage.xml") >/dev/null ||
    fail "the installed configuration differs from conf/cxr-triage.xml in more than model/path"
# config check opens what serve opens: the spool goes where this user can write.
sed -e "s|<path>$model</path>|<path>$root$model</path>|" \
    -e "s|<spool-dir>[^<]*</spool-dir>|<spool-dir>$work/spool</spool-dir>|" "$conf" >"$work/check.xml"
"$CXR_BIN" config check "$work/check.xml" >/dev/null 2>"$work/check.err" ||
    fail "the installed configuration does not pass config check: $(cat "$work/check.err")"
ok "command, model, model card, configuration (model/path = $model), man page, docs"

if [ -f "$CXR_BUILD_DIR/libcxr_triage_orthanc.so" ]; then
    so="$root$prefix/lib/orthanc/libcxr_triage_orthanc.so"
    link="$root$prefix/share/orthanc/plugins/libcxr_triage_orthanc.so"
    [ -f "$so" ] || fail "the plugin is not in $prefix/lib/orthanc"
    [ -L "$link" ] || fail "no link to the plugin in $prefix/share/orthanc/plugins"
    [ "$(readlink -f "$link")" = "$(readlink -f "$so")" ] || fail "the plugin link points at $(readlink "$link")"
    ok "plugin in $prefix/lib/orthanc, linked from $prefix/share/orthanc/plugins (relative: $(readlink "$link"))"
fi

# packaging/debian: build dependencies and version.
control="$CXR_SOURCE_DIR/packaging/debian/control"
listed=$(sed -e 's/#.*//' "$CXR_SOURCE_DIR/packaging/debian-packages.txt" | tr -s ' \t' '\n\n' | sed '/^$/d')
bdeps=$(awk '/^Build-Depends:/ { on = 1; sub(/^Build-Depends:/, "") } on && /^[A-Z][A-Za-z-]*:/ && !/^Build-Depends:/ { on = 0 }
             on { print }' "$control" | tr ',' '\n' | sed -e 's/(.*)//' -e 's/[[:space:]]//g' | sed '/^$/d')
[ "$(echo "$bdeps" | wc -l)" -ge 10 ] || fail "could not read Build-Depends of $control: $bdeps"
for p in $bdeps; do
    case "$p" in debhelper-compat) p=debhelper ;; esac
    printf '%s\n' "$listed" | grep -qx "$p" || fail "Build-Depends $p is not in packaging/debian-packages.txt"
done
upstream=$(sed -n 's/^project(cxr-triage VERSION \([0-9.]*\).*/\1/p' "$CXR_SOURCE_DIR/CMakeLists.txt")
version=$(sed -n '1s/^cxr-triage (\([^)]*\)).*/\1/p' "$CXR_SOURCE_DIR/packaging/debian/changelog")
case "$version" in
    "$upstream" | "$upstream"[+~]*) ;;
    *) fail "packaging/debian/changelog is at $version, CMakeLists.txt at $upstream" ;;
esac
ok "Build-Depends all in debian-packages.txt; changelog $version matches project $upstream"
ok "PASS"
