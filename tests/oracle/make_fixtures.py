#!/usr/bin/python3
"""PyTorch oracle for the ResNet forward pass (nn's CPU/GPU backends).

Run with Debian's /usr/bin/python3 (python3-torch 1.13, torchvision 0.14).

    make_fixtures.py [--out tests/data/oracle]
        the SMALL committed fixtures: torchvision ResNets whose layer widths
        come from a small base width (torchvision's own block classes,
        _make_layer and parameter names; only the widths differ), 2 classes,
        seeded random weights AND randomized batch-norm statistics, eval mode,
        seeded structured inputs.
    make_fixtures.py --full --out DIR
        full-size torchvision resnet18 and resnet50 (1-channel conv1,
        2 classes) at 224x224, batch 2, F32 weights (tests/oracle/run_full.sh
        runs this at test time into <build>/oracle).

Each case NAME writes two safetensors files (byte layout written by hand:
u64 LE header length, JSON header, raw little-endian data; Debian 12 has no
safetensors package):
    NAME.model.safetensors  the model as cxr_nn_model_load reads it
                            (torchvision state_dict names and order,
                            "__metadata__" in the cxr-triage-model/1 form)
    NAME.io.safetensors     "input"  [N, C, H, W] F32, normalised input
                            "logits" [N, classes] F32, torch in float64
                            "logits_torch_fp32", "logits_torch_bf16" [N,
                            classes] F32, torch in float32 / bfloat16 (for
                            information: PyTorch's own error at that precision)
Small fixtures store conv/fc weights as F16 to stay small; the reference is
computed from exactly those rounded values. A MANIFEST.tsv lists the cases.
"""
import argparse
import copy
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class NarrowResNet(ResNet):
    """torchvision's ResNet with layer widths w, 2w, 4w, 8w instead of
    64..512 (conv1/bn1/fc follow). Blocks, _make_layer, forward and the
    parameter names are torchvision's own."""

    def __init__(self, block, layers, width, in_channels, num_classes):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # torchvision's width_per_group: bottleneck width == planes
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def build(arch, width, in_channels, num_classes):
    if width == 64:  # the real torchvision constructors
        m = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
        return m
    block, layers = ARCHS[arch]
    return NarrowResNet(block, layers, width, in_channels, num_classes)


def randomize(model, gen, in_channels, h, w):
    """Realistic but random batch-norm state: running statistics measured on
    random inputs (so activations stay in range through 50 layers), then
    perturbed (variance x U(0.5, 2), mean shifted by 0.2 sigma), random
    beta and fc bias, gamma U(0.6, 1.4) except on the last batch norm of
    each residual branch, U(0.2, 0.6): trained ResNets have small gammas
    there (torchvision's zero_init_residual even starts them at 0). With
    gamma ~ 1 everywhere the random 50-layer net is chaotic and even
    PyTorch's own bf16 is 5-10 % off, which would leave a bf16 tolerance
    untestable."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(images(gen, 4, in_channels, h, w))
        last = set()
        for m in model.modules():
            if isinstance(m, BasicBlock):
                last.add(id(m.bn2))
            elif isinstance(m, Bottleneck):
                last.add(id(m.bn3))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                lo, hi = (0.2, 0.6) if id(m) in last else (0.6, 1.4)
                m.running_var.mul_(torch.empty(c).uniform_(0.5, 2.0, generator=gen))
                m.running_mean.add_(0.2 * torch.randn(c, generator=gen) * m.running_var.sqrt())
                m.weight.copy_(torch.empty(c).uniform_(lo, hi, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
        model.fc.bias.copy_(0.1 * torch.randn(model.fc.bias.shape, generator=gen))
    model.eval()


def images(gen, batch, channels, h, w):
    """Normalised inputs with structure (a few low-frequency waves, a
    brightness offset, noise), different per image: white noise alone would
    be averaged away by the global pool and every image would score alike."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = torch.empty(batch, channels, h, w)
    for n in range(batch):
        img = torch.zeros(h, w)
        for _ in range(4):
            f = torch.rand(2, generator=gen) * 6
            phase = float(torch.rand(1, generator=gen)) * 2 * math.pi
            amp = float(torch.randn(1, generator=gen))
            img += amp * torch.sin(2 * math.pi * (f[0] * xx + f[1] * yy) + phase)
        img += float(torch.randn(1, generator=gen))
        for c in range(channels):
            out[n, c] = img * (1 + 0.2 * c) + 0.3 * torch.randn(h, w, generator=gen)
    return out


