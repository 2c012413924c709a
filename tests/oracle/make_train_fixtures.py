#!/usr/bin/python3
"""PyTorch oracle for training steps (nn's trainer and the backends'
backward passes, optimizers and schedule).

Run with Debian's /usr/bin/python3 (python3-torch 1.13, torchvision 0.14):

    make_train_fixtures.py [--out tests/data/oracle_train]

Each case builds a small torchvision ResNet exactly as make_fixtures.py does
(torchvision's blocks and names, a small base width, 1 input channel, 2
classes, random weights and batch-norm state), then takes TWO optimizer
steps in float64 (the reference) with:

  * model.train() (batch norm on batch statistics, running statistics
    updated with momentum 0.1 and the unbiased variance), or for a frozen
    backbone: requires_grad False on everything but the fc and the backbone
    in eval() (running statistics used, not updated);
  * loss = F.cross_entropy(logits, labels, weight=class_weights) (weighted
    mean);
  * torch.nn.utils.clip_grad_norm_(params, max_norm) with max_norm half the
    first step's gradient norm, so clipping is active;
  * AdamW(betas (0.9, 0.999), eps 1e-8) with two parameter groups: conv and
    fc weights with weight_decay, batch-norm weights/biases and all biases
    with weight_decay 0. (PyTorch's own default would decay every
    parameter; excluding norm and bias parameters is the usual recipe and
    what cxr-triage does, so the oracle groups them explicitly.)  Or
    SGD(momentum 0.9, nesterov, weight_decay) with the same two groups;
  * OneCycleLR(max_lr, total_steps=10) with its defaults (pct_start 0.3,
    cos, div_factor 25, final_div_factor 1e4, cycle_momentum: beta1 or
    momentum 0.95 -> 0.85), stepped after each optimizer step.

Files per case NAME (safetensors written by hand, as make_fixtures.py):
    NAME.model.safetensors  the starting model (F32), as cxr_nn_model_load reads it
    NAME.io.safetensors     input1/input2 [N,1,H,W], labels1/labels2 [N] (F32
                            holding integers), class_weights [2],
                            logits1 [N,2], loss1/loss2 [1],
                            "grad1.<param>" (gradients of step 1, before clipping),
                            "step1.<name>" (parameters and running statistics after
                            step 1; omitted for some cases), "step2.<name>"
                            (after step 2; a frozen backbone stores only the fc:
                            the rest must equal the starting model); metadata: optimizer, lr, weight_decay,
                            clip_norm, total_steps, freeze_backbone, ...
"""
import argparse
import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def param_groups(model, wd, trainable):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name not in trainable:
            continue
        is_bn = any(name.startswith(m + ".") for m, mod in model.named_modules()
                    if isinstance(mod, nn.BatchNorm2d))
        if is_bn or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": wd})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def labels(batch, step):
    return torch.tensor([(i * 7 + step) % 3 % 2 for i in range(batch)], dtype=torch.int64)


def rel(a, b):
    a, b = a.double(), b.double()
    d = float(b.norm())
    return float((a - b).norm()) / d if d > 0 else float((a - b).norm())


