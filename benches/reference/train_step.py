"""PyTorch eager reference for `camshaft-bench train`.

Training steps per second of the lecture's small CNN or torchvision's ResNet18
(fc -> Linear(512, 10)) on one fixed random batch, with
AdamW(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01) -- fastai's Adam
-- and cross-entropy (--fused: AdamW(fused=True)). One step: forward (train mode), loss, zero_grad (PyTorch's
default, set_to_none=True), backward, step.

--precision bf16|fp16 runs forward and loss under torch.autocast (fp16 with a
GradScaler); --channels-last puts model and batch in torch.channels_last.

Prints one JSON line: {"bench", "unit": "steps/s", "median", "samples", ...}.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def build(model: str, size: int) -> nn.Module:
    if model == "cnn":
        side = (size - 4) // 2
        return nn.Sequential(
            nn.Conv2d(3, 128, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128 * side * side, 10),  # 25088 at 32 px, as in the lecture
        )
    if model == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        net.fc = nn.Linear(512, 10)
        return net
    raise SystemExit(f"unknown model {model!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["cnn", "resnet18"], default="cnn")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--fused", action="store_true", help="AdamW(fused=True)")
    args = ap.parse_args()
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model, args.size).to(device).train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
        fused=True if args.fused else None,
    )
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(args.warmup):
        step()
    sync()
    samples = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        samples.append(args.steps / (time.perf_counter() - start))

    print(json.dumps({
        "bench": f"train_{args.model}",
        "unit": "steps/s",
        "median": statistics.median(samples),
        "samples": samples,
        "batch": args.batch,
        "device": args.device,
        "size": args.size,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "fused": args.fused,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
