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

Beside those (issue 19): every gradient method's map at `layer3` (the body
run to layer3 without autograd, layer4 and the head differentiated),
LayerCAM fused over layer3 + layer4 as TorchCAM's `LayerCAM.fuse_cams` does
(per-layer `_normalize`, `tanh(2 cam)`, bilinear upsampling to the finest
layer, maximum), pytorch-grad-cam's `ScoreCAM` at layer4 and layer3 (first image only), Grad-CAM
with pytorch-grad-cam's `aug_smooth` (ttach HorizontalFlip x Multiply([0.9,
1, 1.1]), each map de-augmented and `scale_cam_image`d, then averaged; at
feature resolution, which bilinear upsampling commutes with), ROAD of the
Grad-CAM++ map (pytorch-grad-cam's `ROADMostRelevantFirst(80)` with its
`NoisyLinearImputer` system solved densely, noise 0), and the deletion AUC
with the black baseline and the average drop with the blur baseline.
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

    def to_layer3(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def from_layer3(self, a):
        return self.top(self.layer4(a))


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


def minmax(cam, eps):
    cam = cam - cam.min()
    return cam / (cam.max() + eps)


def torchcam_fuse_layer_cam(cams):
    """TorchCAM: each cam `_normalize`d (eps 1e-8), LayerCAM's `_scale_cams`
    (tanh(2 cam)), `_fuse_cams` (bilinear to the largest, max)."""
    shape = tuple(max(c.shape[i] for c in cams) for i in range(2))
    scaled = [torch.tanh(2.0 * minmax(torch.tensor(c), 1e-8)) for c in cams]
    up = [F.interpolate(c[None, None], shape, mode="bilinear", align_corners=False)[0, 0] for c in scaled]
    return torch.stack(up).max(dim=0).values.numpy()


def score_cam(model, x, acts, cls, rest):
    """pytorch-grad-cam's ScoreCAM.get_cam_weights, then the weighted sum and
    ReLU; `rest` is unused: the masked images go through the whole model."""
    with torch.no_grad():
        upsample = torch.nn.UpsamplingBilinear2d(size=x.shape[-2:])
        upsampled = upsample(acts)
        maxs = upsampled.view(upsampled.size(0), upsampled.size(1), -1).max(dim=-1)[0]
        mins = upsampled.view(upsampled.size(0), upsampled.size(1), -1).min(dim=-1)[0]
        maxs, mins = maxs[:, :, None, None], mins[:, :, None, None]
        upsampled = (upsampled - mins) / (maxs - mins + 1e-8)
        input_tensors = x[:, None, :, :] * upsampled[:, :, None, :, :]
        scores = []
        for tensor in input_tensors:
            for i in range(0, tensor.size(0), 16):
                batch = tensor[i: i + 16, :]
                scores.extend([float(o[cls]) for o in model(batch)])
        scores = torch.tensor(scores).view(acts.shape[0], acts.shape[1])
        weights = torch.nn.Softmax(dim=-1)(scores).numpy()
    cam = (weights[:, :, None, None] * acts.numpy()).sum(axis=1)
    return np.maximum(cam, 0)[0]


def grad_cam_at_layer4(model, x, cls):
    acts = model.features(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.top(acts)[0, cls], acts)
    return gradient_maps(g.numpy(), acts.detach().numpy())["grad_cam"]


def aug_smooth_grad_cam(model, x, cls):
    """pytorch-grad-cam's forward_augmentation_smoothing for Grad-CAM with
    the target fixed to `cls`."""
    cams = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            xa = x * factor
            if flip:
                xa = torch.flip(xa, dims=[3])
            cam = minmax(torch.tensor(grad_cam_at_layer4(model, xa, cls)), 1e-7)
            if flip:
                cam = torch.flip(cam, dims=[1])
            cams.append(cam.numpy())
    return np.mean(np.float32(cams), axis=0)


NEIGHBORS = [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
             ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)]


