"""PyTorch DDP (gloo) reference for `camshaft-bench ddp`.

`--ranks` processes with `--threads` intra-op threads each (default 1)
train the lecture's CNN or torchvision's ResNet18 (fc -> Linear(512, 10))
with DistributedDataParallel over gloo on loopback (default 25 MiB gradient
buckets) and AdamW(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01);
each rank steps on its own fixed random batch. Rank 0 times the group.

Prints one JSON line: {"bench", "unit": "steps/s", "median", "samples", ...}.
"""

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from process_group import run_ranks
from train_step import build


def rank_main(rank: int, args: argparse.Namespace, port: int, out) -> None:
    torch.set_num_threads(args.threads)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.ranks
    )
    torch.manual_seed(0)
    model = DistributedDataParallel(build(args.model, args.size).train())
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01
    )
    torch.manual_seed(1 + rank)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    samples = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        samples.append(args.steps / (time.perf_counter() - start))
    if rank == 0:
        out.put(samples)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["cnn", "resnet18"], default="resnet18")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    ap.add_argument("--batch", type=int, default=32, help="images per step per rank")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed repeat")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    samples = run_ranks(rank_main, args, args.ranks)
    print(json.dumps({
        "bench": f"ddp_{args.model}",
        "unit": "steps/s",
        "median": statistics.median(samples),
        "samples": samples,
        "ranks": args.ranks,
        "threads": args.threads,
        "batch": args.batch,
        "backend": "gloo",
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