def run_steps(model, dtype, inputs, batch, optimizer, lr, wd, freeze, clip):
    """Two optimizer steps of `model` in `dtype`; returns what the fixture
    stores (clones: clipping and the optimizer work in place)."""
    model = model.to(dtype)
    trainable = {n for n, _ in model.named_parameters() if (not freeze or n.startswith("fc."))}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    groups = param_groups(model, wd, trainable)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=10)
    cw = torch.tensor([0.75, 1.5], dtype=dtype)
    out = {"grad1": {}}
    for step in (1, 2):
        x, y = inputs[step - 1].to(dtype), labels(batch, step)
        if freeze:
            model.eval()  # backbone batch norm in eval mode; fc has none
        else:
            model.train()
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=cw)
        loss.backward()
        params = [p for n, p in model.named_parameters() if n in trainable]
        if step == 1:
            if clip is None:
                norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))
                clip = float(f"{0.5 * norm:.6g}")
            out["logits1"] = logits.detach().clone()
            for n, p in model.named_parameters():
                if n in trainable:
                    out["grad1"][n] = p.grad.detach().clone()  # clipping scales in place
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        out[f"loss{step}"] = loss.detach().clone()
        out[f"step{step}"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out["clip"] = clip
    out["model"] = model
    return out


def make_case(out, name, arch, width, h, w, batch, seed, optimizer, lr, wd, freeze, store_step1):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = mf.build(arch, width, 1, 2)
    mf.randomize(model, gen, 1, h, w)  # random weights and batch-norm state, eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1  # randomize() measured statistics with a cumulative average
            m.num_batches_tracked.zero_()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    tensors = []
    for key, t in model.state_dict().items():
        tensors.append((key, t, "I64" if key.endswith("num_batches_tracked") else "F32"))
    meta = {"format": "cxr-triage-model/1", "arch": arch, "input_size": f"{h},{w}",
            "channels": 1, "mean": "0.5", "std": "0.25", "class_names": "NORMAL,PNEUMONIA",
            "positive_class": 1, "name": f"oracle-train-{name}", "version": "0",
            "description": "random weights for training-step parity tests; not a diagnostic model"}
    mf.write_safetensors(os.path.join(out, name + ".model.safetensors"), tensors, meta)

    x1 = mf.images(gen, batch, 1, h, w)
    x2 = mf.images(gen, batch, 1, h, w)
    inputs = [x1, x2]
    ref = run_steps(copy.deepcopy(model), torch.float64, inputs, batch, optimizer, lr, wd, freeze,
                    None)
    f32 = run_steps(copy.deepcopy(model), torch.float32, inputs, batch, optimizer, lr, wd, freeze,
                    ref["clip"])
    clip = ref["clip"]
    io = [("logits1", ref["logits1"], "F32")]
    io += [("grad1." + n, g, "F32") for n, g in ref["grad1"].items()]
    # PyTorch's own fp32 against its fp64, per tensor, where it is above 1e-5
    # (Adam turns fp32 noise on a gradient that is exactly zero in fp64 into a
    # full-size step): the C test allows max(1e-4, 3x this) for such tensors.
    torch_fp32 = {}
    for step in (1, 2):
        x, y = inputs[step - 1], labels(batch, step)
        io.append((f"input{step}", x, "F32"))
        io.append((f"labels{step}", y.double(), "F32"))
        io.append((f"loss{step}", ref[f"loss{step}"].reshape(1), "F32"))
        if step == 2 or store_step1:
            for k, v in ref[f"step{step}"].items():
                # a frozen backbone must equal the starting model: only the fc is stored
                if not k.endswith("num_batches_tracked") and (not freeze or k.startswith("fc.")):
                    io.append((f"step{step}.{k}", v, "F32"))
                    e = rel(f32[f"step{step}"][k], v)
                    if e > 1e-5:
                        torch_fp32[f"step{step}.{k}"] = float(f"{e:.3g}")
    for n, g in ref["grad1"].items():
        e = rel(f32["grad1"][n], g)
        if e > 1e-5:
            torch_fp32["grad1." + n] = float(f"{e:.3g}")
    model = ref["model"]
    loss = ref["loss1"]
    io.append(("class_weights", torch.tensor([0.75, 1.5], dtype=torch.float64), "F32"))
    nbt = int(model.bn1.num_batches_tracked)
    io_meta = {"torch": torch.__version__, "seed": seed, "arch": arch, "base_width": width,
               "reference": "float64", "optimizer": optimizer, "lr": repr(lr),
               "weight_decay": repr(wd), "clip_norm": repr(clip), "total_steps": 10,
               "freeze_backbone": int(freeze), "num_batches_tracked": nbt,
               "step1_stored": int(store_step1),
               "torch_fp32_rel_error": json.dumps(torch_fp32, sort_keys=True)}
    mf.write_safetensors(os.path.join(out, name + ".io.safetensors"), io, io_meta)
    changed = max(float((model.state_dict()[k].double() - start[k].double()).abs().max())
                  for k in start if not k.endswith("num_batches_tracked"))
    print(f"{name}: {arch} w{width} {h}x{w} batch {batch} {optimizer} freeze={freeze}: "
          f"loss {float(loss):.6f}, clip {clip:.4g}, largest change {changed:.3g}; "
          f"torch fp32 vs fp64 above 1e-5: {torch_fp32}")
    return f"{name}\t{arch}\t{width}\t{h}\t{w}\t{batch}\t{optimizer}\t{int(freeze)}\n"


CASES = [
    # name, arch, width, H, W, batch, seed, optimizer, lr, weight decay, freeze, store step 1
    ("resnet18-w2-adamw", "resnet18", 2, 48, 40, 4, 301, "adamw", 0.01, 0.05, False, True),
    ("resnet50-w2-adamw", "resnet50", 2, 40, 40, 3, 302, "adamw", 0.01, 0.05, False, False),
    ("resnet18-w2-sgd", "resnet18", 2, 40, 48, 4, 303, "sgd", 0.05, 1e-3, False, False),
    ("resnet18-w2-frozen", "resnet18", 2, 40, 40, 4, 304, "adamw", 0.01, 0.05, True, True),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "data", "oracle_train"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    lines = ["# name\tarch\tbase_width\theight\twidth\tbatch\toptimizer\tfreeze\n"]
    for c in CASES:
        lines.append(make_case(a.out, *c))
    with open(os.path.join(a.out, "MANIFEST.tsv"), "w") as f:
        f.writelines(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
