#!/usr/bin/env bash
# build-deb.sh OUTDIR — `make deb`: the Debian packages cxr-triage and
# orthanc-cxr-triage from this source tree (tracked files plus untracked ones
# git does not ignore, so uncommitted work is packaged as it is).
#
# A copy of the tree goes to OUTDIR/stage with packaging/debian as its debian/
# folder; dpkg-buildpackage builds the binary packages there and they land in
# OUTDIR. DEB_VERSION=V (e.g. 0.1.0+1) adds a changelog entry with that version
# first (a rebuild with a higher version, as CI's upgrade test needs);
# DEB_MAINTAINER names the site that builds them. Then
# lintian checks them when it is installed (it fails on errors; warnings are
# listed in packaging/README.md with the reason they stay).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-deb.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

git -C "$src" rev-parse --git-dir >/dev/null 2>&1 || {
    echo "build-deb: $src is not a git checkout (the file list comes from git)" >&2; exit 2; }

# The upstream version is CMake's project version; the package version must
# start with it.
upstream=$(sed -n 's/^project(cxr-triage VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$upstream" ] || { echo "build-deb: no project VERSION in CMakeLists.txt" >&2; exit 2; }

stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/cxr-triage"
tree="$stage/cxr-triage"
# Tracked and untracked-but-not-ignored files that exist (a deleted tracked
# file is not packaged).
(cd "$src" && git ls-files -z -co --exclude-standard) |
    while IFS= read -r -d '' f; do [ -e "$src/$f" ] && printf '%s\0' "$f"; done |
    (cd "$src" && tar --null -T - -cf -) | tar -C "$tree" -xf -
cp -a "$tree/packaging/debian" "$tree/debian"
# The project has no public address; a site that builds and distributes the
# packages names itself: DEB_MAINTAINER="IT Imaging <pacs-admin@hospital.example>".
maint="cxr-triage developers <cxr-triage@cxr-triage.invalid>"
if [ -n "${DEB_MAINTAINER:-}" ]; then
    sed -i "s|$maint|$DEB_MAINTAINER|" "$tree/debian/control" "$tree/debian/changelog"
    maint=$DEB_MAINTAINER
fi

if [ -n "${DEB_VERSION:-}" ]; then
    {
        printf 'cxr-triage (%s) bookworm; urgency=medium\n\n' "$DEB_VERSION"
        printf '  * Rebuild of %s as version %s.\n\n' "$(git -C "$src" rev-parse --short HEAD)" "$DEB_VERSION"
        printf ' -- %s  %s\n\n' "$maint" "$(date -R)"
        cat "$tree/debian/changelog"
    } >"$tree/debian/changelog.new"
    mv "$tree/debian/changelog.new" "$tree/debian/changelog"
fi
version=$(cd "$tree" && dpkg-parsechangelog -S Version)
case "$version" in
    "$upstream" | "$upstream"[+~]*) ;;
    *) echo "build-deb: packaging/debian/changelog says $version, CMakeLists.txt says $upstream:" \
            "add a changelog entry for $upstream" >&2; exit 2 ;;
esac

echo "build-deb: cxr-triage $version from $src"
(cd "$tree" && dpkg-checkbuilddeps) || {
    echo "build-deb: missing build dependencies (packaging/debian-packages.txt should list them;" \
         "packaging/install-deps.sh installs them)" >&2; exit 2; }
(cd "$tree" && dpkg-buildpackage -b -us -uc -j"$(nproc)")

rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
mv "$stage"/*.deb "$stage"/*.changes "$stage"/*.buildinfo "$out"/
rm -rf "$stage"   # kept only when the build fails, to look into
changes=$(ls "$out"/*.changes)
echo "build-deb: packages in $out:"
ls -l "$out"/*.deb

if command -v lintian >/dev/null; then
    # Errors fail the build; every tag down to informational is printed and
    # counted (packaging/README.md says why the remaining ones stay).
    rc=0
    lintian --fail-on error --display-level '>=info' --pedantic "$changes" >"$out/lintian.txt" 2>&1 || rc=$?
    grep -v "running with root privileges" "$out/lintian.txt" || true
    echo "build-deb: lintian: $(grep -c '^E: ' "$out/lintian.txt") error(s)," \
         "$(grep -c '^W: ' "$out/lintian.txt") warning(s), $(grep -c '^P: ' "$out/lintian.txt") pedantic," \
         "$(grep -c '^I: ' "$out/lintian.txt") informational"
    [ "$rc" -eq 0 ] || { echo "build-deb: lintian failed (status $rc)" >&2; exit 1; }
else
    echo "build-deb: lintian is not installed: packages not checked"
fi
