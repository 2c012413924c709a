#!/usr/bin/env bash
# CPU training benchmark: images/s of whole training steps of cxr-triage's
# trainer (oneDNN) against Debian's PyTorch on the same architecture, batch,
# input size and thread count, in one run, one process per contender and
# case, threads pinned.
#
#   bench/train_cpu.sh [--threads N] [--iters N] [--warmup N] [--batch N]
#                      [--archs "resnet18 resnet50"] [--size 224]
#
# A step = training-mode forward, class-weighted cross-entropy, backward,
# gradient-norm clipping (1.0), AdamW update; 1-channel input, 2 classes,
# random data. Ours: fp32 with the convolution algorithm oneDNN picks
# (auto: Winograd for large 3x3 stride-1 layers), fp32 with direct
# convolutions only (what PyTorch's oneDNN calls use), bf16 (AVX512-BF16 or
# AMX; F32 master weights and gradients). PyTorch: fp32 NCHW and
# channels_last (the faster is the reference), bf16 via autocast for
# information. Builds bench/cxr_bench_train (Release, $CXR_BENCH_BUILD,
# default <repo>/build-bench). Output: header (CPU, date, load, versions)
# and a Markdown table with the ratios.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${CXR_BENCH_BUILD:-$repo/build-bench}
py=${CXR_PYTHON:-/usr/bin/python3}
threads=$(nproc)
iters=5
warmup=1
batch=32
size=224
archs="resnet18 resnet50"
while [ $# -gt 0 ]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --archs) archs=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
    echo "SKIP: $py has no torch/torchvision (install python3-torch python3-torchvision)" >&2
    exit 77
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCXR_WITH_CUDA=OFF >/dev/null
fi
cmake --build "$build" --target cxr_bench_train -j2 >/dev/null
bin=$build/bench/cxr_bench_train

cpus=$("$py" -c "import os; c=sorted(os.sched_getaffinity(0)); print(','.join(map(str, c[:$threads])))")
export OMP_NUM_THREADS=$threads OMP_PROC_BIND=close OMP_PLACES=cores
pin=(taskset -c "$cpus")
bf16=$(grep -q avx512_bf16 /proc/cpuinfo && echo yes || echo no)

results=$(mktemp)
trap 'rm -f "$results"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for arch in $archs; do
    common=(--arch "$arch" --batch "$batch" --size "$size" --threads "$threads" --warmup "$warmup"
            --iters "$iters")
    ours() { "${pin[@]}" "$bin" "${common[@]}" "$@" 2>/dev/null | sed "s/^{/{\"impl\":\"cxr\",/" >>"$results"; }
    torch() { "${pin[@]}" "$py" "$repo/bench/train_torch.py" "${common[@]}" "$@" | sed "s/^{/{\"impl\":\"torch\",/" >>"$results"; }
    ours --precision fp32
    ours --precision fp32 --direct-conv
    [ "$bf16" = yes ] && ours --precision bf16
    torch --layout nchw
    torch --layout channels_last
    [ "$bf16" = yes ] && torch --layout channels_last --precision bf16
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$py" - "$results" "$threads" "$cpus" "$load_before" "$load_after" "$iters" "$warmup" <<'EOF'
import json, sys, datetime
path, threads, cpus, lb, la, iters, warmup = sys.argv[1:8]
rows = [json.loads(l) for l in open(path) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
isa = ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags)
print(f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
print(f"cpu: {cpu} ({isa or 'no avx512'}), {threads} threads pinned to CPUs {cpus}, "
      "OMP_PROC_BIND=close OMP_PLACES=cores")
print(f"load average before: {lb}; after: {la}")
ours = [r for r in rows if r["impl"] == "cxr"]
torch = [r for r in rows if r["impl"] == "torch"]
if ours:
    print(f"ours: {ours[0]['backend']}")
if torch:
    print(f"torch: {torch[0]['torch']}")
print(f"each case: {warmup} warm-up step(s), then {iters} timed steps (median; min in brackets); "
      f"batch {rows[0]['batch']}, {rows[0]['size']}x{rows[0]['size']}x1, 2 classes, AdamW, clipping")
print()
print("| model | contender | images/s median (min step) | vs PyTorch fp32 (best layout) |")
print("|---|---|---:|---:|")
for arch in sorted({r["arch"] for r in rows}):
    t32 = [r for r in torch if r["arch"] == arch and r["precision"] == "fp32"]
    ref = max(t32, key=lambda r: r["images_per_s"]) if t32 else None
    def line(name, r):
        best = r["batch"] * 1000.0 / r["step_ms_min"]
        ratio = f"{r['images_per_s'] / ref['images_per_s']:.2f}x" if ref else "-"
        print(f"| {arch} | {name} | {r['images_per_s']:.1f} ({best:.1f}) | {ratio} |")
    for r in ours:
        if r["arch"] == arch:
            line(f"cxr-triage {r['precision']}, conv {r['conv']}", r)
    for r in torch:
        if r["arch"] == arch:
            line(f"PyTorch {r['precision']}, {r['layout']}", r)
spread = max((r["step_ms_max"] - r["step_ms_min"]) / r["step_ms_median"] for r in rows)
print()
print(f"largest (max-min)/median spread of a case: {spread:.0%}"
      + (" -- noisy: other work was running; rerun on a quiet machine" if spread > 0.5 else ""))
EOF
