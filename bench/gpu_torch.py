#!/usr/bin/env python3
"""PyTorch side of bench/gpu.sh: the same ResNets on the same GPU.

    python3 bench/gpu_torch.py infer --arch resnet50 --precision fp16 --batch 1,64,256
    python3 bench/gpu_torch.py train --arch resnet50 --precision fp16 --batch 128 [--iters 20]
    python3 bench/gpu_torch.py table RESULTS.jsonl     (the summary bench/gpu.sh prints)

infer: torchvision's model (num_classes=2, in_channels as --channels), eval(),
channels_last, torch.autocast(cuda, dtype), input already on the GPU; two
ways: "eager" (plain calls) and "graphs" (torch.cuda.CUDAGraph of one call,
replayed). Batch latency: wall clock per call with a synchronize (median,
p99); throughput: CUDA events around `iters` back-to-back calls.
train: AMP as usually written (autocast; GradScaler for fp16, none for
bf16), channels_last, cross-entropy, clip_grad_norm_(1.0), AdamW - what
cxr_nn_trainer_step does. One JSON object per line on stdout.
"""
import argparse
import json
import statistics
import sys
import time

try:  # `table` needs neither
    import torch
    import torchvision
except ImportError:
    torch = torchvision = None


def make_model(arch, channels):
    m = getattr(torchvision.models, arch)(num_classes=2)
    if channels != 3:
        old = m.conv1
        m.conv1 = torch.nn.Conv2d(channels, old.out_channels, kernel_size=7, stride=2, padding=3,
                                  bias=False)
    return m.cuda().to(memory_format=torch.channels_last)


def dtype_of(name):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def infer(a, model):
    dt = dtype_of(a.precision)
    x = torch.randn(a.batch, a.channels, a.size, a.size, device="cuda").to(
        memory_format=torch.channels_last)
    use_amp = dt != torch.float32

    def call(inp, cache=True):
        # autocast's weight-cast cache must be off inside a CUDA graph capture
        with torch.autocast("cuda", dtype=dt, enabled=use_amp, cache_enabled=cache):
            return model(inp)

    results = []
    with torch.inference_mode():
        for way in ("eager", "graphs"):
            if way == "graphs":
                static_x = x.clone()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        call(static_x, cache=False)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_y = call(static_x, cache=False)
                run = graph.replay
            else:
                def run():
                    return call(x)
            for _ in range(a.warmup):
                run()
            torch.cuda.synchronize()
            lat = []
            n_lat = min(a.iters, 300) if a.batch > 1 else a.iters
            for _ in range(n_lat):
                t0 = time.perf_counter()
                run()
                torch.cuda.synchronize()
                lat.append((time.perf_counter() - t0) * 1e3)
            lat.sort()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            n_thr = max(10, min(a.iters, 200))
            e0.record()
            for _ in range(n_thr):
                run()
            e1.record()
            torch.cuda.synchronize()
            dev_ms = e0.elapsed_time(e1) / n_thr
            results.append({
                "impl": "torch-" + way, "mode": "infer", "arch": a.arch, "precision": a.precision,
                "batch": a.batch, "size": a.size, "channels": a.channels,
                "e2e_ms_median": statistics.median(lat),
                "e2e_ms_p99": lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1) + 0.5))],
                "device_ms": dev_ms, "images_per_s_device": a.batch * 1000.0 / dev_ms,
                "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                "gpu": torch.cuda.get_device_name(0),
            })
            if way == "graphs":
                del graph, static_y
    return results


def train(a):
    dt = dtype_of(a.precision)
    model = make_model(a.arch, a.channels).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dt == torch.float16)
    x = torch.randn(a.batch, a.channels, a.size, a.size, device="cuda").to(
        memory_format=torch.channels_last)
    y = (torch.arange(a.batch, device="cuda") % 2)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dt, enabled=dt != torch.float32):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    return [{
        "impl": "torch-eager", "mode": "train", "arch": a.arch, "precision": a.precision,
        "batch": a.batch, "size": a.size, "channels": a.channels, "step_ms_median": med,
        "step_ms_min": min(times), "images_per_s": a.batch * 1000.0 / med,
        "loss": float(loss), "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
    }]


def fmt(v, unit=""):
    return "-" if v is None else (f"{v:,.0f}{unit}" if v >= 100 else f"{v:.3f}{unit}")


