#!/usr/bin/env bash
# GPU verification and benchmark of the CUDA backend: the one script for the
# device machine (an H100 with the CUDA 13 driver, cuDNN 9, cuBLAS and
# PyTorch 2.11 in `python3`, CMake and nvcc, but NO package registry and
# none of this project's Debian libraries: no oneDNN, json-c, Check, DCMTK).
#
# So the project is built HERE (Debian 12 with /usr/local/cuda) and the
# binaries travel, with the non-system shared libraries they need, as one
# tarball in build-gpu-bundle/ (ignored by git, carried by the device tool):
#
#   bench/gpu.sh pack              here: Release build in build-gpu/ (CUDA ON)
#                                  of check_nn_cuda, check_nn_cuda_train,
#                                  cxr_bench_gpu -> build-gpu-bundle/bundle.tar.gz
#   bench/gpu.sh run [tests|bench|all] [--quick]
#                                  on the device (device tool:
#                                  command "bench/gpu.sh run",
#                                  carry ["build-gpu-bundle"])
#   bench/gpu.sh                   run when a GPU answers nvidia-smi, else pack
#
# run: finds libcudnn.so.9 and libcublas(Lt).so.13 on the machine (CUDA
# toolkit folders, the Python wheels PyTorch uses), checks that every
# library resolves, prints the card, driver and versions, then
#   tests: check_nn_cuda (selection + every gpu-tagged parity test) and
#          check_nn_cuda_train (backward ops, optimizer, one training step)
#   bench: resnet50 and resnet18 at 224x224, 3 channels, fp16 and bf16:
#          batch-1 latency (median, p99) and throughput at batch 64 and 256,
#          ours (host to host, and device only) vs PyTorch eager
#          (channels_last + autocast) and PyTorch with CUDA graphs; training
#          images/s of resnet50 (fp16 with loss scaling, bf16) vs PyTorch AMP;
#          the default model (models/cxr-default.safetensors, when it exists)
#          on the Kermany test split, GPU vs CPU probabilities in fp32, fp16
#          and bf16 (max |diff| <= 0.01, same decisions outside +-0.01 of
#          the threshold); then the Markdown table and the issue's targets.
# Results: $OUT (the device tool's folder) or build-gpu-bundle/out: logs,
# results.jsonl, table.md. Each part fits the device tool's 10-minute limit
# with --quick; "all" without --quick may need two calls (tests, then bench).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bundle_dir=$repo/build-gpu-bundle
build=${CXR_GPU_BUILD:-$repo/build-gpu}
targets="check_nn_cuda check_nn_cuda_train cxr_bench_gpu"

die() {
    echo "gpu.sh: $*" >&2
    exit 1
}

