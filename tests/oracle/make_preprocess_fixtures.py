#!/usr/bin/python3
"""PyTorch oracle for nn's preprocessing and model files.

Run with Debian's /usr/bin/python3 (python3-torch 1.13, torchvision 0.14).

    make_preprocess_fixtures.py --out tests/data/nn
        writes the committed fixtures:
          pre_*.bin                  preprocessing cases (format below)
          half_values.bin            float32 -> float16/bfloat16 as torch rounds
          init_seed42_w4.json        what cxr_nn_model_init_width(resnet18, 1
                                     channel, 2 classes, width 4, seed 42) must
                                     produce, by an independent Python port of
                                     the generator documented in model_init.c
          torch_resnet18_w4.safetensors + .json
                                     a torchvision ResNet-18 (1 channel, 2
                                     classes, widths 4/8/16/32) written with
                                     safetensors' byte layout by hand (the
                                     safetensors package is not in Debian 12)
    make_preprocess_fixtures.py --compute IN OUT
        reads a case file without its output section (written by the C test)
        and writes the reference output floats to OUT (float32 LE)

Preprocessing case file (little-endian):
    8 bytes  magic "CXRPP001"
    7 x i32  src_w, src_h, has_mask, out_h, out_w, channels, mode (0 stretch, 1 letterbox)
    6 x f32  mean[3], std[3]
    u8       src[src_h * src_w], then mask[src_h * src_w] if has_mask
    f32      out[channels * out_h * out_w]   (absent in a --compute input)

The reference is torch.nn.functional.interpolate(mode="bilinear",
antialias=True, align_corners=False) in float64; letterbox follows the rule
documented in nn/src/preprocess.c; then (x/255 - mean)/std.
"""
import argparse
import hashlib
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

MAGIC = b"CXRPP001"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def reference(src, mask, out_h, out_w, channels, mode, mean, std):
    h, w = src.shape
    x = torch.from_numpy(src.astype(np.float64))
    if mask is not None:
        x = x * torch.from_numpy((mask != 0).astype(np.float64))
    if mode == 0:
        oh, ow, top, left = out_h, out_w, 0, 0
    else:
        s = min(out_h / h, out_w / w)
        oh = int(min(max(math.floor(h * s + 0.5), 1), out_h))
        ow = int(min(max(math.floor(w * s + 0.5), 1), out_w))
        top, left = (out_h - oh) // 2, (out_w - ow) // 2
    r = F.interpolate(x[None, None], size=(oh, ow), mode="bilinear", antialias=True,
                      align_corners=False)[0, 0]
    canvas = torch.zeros(out_h, out_w, dtype=torch.float64)
    canvas[top:top + oh, left:left + ow] = r
    planes = [(canvas / 255.0 - float(np.float32(mean[c]))) / float(np.float32(std[c]))
              for c in range(channels)]
    return torch.stack(planes).numpy().astype(np.float32)


def pack_case(src, mask, out_h, out_w, channels, mode, mean, std):
    h, w = src.shape
    m3 = (list(mean) + [0.0] * 3)[:3]
    s3 = (list(std) + [1.0] * 3)[:3]
    b = MAGIC + struct.pack("<7i", w, h, 1 if mask is not None else 0, out_h, out_w, channels, mode)
    b += struct.pack("<6f", *m3, *s3)
    b += src.astype(np.uint8).tobytes()
    if mask is not None:
        b += mask.astype(np.uint8).tobytes()
    return b


def read_case(buf):
    if buf[:8] != MAGIC:
        raise SystemExit("bad case file magic")
    w, h, has_mask, out_h, out_w, channels, mode = struct.unpack_from("<7i", buf, 8)
    vals = struct.unpack_from("<6f", buf, 36)
    off = 60
    src = np.frombuffer(buf, np.uint8, h * w, off).reshape(h, w)
    off += h * w
    mask = None
    if has_mask:
        mask = np.frombuffer(buf, np.uint8, h * w, off).reshape(h, w)
    return src, mask, out_h, out_w, channels, mode, vals[:3], vals[3:]


