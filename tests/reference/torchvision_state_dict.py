"""Writes a torchvision ResNet18 state dict (random weights, fixed seed) whose
`fc` is Linear(512, N) with or without a bias, as PyTorch users save one:
`torch.save(model.state_dict(), path)`. Used by `ctl models import` tests.

usage: torchvision_state_dict.py OUT.pth CLASSES [--no-bias]
"""
import sys

import torch
import torchvision

out, classes = sys.argv[1], int(sys.argv[2])
bias = "--no-bias" not in sys.argv[3:]
torch.manual_seed(0)
model = torchvision.models.resnet18()
model.fc = torch.nn.Linear(512, classes, bias=bias)
torch.save(model.state_dict(), out)