def linear_impute(img, mask):
    """pytorch-grad-cam's NoisyLinearImputer (setup_sparse_system), the system
    dense and solved with numpy, noise 0. img (C, H, W), mask (H, W): 1 kept."""
    h, w = mask.shape
    maskflt = mask.flatten()
    imgflat = img.reshape((img.shape[0], -1))
    indices = np.argwhere(maskflt == 0).flatten()
    coords_to_vidx = np.zeros(len(maskflt), dtype=int)
    coords_to_vidx[indices] = np.arange(len(indices))
    n = len(indices)
    a = np.zeros((n, n))
    b = np.zeros((n, img.shape[0]))
    sum_neighbors = np.ones(n)
    for offset, weight in NEIGHBORS:
        c1 = indices % w + offset[1]
        c0 = indices // w + offset[0]
        valid = ~((c0 < 0) | (c1 < 0) | (c0 >= h) | (c1 >= w))
        new_coords = indices + offset[0] * w + offset[1]
        valid_coords = new_coords[valid]
        valid_ids = np.argwhere(valid == 1).flatten()
        has_values = maskflt[valid_coords] > 0.5
        b[valid_ids[has_values], :] -= weight * imgflat[:, valid_coords[has_values]].T
        a[valid_ids[~has_values], coords_to_vidx[valid_coords[~has_values]]] = weight
        sum_neighbors[np.argwhere(valid == 0).flatten()] -= weight
    a[np.arange(n), np.arange(n)] = -sum_neighbors
    res = np.linalg.solve(a, b)
    out = imgflat.copy()
    out[:, indices] = res.T
    return out.reshape(img.shape)


def blurred(x):
    taps = torch.exp(-torch.arange(-5, 6, dtype=torch.float64) ** 2 / 50.0)
    k = (taps / taps.sum()).float()
    kernel = (k[:, None] * k[None, :]).view(1, 1, 11, 11).repeat(3, 1, 1, 1)
    return F.conv2d(F.pad(x, (5, 5, 5, 5), mode="reflect"), kernel, groups=3)


def deletion_auc(model, x, up, cls, base):
    size = x.shape[-1]
    order = torch.argsort(up.flatten(), descending=True, stable=True)
    pixels = size * size
    probs = []
    for k in range(STEPS + 1):
        keep = torch.ones(pixels)
        keep[order[: k * pixels // STEPS]] = 0
        keep = keep.view(1, 1, size, size)
        probs.append(float(probability(model, x * keep + base * (1 - keep), cls)))
    return float(np.trapezoid(probs, dx=1.0 / STEPS))


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

        # Issue 19: layers, fusion, Score-CAM, aug_smooth, ROAD, baselines.
        acts3 = model.to_layer3(x).detach().requires_grad_(True)
        (g3,) = torch.autograd.grad(model.from_layer3(acts3)[0, cls], acts3)
        layer3 = gradient_maps(g3.numpy(), acts3.detach().numpy())
        for name, cam in layer3.items():
            out["layer3_" + name] = cam.flatten().tolist()
        fused = torchcam_fuse_layer_cam([layer3["layer_cam"], np.float32(out["layer_cam"]).reshape(a.shape[2:])])
        out["fused_layer_cam"] = fused.flatten().tolist()
        # Score-CAM is a pass per channel: the first image only, at layer4
        # behind one head and layer3 behind the other (512 or 256 passes).
        if path == paths[0] and head == "cam":
            out["score_cam"] = score_cam(model, x, acts.detach(), cls, None).flatten().tolist()
        elif path == paths[0]:
            out["layer3_score_cam"] = score_cam(model, x, acts3.detach(), cls, None).flatten().tolist()
        out["aug_grad_cam"] = aug_smooth_grad_cam(model, x, cls).flatten().tolist()
        threshold = np.percentile(up.numpy(), 80)
        keep = np.float32(up.numpy() < threshold)
        imputed = torch.tensor(linear_impute(x[0].double().numpy(), keep), dtype=torch.float32)[None]
        out["road"] = float(probability(model, imputed, cls)) - p
        black = ((torch.zeros(3, 1, 1) - MEAN) / STD).expand_as(x[0])[None]
        out["deletion_auc_black"] = deletion_auc(model, x, up, cls, black)
        base = blurred(x)
        pm_blur = float(probability(model, base + (x - base) * scaled, cls))
        out["average_drop_blur"] = max(0.0, p - pm_blur) / p
        results.append(out)
    with open(os.path.join(out_dir, head + ".json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
