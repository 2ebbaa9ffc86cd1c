"""A torch.distributed group of processes on this machine, for the
reference scripts that compare against it (`ddp.py`, `allreduce.py`)."""

import queue
import socket
import time

import torch.multiprocessing as mp


def run_ranks(rank_main, args, ranks: int, timeout: float = 600.0):
    """Spawns `ranks` processes running `rank_main(rank, args, port, out)`,
    where `port` is a free loopback port for `init_method` and rank 0 puts
    its result on `out`; returns that result. Fails as soon as a rank exits
    with an error, instead of waiting out `timeout`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, args, port, out)) for r in range(ranks)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = out.get(timeout=1.0)
            break
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise SystemExit(f"a rank exited with {failed[0]}" if failed else "timed out")
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a rank exited with {p.exitcode}")
    return result
