"""PIL reference for `camshaft-bench loader`.

Images per second, single-threaded, of the usual torchvision preprocessing of
every JPEG in a directory: PIL decode to RGB, resize (squish) to SIZE x SIZE
with Image.BILINEAR -- PIL's bilinear filter widens its support when
shrinking, like ours (fast_image_resize's Convolution(Bilinear), see
crates/data/src/resize.rs) -- then to_tensor (float CHW in [0, 1]) and
normalize with ImageNet's mean and std.

Prints one JSON line: {"bench", "unit": "images/s", "median", "samples", ...}.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def load(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as im:
        img = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return TF.normalize(TF.to_tensor(img), MEAN, STD)


def stages(paths: list, args: argparse.Namespace) -> list:
    """ms per image of [decode, resize, to_tensor+normalize], after one untimed pass."""
    totals = [0.0, 0.0, 0.0]
    repeats = max(args.repeats, 1)
    for rep in range(repeats + 1):
        for p in paths:
            t0 = time.perf_counter()
            with Image.open(p) as im:
                img = im.convert("RGB")
            t1 = time.perf_counter()
            img = img.resize((args.size, args.size), Image.BILINEAR)
            t2 = time.perf_counter()
            TF.normalize(TF.to_tensor(img), MEAN, STD)
            t3 = time.perf_counter()
            if rep > 0:
                totals[0] += t1 - t0
                totals[1] += t2 - t1
                totals[2] += t3 - t2
    return [t * 1e3 / (len(paths) * repeats) for t in totals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="directory of .jpg files")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes over all images")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--stages",
        action="store_true",
        help="instead, print ms per image of decode, resize and to_tensor+normalize",
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    paths = sorted(args.images.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no .jpg files in {args.images}")
    if args.stages:
        print(json.dumps({"bench": "loader_stages", "stages_ms": stages(paths, args)}))
        return
    for _ in range(args.warmup):
        for p in paths:
            load(p, args.size)
    samples = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for p in paths:
            t = load(p, args.size)
        samples.append(len(paths) / (time.perf_counter() - start))
    assert t.shape == (3, args.size, args.size)

    print(json.dumps({
        "bench": "loader",
        "unit": "images/s",
        "median": statistics.median(samples),
        "samples": samples,
        "images": len(paths),
        "size": args.size,
        "resample": "PIL.Image.BILINEAR",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
