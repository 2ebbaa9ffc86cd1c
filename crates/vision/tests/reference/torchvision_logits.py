"""Reference logits from torchvision for the weight-import test.

Usage: torchvision_logits.py ARCH OUT_DIR [--no-bias-fc CLASSES]

Writes OUT_DIR/ARCH.pth (a torchvision state dict, random weights with
non-trivial BatchNorm statistics) and OUT_DIR/ARCH-io.pth ({"input", "logits"}
in eval mode), nothing else.
"""
import argparse
import os

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=["resnet18", "resnet34"])
    ap.add_argument("out_dir")
    ap.add_argument("--no-bias-fc", type=int, default=0, help="replace fc by Linear(512, N, bias=False)")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(weights=None)
    if args.no_bias_fc:
        model.fc = torch.nn.Linear(512, args.no_bias_fc, bias=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(3, 3, args.size, args.size)
    with torch.no_grad():
        y = model(x)
    os.makedirs(args.out_dir, exist_ok=True)
    name = args.arch + ("-cam" if args.no_bias_fc else "")
    torch.save(model.state_dict(), os.path.join(args.out_dir, name + ".pth"))
    torch.save({"input": x, "logits": y}, os.path.join(args.out_dir, name + "-io.pth"))


if __name__ == "__main__":
    main()
