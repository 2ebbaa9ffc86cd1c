"""Reference maps and faithfulness scores for the explainer's method tests.

Usage: cam_methods.py HEAD OUT_DIR IMAGE.png...

HEAD is `cam` (torchvision ResNet18, fc = Linear(512, 2, bias=False)) or
`fastai` (ResNet18 body + fastai's create_head, 2 classes). Writes
OUT_DIR/HEAD.pth (the state dict: random weights, non-trivial BatchNorm
statistics) and OUT_DIR/HEAD.json: for each image (decoded with PIL, already
at the input size, ImageNet-normalised), its logits and, for the predicted
class, the Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM and HiResCAM maps
computed the way pytorch-grad-cam's classes of those names do (BaseCAM's
`get_cam_image` and ReLU, before `scale_cam_image`), the CAM (cam head only),
and the deletion AUC and average drop of the Grad-CAM++ map as
explainer.proto defines them.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
STEPS = 20


class ConcatPool(torch.nn.Module):
    def forward(self, x):
        return torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], 1)


class Net(torch.nn.Module):
    """ResNet18 body; the head named as the Rust model names it."""

    def __init__(self, head):
        super().__init__()
        r = torchvision.models.resnet18(weights=None)
        self.kind = head
        for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]:
            setattr(self, name, getattr(r, name))
        if head == "cam":
            self.fc = torch.nn.Linear(512, 2, bias=False)
        else:
            self.head = torch.nn.Sequential(
                ConcatPool(), torch.nn.Flatten(), torch.nn.BatchNorm1d(1024), torch.nn.Dropout(0.25),
                torch.nn.Linear(1024, 512, bias=False), torch.nn.ReLU(), torch.nn.BatchNorm1d(512),
                torch.nn.Dropout(0.5), torch.nn.Linear(512, 2, bias=False))

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def top(self, a):
        if self.kind == "cam":
            return self.fc(a.mean((2, 3)))
        return self.head(a)

    def forward(self, x):
        return self.top(self.features(x))


def grad_cam_plus_plus_weights(grads, activations):
    """pytorch-grad-cam's GradCAMPlusPlus.get_cam_weights (numpy, float32)."""
    grads_power_2 = grads ** 2
    grads_power_3 = grads_power_2 * grads
    sum_activations = np.sum(activations, axis=(2, 3))
    eps = 0.000001
    aij = grads_power_2 / (2 * grads_power_2 + sum_activations[:, :, None, None] * grads_power_3 + eps)
    aij = np.where(grads != 0, aij, 0)
    weights = np.maximum(grads, 0) * aij
    return np.sum(weights, axis=(2, 3))


def gradient_maps(grads, activations):
    """Each gradient method's map, as pytorch-grad-cam's BaseCAM computes it:
    the method's get_cam_image, then np.maximum(cam, 0)."""

    def weighted(weights):  # BaseCAM.get_cam_image with get_cam_weights
        return (weights[:, :, None, None] * activations).sum(axis=1)

    sum_activations = np.sum(activations, axis=(2, 3))
    xgrad_weights = grads * activations / (sum_activations[:, :, None, None] + 1e-7)
    maps = {
        "grad_cam": weighted(np.mean(grads, axis=(2, 3))),
        "grad_cam_plus_plus": weighted(grad_cam_plus_plus_weights(grads, activations)),
        "xgrad_cam": weighted(xgrad_weights.sum(axis=(2, 3))),
        "layer_cam": (np.maximum(grads, 0) * activations).sum(axis=1),
        "hires_cam": (grads * activations).sum(axis=1),
    }
    return {name: np.maximum(cam, 0)[0] for name, cam in maps.items()}


def probability(model, x, cls):
    with torch.no_grad():
        return torch.softmax(model(x), -1)[:, cls]


def main():
    head, out_dir, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.manual_seed(0 if head == "cam" else 1)
    model = Net(head)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out_dir, head + ".pth"))

    results = []
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        x = ((torch.from_numpy(img).permute(2, 0, 1) - MEAN) / STD).unsqueeze(0)
        size = x.shape[-1]
        acts = model.features(x).detach().requires_grad_(True)
        logits = model.top(acts)
        cls = int(logits.argmax(-1))
        (grads,) = torch.autograd.grad(logits[0, cls], acts)
        a, g = acts.detach().numpy(), grads.numpy()
        out = {"logits": logits.detach()[0].tolist(), "class": cls}
        for name, cam in gradient_maps(g, a).items():
            out[name] = cam.flatten().tolist()
        if head == "cam":
            out["cam"] = torch.einsum("cb,abij->acij", model.fc.weight, acts)[0, cls].detach().flatten().tolist()

        m = torch.tensor(out["grad_cam_plus_plus"], dtype=torch.float32).view(1, 1, *a.shape[2:])
        up = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        # Deletion: the most salient pixels first (ties in pixel order), set to 0.
        order = torch.argsort(up.flatten(), descending=True, stable=True)
        pixels = size * size
        probs = []
        for k in range(STEPS + 1):
            keep = torch.ones(pixels)
            keep[order[: k * pixels // STEPS]] = 0
            probs.append(float(probability(model, x * keep.view(1, 1, size, size), cls)))
        out["deletion_auc"] = float(np.trapezoid(probs, dx=1.0 / STEPS))
        # Average drop: the image times the min-max normalised map.
        scaled = up - up.min()
        scaled = scaled / (1e-7 + scaled.max())
        p = float(probability(model, x, cls))
        pm = float(probability(model, x * scaled, cls))
        out["average_drop"] = max(0.0, p - pm) / p
        results.append(out)
    with open(os.path.join(out_dir, head + ".json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