def image(gen, h, w):
    """Noise over a gradient: every tap weight matters."""
    noise = torch.randint(0, 256, (h, w), generator=gen, dtype=torch.int32).numpy()
    yy, xx = np.mgrid[0:h, 0:w]
    grad = (255.0 * (xx / max(w - 1, 1)) * (yy / max(h - 1, 1))).astype(np.int32)
    return ((noise + grad) // 2).astype(np.uint8)


def write_preprocess(out):
    gen = torch.Generator().manual_seed(20261125)
    img = image(gen, 97, 131)
    mask = np.ones((97, 131), np.uint8)
    mask[:12, :] = 0
    mask[:, 120:] = 0
    mask[40:50, 30:60] = 0
    cases = {
        "pre_down": (img, None, 32, 40, 1, 0, [0.5], [0.25]),
        "pre_up": (image(gen, 17, 23), None, 40, 48, 3, 0, IMAGENET_MEAN, IMAGENET_STD),
        "pre_mixed": (image(gen, 20, 60), None, 50, 30, 1, 0, [0.5], [0.25]),
        "pre_letterbox_wide": (img, None, 48, 48, 1, 1, [0.5], [0.25]),
        "pre_letterbox_tall": (image(gen, 101, 37), None, 40, 40, 3, 1, IMAGENET_MEAN, IMAGENET_STD),
        "pre_mask": (img, mask, 32, 40, 1, 0, [0.4], [0.3]),
        "pre_extreme": (image(gen, 157, 211), None, 7, 5, 1, 0, [0.5], [0.25]),
    }
    for name, c in cases.items():
        ref = reference(*c)
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(pack_case(*c) + ref.tobytes())


def write_half_values(out):
    """float32 inputs with torch's float16 and bfloat16 roundings of them:
    ties, subnormals, overflow, infinities, NaN and random values."""
    special = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, -70000.0, 6.103515625e-05,
               6.0e-05, 5.960464477539063e-08, 2.98e-08, 2.9802322387695312e-08, 1e-10,
               float("inf"), float("-inf"), 3.3895313892515355e+38, 1.0009765625, 1.00048828125,
               1.000732421875, 1.00390625, 1.001953125, 1.005859375, 0.1, 1 / 3]
    gen = torch.Generator().manual_seed(7)
    rnd = torch.randn(400, generator=gen, dtype=torch.float32) * 10.0
    small = torch.randn(200, generator=gen, dtype=torch.float32) * 1e-5
    bits = torch.randint(0, 2**31 - 1, (200,), generator=gen, dtype=torch.int64)
    rbits = torch.from_numpy(bits.numpy().astype(np.uint32).view(np.float32).copy())
    rbits = rbits[torch.isfinite(rbits)]
    x = torch.cat([torch.tensor(special, dtype=torch.float32), rnd, small, rbits])
    f16 = x.to(torch.float16).view(torch.int16).numpy().astype(np.uint16)
    bf16 = x.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16)
    with open(os.path.join(out, "half_values.bin"), "wb") as f:
        f.write(struct.pack("<i", len(x)))
        f.write(x.numpy().astype("<f4").tobytes())
        f.write(f16.astype("<u2").tobytes())
        f.write(bf16.astype("<u2").tobytes())


