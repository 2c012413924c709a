#!/usr/bin/python3
"""PyTorch side of bench/train_cpu.sh: images/s of full training steps.

    train_torch.py --arch resnet18 --batch 32 --threads 2 [--size 224]
                   [--warmup 2] [--iters 10] [--layout nchw|channels_last]
                   [--precision fp32|bf16]

torchvision's ResNet with a 1-channel conv1 and 2 classes, train(), random
inputs and labels, class-weighted cross-entropy, clip_grad_norm_(1.0),
AdamW (the same step cxr-triage takes); bf16 through
torch.autocast("cpu", dtype=torch.bfloat16). Prints one JSON object.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--layout", default="nchw", choices=["nchw", "channels_last"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    m = getattr(torchvision.models, a.arch)(weights=None, num_classes=2)
    m.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    x = torch.randn(a.batch, 1, a.size, a.size)
    y = torch.tensor([i % 2 for i in range(a.batch)])
    if a.layout == "channels_last":
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4)
    cw = torch.tensor([1.0, 1.0])
    times = []
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            out = m(x)
        loss = F.cross_entropy(out.float(), y, weight=cw)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        t = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(t * 1e3)
    med = statistics.median(times)
    print(json.dumps({"arch": a.arch, "batch": a.batch, "size": a.size, "threads": a.threads,
                      "layout": a.layout, "precision": a.precision,
                      "step_ms_median": round(med, 2), "step_ms_min": round(min(times), 2),
                      "step_ms_max": round(max(times), 2),
                      "images_per_s": round(a.batch * 1e3 / med, 2),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