def round_weights(model, dtype):
    """Rounds conv and fc weights to `dtype` in place (what the file stores)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() in (2, 4):
                p.copy_(p.to(dtype).to(torch.float32))


def tensor_bytes(t, dtype):
    t = t.detach().cpu().contiguous()
    if dtype == "F32":
        return t.to(torch.float32).numpy().astype("<f4").tobytes()
    if dtype == "F16":
        return t.to(torch.float16).numpy().astype("<f2").tobytes()
    if dtype == "I64":
        return t.to(torch.int64).numpy().astype("<i8").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor, dtype); metadata: dict of strings."""
    header, blobs, off = {}, [], 0
    for name, t, dtype in tensors:
        b = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def make_case(out, name, arch, width, in_channels, h, w, batch, seed, weight_dtype):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # module init draws from the global generator
    model = build(arch, width, in_channels, 2)
    randomize(model, gen, in_channels, h, w)
    if weight_dtype == "F16":
        round_weights(model, torch.float16)
    x = images(gen, batch, in_channels, h, w)
    with torch.no_grad():
        ref = model.double()(x.double()).float()
        model.float()
        fp32 = model(x)
        bf16 = copy.deepcopy(model).bfloat16()(x.bfloat16()).float()  # rounds the copy's state
    rel = float((fp32 - ref).norm() / ref.norm())
    rel_bf16 = float((bf16 - ref).norm() / ref.norm())
    sens = float((ref - ref.mean(0)).norm() / ref.norm())
    tensors = []
    for key, t in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            tensors.append((key, t, "I64"))
        elif weight_dtype == "F16" and key.endswith("weight") and t.dim() in (2, 4):
            tensors.append((key, t, "F16"))
        else:
            tensors.append((key, t, "F32"))
    mean = ",".join(["0.5"] * in_channels)
    std = ",".join(["0.25"] * in_channels)
    meta = {
        "format": "cxr-triage-model/1", "arch": arch, "input_size": f"{h},{w}",
        "channels": in_channels, "mean": mean, "std": std, "class_names": "NORMAL,PNEUMONIA",
        "positive_class": 1, "name": f"oracle-{name}", "version": "0",
        "description": "random weights and batch-norm statistics for backend parity tests; "
                       "not a diagnostic model",
    }
    write_safetensors(os.path.join(out, name + ".model.safetensors"), tensors, meta)
    io_meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "seed": seed,
               "arch": arch, "base_width": width, "reference": "float64",
               "torch_fp32_rel_error": f"{rel:.3e}", "torch_bf16_rel_error": f"{rel_bf16:.3e}",
               "input_sensitivity": f"{sens:.3e}"}
    write_safetensors(os.path.join(out, name + ".io.safetensors"),
                      [("input", x, "F32"), ("logits", ref, "F32"),
                       ("logits_torch_fp32", fp32, "F32"), ("logits_torch_bf16", bf16, "F32")],
                      io_meta)
    print(f"{name}: {arch} width {width} {in_channels}x{h}x{w} batch {batch}; "
          f"|logits| {float(ref.norm()):.3f}, spread across images {sens:.2f}; "
          f"torch rel error fp32 {rel:.2e}, bf16 {rel_bf16:.2e}")
    return f"{name}\t{arch}\t{width}\t{in_channels}\t{h}\t{w}\t{batch}\n"


SMALL = [
    # name, arch, base width, channels, H, W, batch, seed
    ("resnet18-w7-c1-64x64", "resnet18", 7, 1, 64, 64, 3, 101),
    ("resnet50-w4-c1-64x64", "resnet50", 4, 1, 64, 64, 3, 102),
    ("resnet34-w4-c3-64x64", "resnet34", 4, 3, 64, 64, 3, 103),
    ("resnet50-w4-c1-64x96", "resnet50", 4, 1, 64, 96, 2, 104),
]
FULL = [
    ("resnet18-full-c1-224", "resnet18", 64, 1, 224, 224, 2, 201),
    ("resnet50-full-c1-224", "resnet50", 64, 1, 224, 224, 2, 202),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size resnet18/50 at 224x224")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "data", "oracle"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cases = FULL if a.full else SMALL
    lines = ["# name\tarch\tbase_width\tchannels\theight\twidth\tbatch\n"]
    for name, arch, width, ch, h, w, batch, seed in cases:
        lines.append(make_case(a.out, name, arch, width, ch, h, w, batch, seed,
                               "F32" if a.full else "F16"))
    with open(os.path.join(a.out, "MANIFEST.tsv"), "w") as f:
        f.writelines(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