def narrow_resnet18(width, in_ch, num_classes):
    """torchvision's own ResNet-18 with widths width, 2w, 4w, 8w."""
    import torchvision.models.resnet as R

    class Narrow(R.ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = width
            return super()._make_layer(block, planes * width // 64, blocks, stride, dilate)

    m = Narrow(R.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    m.conv1 = torch.nn.Conv2d(in_ch, width, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = torch.nn.BatchNorm2d(width)
    m.fc = torch.nn.Linear(8 * width, num_classes)
    return m


def safetensors_bytes(state, metadata):
    """The safetensors layout: u64 LE header size, JSON header, data."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float64: "F64", torch.int64: "I64"}
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, t in state.items():
        t = t.detach().contiguous().cpu()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype in (torch.float16, torch.bfloat16) \
            else t.numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape),
                     "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_torch_model(out):
    torch.manual_seed(1234)
    m = narrow_resnet18(4, 1, 2)
    with torch.no_grad():  # non-trivial BN affine parameters
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    m.train()
    with torch.no_grad():  # running statistics from a few batches
        for _ in range(3):
            m(torch.rand(4, 1, 64, 64))
    m.eval()
    state = m.state_dict()
    name = "torch_resnet18_w4"
    blob = safetensors_bytes(state, {"format": "pt"})
    with open(os.path.join(out, name + ".safetensors"), "wb") as f:
        f.write(blob)
    probe = ["conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight",
             "layer3.1.bn2.running_mean", "layer4.1.conv2.weight", "fc.weight", "fc.bias",
             "bn1.num_batches_tracked"]
    side = {
        "param_count": sum(p.numel() for p in m.parameters()),
        "state_dict_entries": len(state),
        "state_dict_order": list(state.keys()),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "tensors": {k: {"shape": list(state[k].shape),
                        "first": [float(v) for v in state[k].flatten()[:4].tolist()],
                        "sum": float(state[k].double().sum())} for k in probe},
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(side, f, indent=1)
        f.write("\n")


M64 = (1 << 64) - 1


class Xoshiro:
    """xoshiro256** seeded by splitmix64, as nn/src/model_init.c documents."""

    def __init__(self, seed):
        x = seed & M64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))
        self.spare = None

    @staticmethod
    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def next(self):
        s = self.s
        result = (self.rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self.rotl(s[3], 45)
        return result

    def uniform(self):
        return float(self.next() >> 11) * 2.0 ** -53

    @staticmethod
    def det_log(x):
        e = 0
        while x >= 2.0:
            x *= 0.5
            e += 1
        while x < 1.0:
            x *= 2.0
            e -= 1
        if x > 1.4142135623730951:
            x *= 0.5
            e += 1
        t = (x - 1.0) / (x + 1.0)
        t2, term, total = t * t, t, 0.0
        for k in range(1, 42, 2):
            total += term / k
            term *= t2
        return 2.0 * total + e * 0.6931471805599453

    def normal(self):
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        while True:
            u = 2.0 * self.uniform() - 1.0
            v = 2.0 * self.uniform() - 1.0
            s = u * u + v * v
            if 0.0 < s < 1.0:
                break
        f = math.sqrt(-2.0 * self.det_log(s) / s)
        self.spare = v * f
        return u * f


def write_init_reference(out):
    """Replays the documented init over torchvision's state_dict order."""
    m = narrow_resnet18(4, 1, 2)
    r = Xoshiro(42)
    keep = {"conv1.weight": None, "layer1.0.conv1.weight": 32, "layer4.1.conv2.weight": 32,
            "fc.weight": None, "fc.bias": None}
    got = {}
    fan_in = m.fc.weight.shape[1]
    for name, t in m.state_dict().items():
        n = t.numel()
        if name.endswith("weight") and t.dim() == 4:
            std = math.sqrt(2.0 / (t.shape[0] * t.shape[2] * t.shape[3]))
            vals = [r.normal() * std for _ in range(n)]
        elif name.startswith("fc."):
            bound = 1.0 / math.sqrt(fan_in)
            vals = [(2.0 * r.uniform() - 1.0) * bound for _ in range(n)]
        else:
            continue
        if name in keep:
            lim = keep[name] or n
            got[name] = [float(v) for v in np.array(vals[:lim], dtype=np.float32)]
    with open(os.path.join(out, "init_seed42_w4.json"), "w") as f:
        json.dump({"arch": "resnet18", "channels": 1, "classes": 2, "base_width": 4, "seed": 42,
                   "values": got}, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="folder for the committed fixtures")
    ap.add_argument("--compute", nargs=2, metavar=("IN", "OUT"))
    a = ap.parse_args()
    if a.compute:
        with open(a.compute[0], "rb") as f:
            case = read_case(f.read())
        with open(a.compute[1], "wb") as f:
            f.write(reference(*case).tobytes())
        return 0
    if not a.out:
        ap.error("--out or --compute")
    os.makedirs(a.out, exist_ok=True)
    write_preprocess(a.out)
    write_half_values(a.out)
    write_torch_model(a.out)
    write_init_reference(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
