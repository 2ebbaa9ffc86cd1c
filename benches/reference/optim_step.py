"""PyTorch reference for `camshaft-bench optim`.

Optimiser steps per second over torchvision ResNet18's parameters
(fc -> Linear(512, 10)) with fixed random gradients:
AdamW(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01), PyTorch's
default implementation (on a CPU: per tensor; on CUDA: foreach), or
--fused (fused=True).

Prints one JSON line: {"bench", "unit": "steps/s", "median", "samples", ...}.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torchvision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fused", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Linear(512, 10)
    net = net.to(device)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    opt = torch.optim.AdamW(
        net.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
        fused=True if args.fused else None,
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        opt.step()
    sync()
    samples = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        sync()
        samples.append(args.steps / (time.perf_counter() - start))
    print(json.dumps({
        "bench": "optim_resnet18",
        "unit": "steps/s",
        "median": statistics.median(samples),
        "samples": samples,
        "fused": args.fused,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