# ------------------------------------------------------------------ pack (here)
pack() {
    [ -x /usr/local/cuda/bin/nvcc ] || die "pack needs the CUDA toolkit in /usr/local/cuda"
    mkdir -p "$build"
    cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCXR_WITH_CUDA=ON \
        -DBUILD_TESTING=ON >"$build/gpu-configure.log" 2>&1 ||
        die "configure failed: $build/gpu-configure.log"
    # shellcheck disable=SC2086
    cmake --build "$build" --target $targets -j"${JOBS:-2}" >"$build/gpu-build.log" 2>&1 ||
        die "build failed: $build/gpu-build.log"
    local stage
    stage=$(mktemp -d)
    mkdir -p "$stage/bin" "$stage/lib"
    cp "$build/tests/check_nn_cuda" "$build/tests/check_nn_cuda_train" \
        "$build/bench/cxr_bench_gpu" "$stage/bin/"
    strip --strip-unneeded "$stage"/bin/* 2>/dev/null || true
    # Shared libraries to take along: everything but the C/C++ runtime (the
    # device's is newer) and the CUDA libraries (the device has its own,
    # matching its driver).
    local lib
    for lib in $(ldd "$stage"/bin/* | awk '/=> \//{print $3}' | sort -u); do
        case $(basename "$lib") in
            libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libstdc++.so*|\
            libgcc_s.so*|libcudnn*|libcublas*|libcuda.so*|libcudart*) ;;
            *) cp -L "$lib" "$stage/lib/" ;;
        esac
    done
    # the test split for the default model's CPU/GPU parity (shared data: absent on a fresh clone)
    local split=${CXR_SHARED_DATA:-$repo/../shared/data}/cxr-kermany/test
    if [ -d "$split" ]; then
        mkdir -p "$stage/parity"
        cp -r "$split"/. "$stage/parity/"
    else
        echo "note: $split absent: the default-model parity check will be skipped" >&2
    fi
    git -C "$repo" describe --always --dirty >"$stage/COMMIT" 2>/dev/null || echo unknown >"$stage/COMMIT"
    rm -rf "$bundle_dir"
    mkdir -p "$bundle_dir"
    tar -czf "$bundle_dir/bundle.tar.gz" -C "$stage" .
    rm -rf "$stage"
    local size
    size=$(du -m "$bundle_dir/bundle.tar.gz" | cut -f1)
    echo "packed $bundle_dir/bundle.tar.gz (${size} MiB; tree $(git -C "$repo" describe --always --dirty 2>/dev/null))"
    [ "$size" -lt 56 ] || echo "WARNING: over ~56 MiB, the device tool's 64 MiB transfer may refuse it" >&2
    echo "on the device: run command 'bench/gpu.sh run' with carry [\"build-gpu-bundle\"]"
}

# ------------------------------------------------------------------ run (device)
find_lib_dir() { # $1: file name; prints the first folder that has it
    local roots="/usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib"
    roots="$roots $(ls -d /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib 2>/dev/null | tr '\n' ' ')"
    roots="$roots /usr/lib/x86_64-linux-gnu /usr/lib64 /opt/nvidia"
    local site
    site=$(python3 -c 'import site,sys; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null || true)
    local r f
    for r in $roots; do
        [ -e "$r/$1" ] && { echo "$r"; return 0; }
    done
    for r in $site /opt /usr/local/lib; do
        [ -d "$r" ] || continue
        f=$(find "$r" -maxdepth 6 -name "$1" -print -quit 2>/dev/null)
        [ -n "$f" ] && { dirname "$f"; return 0; }
    done
    return 1
}

run() {
    local what=${1:-all} quick=${2:-}
    [ -f "$bundle_dir/bundle.tar.gz" ] || die "no $bundle_dir/bundle.tar.gz: run 'bench/gpu.sh pack' on a build machine and carry build-gpu-bundle"
    nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi finds no GPU here"
    local out=${OUT:-$bundle_dir/out} work
    mkdir -p "$out"
    work=$(mktemp -d)
    tar -xzf "$bundle_dir/bundle.tar.gz" -C "$work"
    local cudnn cublas cublaslt
    cudnn=$(find_lib_dir libcudnn.so.9) || die "libcudnn.so.9 not found on this machine"
    cublas=$(find_lib_dir libcublas.so.13) || die "libcublas.so.13 not found on this machine"
    cublaslt=$(find_lib_dir libcublasLt.so.13) || die "libcublasLt.so.13 not found on this machine"
    # PyTorch brings its own cuDNN (a different 9.x than the system's): it
    # runs with the machine's own library path, our programs with ours
    orig_ldp=${LD_LIBRARY_PATH-}
    export LD_LIBRARY_PATH="$work/lib:$cudnn:$cublas:$cublaslt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    {
        echo "# GPU run $(date -u +%Y-%m-%dT%H:%M:%SZ), bundle of commit $(cat "$work/COMMIT")"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
        echo "cuDNN from $cudnn; cuBLAS from $cublas"
        LD_LIBRARY_PATH=$orig_ldp python3 -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null || echo "PyTorch: not importable"
        echo "cpu: $(nproc) cores"
    } | tee "$out/header.txt"
    if ldd "$work"/bin/* | grep -E "not found|version .* not found"; then
        die "unresolved libraries (above): the device image differs from what gpu.sh expects"
    fi
    CK_RUN_CASE=selection "$work/bin/check_nn_cuda" >"$out/selection.log" 2>&1 || true # first CUDA start
    local status=0
    if [ "$what" = tests ] || [ "$what" = all ]; then
        local t
        for t in check_nn_cuda check_nn_cuda_train; do
            echo "== $t"
            if CK_DEFAULT_TIMEOUT=900 CXR_LOG_LEVEL=info "$work/bin/$t" >"$out/$t.log" 2>&1; then
                tail -1 "$out/$t.log"
            else
                status=1
                grep -E ":[EF]:|^[0-9]+%" "$out/$t.log" | head -40
            fi
            if grep -q "SKIP gpu" "$out/$t.log"; then
                echo "$t: some gpu tests SKIPPED on a GPU machine:" >&2
                grep -m3 "SKIP gpu" "$out/$t.log" >&2
                status=1
            fi
        done
    fi
    if [ "$what" = bench ] || [ "$what" = all ]; then
        local res=$out/results.jsonl iters_lat=1000 iters_thr=100 train_iters=20 tb=${CXR_TRAIN_BATCH:-128}
        if [ -n "$quick" ]; then
            iters_lat=300; iters_thr=30; train_iters=8
        fi
        : >"$res"
        local arch prec b
        for arch in resnet50 resnet18; do
            for prec in fp16 bf16; do
                for b in 1 64 256; do
                    local it=$iters_thr
                    [ "$b" = 1 ] && it=$iters_lat
                    "$work/bin/cxr_bench_gpu" infer --arch $arch --precision $prec --batch $b \
                        --iters $it >>"$res" 2>>"$out/bench.log" || { echo "cxr $arch $prec $b failed" >&2; status=1; }
                done
                LD_LIBRARY_PATH=$orig_ldp python3 "$repo/bench/gpu_torch.py" infer --arch $arch --precision $prec \
                    --batch 1,64,256 --iters $iters_lat >>"$res" 2>>"$out/bench.log" ||
                    { echo "torch $arch $prec failed" >&2; status=1; }
            done
        done
        for prec in fp16 bf16; do
            "$work/bin/cxr_bench_gpu" train --arch resnet50 --precision $prec --batch "$tb" \
                --iters $train_iters >>"$res" 2>>"$out/bench.log" || { echo "cxr train $prec failed" >&2; status=1; }
            LD_LIBRARY_PATH=$orig_ldp python3 "$repo/bench/gpu_torch.py" train --arch resnet50 --precision $prec --batch "$tb" \
                --iters $train_iters >>"$res" 2>>"$out/bench.log" || { echo "torch train $prec failed" >&2; status=1; }
        done
        # the same batch-1 latency with PyTorch's own cuDNN (the wheel's, often a
        # newer 9.x than the system's): does the library version matter?
        local wheel_cudnn
        wheel_cudnn=$(LD_LIBRARY_PATH=$orig_ldp python3 -c 'import os, nvidia.cudnn as c; print(os.path.join(list(c.__path__)[0], "lib"))' 2>/dev/null || true)
        if [ -n "$wheel_cudnn" ] && [ -e "$wheel_cudnn/libcudnn.so.9" ] && [ "$wheel_cudnn" != "$cudnn" ]; then
            for arch in resnet50 resnet18; do
                LD_LIBRARY_PATH="$work/lib:$wheel_cudnn:$cublas:$cublaslt${orig_ldp:+:$orig_ldp}" \
                    "$work/bin/cxr_bench_gpu" infer --arch $arch --precision fp16 --batch 1 \
                    --iters "$iters_lat" 2>>"$out/bench.log" | sed "s/^/wheel-cudnn /" | tee -a "$out/bench.log"
            done
        fi
        local model=$repo/models/cxr-default.safetensors
        if [ -f "$model" ] && [ -d "$work/parity" ]; then
            for prec in fp32 fp16 bf16; do
                "$work/bin/cxr_bench_gpu" parity --model "$model" --dir "$work/parity" \
                    --precision $prec --batch 32 >>"$res" 2>>"$out/bench.log" ||
                    { echo "default-model parity $prec FAILED (see results.jsonl)" >&2; status=1; }
            done
        else
            echo "default-model parity skipped: $model or the test split is absent" | tee -a "$out/bench.log"
        fi
        python3 "$repo/bench/gpu_torch.py" table "$res" | tee "$out/table.md"
    fi
    rm -rf "$work"
    return $status
}

case ${1:-} in
    pack) pack ;;
    run)
        shift
        what=all quick=
        for a in "$@"; do
            case $a in
                tests|bench|all) what=$a ;;
                --quick) quick=1 ;;
                *) die "run: unknown argument '$a'" ;;
            esac
        done
        run "$what" "$quick" ;;
    "") if nvidia-smi -L >/dev/null 2>&1; then run all; else pack; fi ;;
    -h|--help) sed -n '2,32p' "$0" ;;
    *) die "unknown command '$1' (pack | run [tests|bench|all] [--quick])" ;;
esac
