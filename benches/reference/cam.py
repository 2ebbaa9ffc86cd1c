"""PyTorch eager reference for `camshaft-bench cam`.

Images per second of the lecture's CAM: a torchvision ResNet34 body (to
layer4) and a CAM head (AdaptiveAvgPool2d(1) -> Flatten -> Linear(512, 2,
bias=False)), eval mode, under torch.no_grad(): the body's forward pass, then
torch.einsum('cb,abij->acij', W, feats) for the maps of every class and the
head for the logits (as camshaft_vision::cam::cam_all_classes returns both).
One timed repeat is one batch.

Prints one JSON line: {"bench", "unit": "images/s", "median", "samples", ...}.
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
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    ap.add_argument("--repeats", type=int, default=5, help="timed batches (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = ap.parse_args()
    device = torch.device(args.device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet34(weights=None)
    body = nn.Sequential(*list(resnet.children())[:-2]).to(device).eval()
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 2, bias=False)
    ).to(device).eval()
    w = head[2].weight
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def cam() -> torch.Tensor:
        feats = body(x)
        maps = torch.einsum("cb,abij->acij", w, feats)
        head(feats)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return maps

    samples = []
    with torch.no_grad():
        for _ in range(args.warmup):
            cam()
        for _ in range(args.repeats):
            start = time.perf_counter()
            maps = cam()
            samples.append(args.batch / (time.perf_counter() - start))
    assert maps.shape == (args.batch, 2, args.size // 32, args.size // 32)

    print(json.dumps({
        "bench": "cam_resnet34",
        "unit": "images/s",
        "median": statistics.median(samples),
        "samples": samples,
        "batch": args.batch,
        "device": args.device,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
