#!/usr/bin/python3
"""Times Debian's PyTorch on the same forward pass as cxr_bench_infer (for
bench/infer_cpu.sh): torchvision resnet with a 1-channel conv1 and 2 classes,
eval mode, torch.no_grad(), threads = --threads; bf16 through
torch.autocast("cpu", dtype=torch.bfloat16). Both memory layouts are timed
(contiguous NCHW and channels_last) and the faster one is reported.
Prints one JSON object."""
import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn as nn
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = getattr(torchvision.models, a.arch)(weights=None, num_classes=2)
    model.conv1 = nn.Conv2d(a.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.eval()
    x = torch.rand(a.batch, a.channels, a.size, a.size) * 4 - 2
    res = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        m = model.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if a.precision == "bf16"
               else contextlib.nullcontext())
        times = []
        with torch.no_grad(), ctx:
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                m(xi)
                if i >= a.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        res[layout] = (statistics.median(times), min(times), max(times))
    best = min(res, key=lambda k: res[k][0])
    med, lo, hi = res[best]
    print(json.dumps({
        "impl": "torch", "arch": a.arch, "batch": a.batch, "precision": a.precision,
        "threads": a.threads, "size": a.size, "ms_per_batch": round(med, 3),
        "ms_per_image": round(med / a.batch, 3), "min_ms": round(lo, 3), "max_ms": round(hi, 3),
        "iters": a.iters, "layout": best,
        "ms_per_batch_by_layout": {k: round(v[0], 3) for k, v in res.items()},
        "backend": f"torch {torch.__version__}, mkldnn {torch.backends.mkldnn.is_available()}",
    }))


if __name__ == "__main__":
    main()
