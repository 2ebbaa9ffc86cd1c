"""torch.distributed all-reduce reference for `camshaft-bench allreduce`.

`--ranks` processes (one intra-op thread each) join a gloo group on loopback
(or NCCL, one GPU per rank) and, for each size in `--sizes` (bytes), as
nccl-tests' all_reduce_perf does: all-reduce (sum, in place) a pattern and
count the elements whose sum is wrong (over all ranks), then `--warmup`
untimed all-reduces of zeros and `--repeats` timed runs of `--iters`
all-reduces each after a barrier. A sample is the mean time of one
all-reduce in a run, in microseconds, on rank 0's clock.

Prints one JSON line: {"bench": "allreduce", "sizes": [{"bytes", "count",
"samples_us", "wrong"}, ...], ...}.
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

from process_group import run_ranks

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def index_hash(count: int, device: torch.device) -> torch.Tensor:
    """h(i) in 0..16: Knuth's multiplicative hash of the index, top 4 bits
    (the same pattern as ours, so a misplaced chunk changes the sum)."""
    i = torch.arange(count, dtype=torch.int64, device=device)
    return (i * 2654435761) % (1 << 32) // (1 << 28)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rank_main(rank: int, args: argparse.Namespace, port: int, out) -> None:
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}" if args.backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        args.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.ranks
    )
    dtype = DTYPES[args.dtype]
    elt = torch.tensor([], dtype=dtype).element_size()
    n = args.ranks
    rows = []
    for nbytes, iters in zip(args.sizes, args.iters):
        count = nbytes // elt
        checked = (index_hash(count, device) + rank + 1).to(dtype)
        dist.all_reduce(checked)
        expected = index_hash(count, device).double() * n + n * (n + 1) // 2
        wrong = torch.tensor(
            [int((checked.double() != expected).sum())], dtype=torch.int64, device=device
        )
        dist.all_reduce(wrong)
        timed = torch.zeros(count, dtype=dtype, device=device)
        for _ in range(args.warmup):
            dist.all_reduce(timed)
        samples = []
        for _ in range(args.repeats):
            sync(device)
            dist.barrier()
            start = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(timed)
            sync(device)
            samples.append((time.perf_counter() - start) * 1e6 / iters)
        rows.append({
            "bytes": count * elt,
            "count": count,
            "samples_us": samples,
            "wrong": int(wrong.item()),
        })
    if rank == 0:
        out.put(rows)
    dist.destroy_process_group()


def int_list(text: str) -> list:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--sizes", type=int_list, default=[8, 1024, 1 << 20, 16 << 20],
                    help="message sizes in bytes, comma-separated")
    ap.add_argument("--iters", type=int_list, default=[20],
                    help="all-reduces per timed repeat: one for all sizes or one per size")
    ap.add_argument("--warmup", type=int, default=5, help="untimed all-reduces per size")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per size")
    args = ap.parse_args()
    if len(args.iters) == 1:
        args.iters = args.iters * len(args.sizes)
    if len(args.iters) != len(args.sizes):
        raise SystemExit("--iters needs one value, or one per size")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    rows = run_ranks(rank_main, args, args.ranks)
    print(json.dumps({
        "bench": "allreduce",
        "backend": args.backend,
        "ranks": args.ranks,
        "dtype": args.dtype,
        "sizes": rows,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