def table(path):
    """Markdown summary of bench/gpu.sh's JSON lines, with the issue's targets."""
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    inf = [r for r in rows if r["mode"] == "infer"]
    print("| arch | prec | batch | impl | latency median ms | p99 ms | device ms/batch | images/s (device) | images/s (host to host) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(inf, key=lambda r: (r["arch"], r["precision"], r["batch"], r["impl"])):
        print(f"| {r['arch']} | {r['precision']} | {r['batch']} | {r['impl']} | "
              f"{fmt(r.get('e2e_ms_median'))} | {fmt(r.get('e2e_ms_p99'))} | {fmt(r.get('device_ms'))} | "
              f"{fmt(r.get('images_per_s_device'))} | {fmt(r.get('images_per_s_e2e'))} |")
    tr = [r for r in rows if r["mode"] == "train"]
    if tr:
        print()
        print("| arch | prec | batch | impl | step ms | images/s |")
        print("|---|---|---|---|---|---|")
        for r in sorted(tr, key=lambda r: (r["arch"], r["precision"], r["impl"])):
            print(f"| {r['arch']} | {r['precision']} | {r['batch']} | {r['impl']} | "
                  f"{fmt(r['step_ms_median'])} | {fmt(r['images_per_s'])} |")

    par = [r for r in rows if r["mode"] == "parity"]
    if par:
        print()
        print("| default model parity | images | max abs diff p | decision flips (outside +-0.01) | pass |")
        print("|---|---|---|---|---|")
        for r in par:
            print(f"| {r['precision']} vs CPU fp32 | {r['images']} | {r['max_abs_diff']:.5f} | "
                  f"{r['decision_flips']} ({r['flips_outside_0.01']}) | {r['pass']} |")

    def find(impl, mode, arch, prec, batch=None):
        for r in rows:
            if (r.get("impl"), r.get("mode"), r.get("arch"), r.get("precision")) == \
                    (impl, mode, arch, prec) and (batch is None or r.get("batch") == batch):
                return r
        return None

    print()
    print("Targets (issue 6, one H100):")
    ours1 = find("cxr", "infer", "resnet50", "fp16", 1)
    if ours1:
        v, d = ours1["e2e_ms_median"], ours1["device_ms"]
        print(f"  batch-1 resnet50 fp16 latency <= 0.5 ms: {v:.3f} ms host to host "
              f"({'MET' if v <= 0.5 else 'MISSED'}), {d:.3f} ms on the device "
              f"({'MET' if d <= 0.5 else 'MISSED'})")
    ours = find("cxr", "infer", "resnet50", "fp16", 256)
    eager = find("torch-eager", "infer", "resnet50", "fp16", 256)
    if ours and eager:
        r = ours["images_per_s_device"] / eager["images_per_s_device"]
        ok = r >= 1.5 and ours["images_per_s_device"] >= 30000
        print(f"  batch-256 resnet50 fp16: {ours['images_per_s_device']:,.0f} images/s = {r:.2f}x "
              f"PyTorch eager (target >= 1.5x and >= 30,000/s) -> {'MET' if ok else 'MISSED'}")
    for prec in ("fp16", "bf16"):
        a, b = find("cxr", "train", "resnet50", prec), find("torch-eager", "train", "resnet50", prec)
        if a and b:
            r = a["images_per_s"] / b["images_per_s"]
            print(f"  training resnet50 {prec}: {a['images_per_s']:,.0f} vs {b['images_per_s']:,.0f} "
                  f"images/s = {r:.2f}x PyTorch (target >= 1.0x) -> {'MET' if r >= 1.0 else 'MISSED'}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["infer", "train"])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--batch", default="1", help="one batch size, or several: 1,64,256 (infer)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    a = p.parse_args()
    if a.warmup is None:
        a.warmup = 3 if a.mode == "train" else 50
    if a.iters is None:
        a.iters = 20 if a.mode == "train" else 1000
    if torch is None or not torch.cuda.is_available():
        print("SKIP: torch sees no CUDA device", file=sys.stderr)
        return 77
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    batches = [int(b) for b in str(a.batch).split(",")]
    if a.mode == "infer":
        model = make_model(a.arch, a.channels).eval()
        for bsz in batches:
            a.batch = bsz
            for r in infer(a, model):
                print(json.dumps(r), flush=True)
            torch.cuda.empty_cache()
    else:
        a.batch = batches[0]
        for r in train(a):
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
