"""PyTorch and TorchCAM references for `camshaft-bench explain`.

For each (size, clients): `clients` threads each loop for `--seconds`:
decode one of 16 JPEGs (size x size) with PIL, scale to [0, 1], ImageNet-
normalise, and hand the image to the model thread (this process's main
thread), which runs one image per forward, the way a request-per-call
service with one model runs it:
  - pytorch: the ResNet body (to layer4), the CAM head's logits and the CAM of
    the predicted class, einsum('cb,abij->acij', W, feats) under no_grad;
  - torchcam: the same model through torchcam.methods.CAM(model, "layer4",
    fc_layer="fc") (torchcam==0.5.0).
One model thread, not the model called from every client thread: each thread
that runs a parallel libtorch operation keeps an OpenMP team of its own, and
with more OpenMP threads than cores libgomp stops spinning between
operations, which made threaded calls ~40% slower here. The main thread also
builds the model, so it is the only thread with a team.
Latency is one image's decode-to-map time. Prints one JSON line:
{"bench": "explain", "points": [{"side", "size", "clients", "images_per_s",
"p50_ms", "p99_ms"}...]}. torchcam is skipped (with a note on stderr) when it
is not installed: `pip install torchcam==0.5.0`.
"""

import argparse
import io
import json
import math
import queue
import sys
import threading
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def jpegs(size):
    out = []
    for seed in range(16):
        x = np.arange(size)[None, :]
        y = np.arange(size)[:, None]
        img = np.stack(
            [
                np.broadcast_to((x * 3 + seed * 17) % 256, (size, size)),
                np.broadcast_to((y * 5 + seed * 29) % 256, (size, size)),
                ((x + y) // 3 + seed * 7) % 256,
            ],
            -1,
        ).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def prepare(data):
    """Decode and normalise in NumPy: the client threads run no torch
    operation, so they start no OpenMP team (see above)."""
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    x = (img / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).unsqueeze(0)


def quantile(values, q):
    values = sorted(values)
    rank = min(max(math.ceil(q * len(values)), 1), len(values))
    return values[rank - 1]


def measure(side, size, clients, seconds, explain_one, images):
    for data in images[:2]:  # warm-up, on the model thread
        explain_one(prepare(data))
    requests = queue.Queue()
    latencies = []
    lock = threading.Lock()
    start = time.perf_counter()
    until = start + seconds

    def client(k):
        mine = []
        i = k
        while time.perf_counter() < until:
            t = time.perf_counter()
            done = threading.Event()
            requests.put((prepare(images[i % len(images)]), done))
            done.wait()
            mine.append((time.perf_counter() - t) * 1e3)
            i += clients
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        try:
            x, done = requests.get(timeout=0.05)
        except queue.Empty:
            continue
        explain_one(x)
        done.set()
    elapsed = time.perf_counter() - start
    return {
        "side": side,
        "size": size,
        "clients": clients,
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": quantile(latencies, 0.5),
        "p99_ms": quantile(latencies, 0.99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--sizes", default="224,512")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--arch", default="resnet34", choices=["resnet18", "resnet34"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(weights=None)
    model.fc = nn.Linear(512, 2, bias=False)
    model.eval()
    body = nn.Sequential(*list(model.children())[:-2])
    w = model.fc.weight
    # bf16: the body in bfloat16, the head in float32, as the explainer's
    # `precision = "bf16"` runs them.
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    body.to(dtype)

    def pytorch_one(x):
        with torch.no_grad():
            feats = body(x.to(dtype)).float()
            logits = model.fc(feats.mean((2, 3)))
            c = int(logits.argmax(-1))
            return torch.einsum("cb,abij->acij", w, feats)[0, c]

    sides = [("pytorch", pytorch_one)]
    if args.precision != "fp32":
        print("torchcam runs in fp32 only: skipped", file=sys.stderr)
    else:
        try:
            from torchcam.methods import CAM

            extractor = CAM(model, target_layer="layer4", fc_layer="fc")

            def torchcam_one(x):
                with torch.no_grad():
                    scores = model(x)
                    return extractor(int(scores.argmax(-1)), scores)[0]

            sides.append(("torchcam", torchcam_one))
        except ImportError as e:
            print(f"torchcam not installed ({e}); pip install torchcam==0.5.0", file=sys.stderr)

    points = []
    for size in [int(s) for s in args.sizes.split(",")]:
        images = jpegs(size)
        for clients in [int(c) for c in args.clients.split(",")]:
            for side, fn in sides:
                p = measure(side, size, clients, args.seconds, fn, images)
                print(p, file=sys.stderr)
                points.append(p)
    print(json.dumps({"bench": "explain", "points": points}))


if __name__ == "__main__":
    main()
