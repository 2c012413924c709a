#!/usr/bin/env bash
# CPU inference benchmark: cxr-triage's oneDNN forward pass against Debian's
# PyTorch on the same machine, in one run, one process per contender and
# case, threads pinned.
#
#   bench/infer_cpu.sh [--threads N] [--iters N] [--warmup N] [--archs "resnet18 resnet50"]
#                      [--batches "1 8"] [--precisions "fp32 bf16"]
#
# Builds bench/cxr_bench_infer if needed (Release, in $CXR_BENCH_BUILD,
# default <repo>/build-bench). Every case is: warm-up, then the median of
# --iters timed forward passes, 224x224, 1 input channel, 2 classes.
# PyTorch: eval(), torch.no_grad(), torch.set_num_threads(N), NCHW and
# channels_last both timed (the faster is reported), bf16 via
# torch.autocast("cpu", dtype=torch.bfloat16).
# Output: a header (CPU, date, load, versions) and a Markdown table.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${CXR_BENCH_BUILD:-$repo/build-bench}
py=${CXR_PYTHON:-/usr/bin/python3}
threads=$(nproc)
iters=30
warmup=5
archs="resnet18 resnet50"
batches="1 8"
precisions="fp32 bf16"
while [ $# -gt 0 ]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --archs) archs=$2; shift 2 ;;
        --batches) batches=$2; shift 2 ;;
        --precisions) precisions=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
    echo "SKIP: $py has no torch/torchvision (install python3-torch python3-torchvision)" >&2
    exit 77
fi

# Build (a no-op when up to date).
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
fi
cmake --build "$build" --target cxr_bench_infer -j2 >/dev/null
bin=$build/bench/cxr_bench_infer

# Pin: the first $threads CPUs this process may use, OpenMP threads bound.
cpus=$("$py" -c "import os; c=sorted(os.sched_getaffinity(0)); print(','.join(map(str, c[:$threads])))")
export OMP_NUM_THREADS=$threads OMP_PROC_BIND=close OMP_PLACES=cores
pin=(taskset -c "$cpus")

results=$(mktemp)
trap 'rm -f "$results"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for arch in $archs; do
    for batch in $batches; do
        for prec in $precisions; do
            common=(--arch "$arch" --batch "$batch" --precision "$prec" --threads "$threads"
                    --warmup "$warmup" --iters "$iters")
            "${pin[@]}" "$bin" "${common[@]}" >>"$results"
            "${pin[@]}" "$py" "$repo/bench/infer_torch.py" "${common[@]}" >>"$results"
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$py" - "$results" "$threads" "$cpus" "$load_before" "$load_after" "$iters" "$warmup" <<'EOF'
import json, platform, subprocess, sys, datetime
path, threads, cpus, lb, la, iters, warmup = sys.argv[1:8]
rows = [json.loads(l) for l in open(path) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
isa = ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags)
ours = {(r["arch"], r["batch"], r["precision"]): r for r in rows if r["impl"] == "cxr"}
torch = {(r["arch"], r["batch"], r["precision"]): r for r in rows if r["impl"] == "torch"}
print(f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
print(f"cpu: {cpu} ({isa or 'no avx512'}), {threads} threads pinned to CPUs {cpus}, "
      f"OMP_PROC_BIND=close OMP_PLACES=cores")
print(f"load average before: {lb}; after: {la}")
print(f"ours: {next(iter(ours.values()))['backend'] if ours else '?'}")
print(f"torch: {next(iter(torch.values()))['backend'] if torch else '?'}")
print(f"each case: {warmup} warm-up, then {iters} timed forward passes (median, and min in brackets), "
      "224x224x1, 2 classes")
print()
print("| model | batch | precision | ours ms/image median (min) | torch ms/image median (min), layout "
      "| torch/ours median (min) | torch fp32/ours median (min) |")
print("|---|---:|---|---:|---:|---:|---:|")
def ms(r, k):
    return r[k] / r["batch"]
for key in sorted(ours, key=lambda k: (k[0], k[1], k[2] != "fp32")):
    o, t = ours[key], torch.get(key)
    t32 = torch.get((key[0], key[1], "fp32"))
    def ratio(a):
        if not a:
            return "-"
        return (f"{ms(a, 'ms_per_batch') / ms(o, 'ms_per_batch'):.2f}x "
                f"({ms(a, 'min_ms') / ms(o, 'min_ms'):.2f}x)")
    tcol = f"{ms(t, 'ms_per_batch'):.2f} ({ms(t, 'min_ms'):.2f}), {t['layout']}" if t else "-"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {ms(o, 'ms_per_batch'):.2f} ({ms(o, 'min_ms'):.2f}) "
          f"| {tcol} | {ratio(t)} | {ratio(t32)} |")
spread = max((r["max_ms"] - r["min_ms"]) / r["ms_per_batch"] for r in rows)
print()
print(f"largest (max-min)/median spread of a case: {spread:.0%}"
      + (" -- noisy: other work was running; rerun on a quiet machine" if spread > 0.5 else ""))
EOF
