#!/usr/bin/env bash
# Generates the full-size oracle fixtures (torchvision resnet18/resnet50 at
# 224x224) into $1 when Debian's python3-torch is installed; otherwise leaves
# a note so the Check suites skip the full-size comparison with a message.
set -eu
out=$1
py=${CXR_PYTHON:-/usr/bin/python3}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
    echo "python3-torch not installed: full-size oracle fixtures skipped" > "$out/SKIPPED"
    echo "SKIP: $py has no torch/torchvision; full-size oracle comparison will be skipped"
    exit 0
fi
rm -f "$out/SKIPPED"
if [ -x "$here/make_fixtures.py" ] || [ -f "$here/make_fixtures.py" ]; then
    "$py" "$here/make_fixtures.py" --full --out "$out"
fi
