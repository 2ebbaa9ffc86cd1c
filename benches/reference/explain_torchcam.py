"""PyTorch and TorchCAM references for `camshaft-bench explain`.

For each (size, clients): `clients` threads each loop for `--seconds`:
decode one of 16 JPEGs (size x size) with PIL, scale to [0, 1], ImageNet-
normalise, then
  - pytorch: the ResNet body (to layer4), the CAM head's logits and the CAM of
    the predicted class, einsum('cb,abij->acij', W, feats) under no_grad, one
    image per forward (a request-per-call service);
  - torchcam: the same model through torchcam.methods.CAM(model, "layer4",
    fc_layer="fc") (torchcam==0.5.0); its hooks keep per-call state on the
    extractor, so calls are serialised by a lock.
Latency is one image's decode-to-map time. Prints one JSON line:
{"bench": "explain", "points": [{"side", "size", "clients", "images_per_s",
"p50_ms", "p99_ms"}...]}. torchcam is skipped (with a note on stderr) when it
is not installed: `pip install torchcam==0.5.0`.
"""

import argparse
import io
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


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
    img = Image.open(io.BytesIO(data)).convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - MEAN) / STD).unsqueeze(0)


def quantile(values, q):
    values = sorted(values)
    rank = min(max(math.ceil(q * len(values)), 1), len(values))
    return values[rank - 1]


def measure(side, size, clients, seconds, explain_one, images):
    for i in range(clients):  # warm-up
        explain_one(images[i % len(images)])
    latencies = []
    lock = threading.Lock()
    start = time.perf_counter()
    until = start + seconds

    def worker(k):
        mine = []
        i = k
        while time.perf_counter() < until:
            t = time.perf_counter()
            explain_one(images[i % len(images)])
            mine.append((time.perf_counter() - t) * 1e3)
            i += clients
        with lock:
            latencies.extend(mine)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(weights=None)
    model.fc = nn.Linear(512, 2, bias=False)
    model.eval()
    body = nn.Sequential(*list(model.children())[:-2])
    w = model.fc.weight

    def pytorch_one(data):
        x = prepare(data)
        with torch.no_grad():
            feats = body(x)
            logits = model.fc(feats.mean((2, 3)))
            c = int(logits.argmax(-1))
            return torch.einsum("cb,abij->acij", w, feats)[0, c]

    sides = [("pytorch", pytorch_one)]
    try:
        from torchcam.methods import CAM

        extractor = CAM(model, target_layer="layer4", fc_layer="fc")
        cam_lock = threading.Lock()

        def torchcam_one(data):
            x = prepare(data)
            with cam_lock, torch.no_grad():
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
