"""Explaining images: inputs of any usual kind encoded for the explainer,
batches split to fit its limits, and the results as numpy arrays and PIL
images.

What the explainer does to an image (so maps can be compared with a local
model): decode PNG/JPEG to 8-bit RGB, cut the largest centred square and
scale it (bilinear, antialiased) to the model's input size (or squish/pad, as
the model version records), scale to [0, 1], normalise. Maps are raw, at the
feature-map resolution (``input_size / 32`` for the ResNets), row-major.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from . import _names
from .errors import CamshaftError, InvalidArgument
from .v1 import explainer_pb2

ImageLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray, Any]
"""An image to explain: a path, the bytes of a PNG or JPEG, a PIL image, or
an array (HWC or HW; uint8, or floats in [0, 1]; anything with ``__array__``,
e.g. a CPU torch tensor; CHW with 1 or 3 channels is transposed). A 4-D array
passed as ``images`` is a batch of them."""

MAX_IMAGES_PER_REQUEST = 64
"""Most images the SDK puts in one ``ExplainRequest`` (the explainer's default
``max_images_per_request``)."""

MAX_BYTES_PER_REQUEST = 48 * 1024 * 1024
"""Most image bytes in one ``ExplainRequest``: well under the 64 MiB message
limit (``ctl explain``'s choice)."""

COMPUTE_UNITS_PER_REQUEST = 512
"""The explainer's default ``max_compute_units_per_request``: an image costs
``1 + top_k × F`` passes (F = 21 for deletion AUC, 2 for average drop), each
one unit up to 224² input pixels."""

_FAITHFULNESS_PASSES = {0: 0, 1: 21, 2: 2, 3: 3}
"""Forward passes per map of each FaithfulnessMetric (ROAD: the image, its
imputed copy and the imputation)."""

AUG_SMOOTH_PASSES = 6
"""``aug_smooth`` computes every map six times (pytorch-grad-cam's
flip × [0.9, 1, 1.1] augmentations)."""


def encode_image(image: ImageLike) -> tuple[bytes, str]:
    """The bytes to send for ``image`` and a default id for it (the file name
    of a path, else empty). Paths and bytes are sent as they are (the
    explainer decodes PNG and JPEG); PIL images and arrays are encoded as PNG."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return path.read_bytes(), path.name
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), ""
    if isinstance(image, Image.Image):
        return _png(image), ""
    if hasattr(image, "__array__") or isinstance(image, (list, tuple)):
        return _png(Image.fromarray(_as_uint8_hwc(image))), ""
    raise InvalidArgument(
        f"cannot explain a {type(image).__name__}: give a path, PNG/JPEG bytes, a PIL image or an array"
    )


def _png(image: Image.Image) -> bytes:
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _as_uint8_hwc(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # CHW → HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InvalidArgument(f"an image array must be HxW, HxWx3 or HxWx4, not {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8))
    if np.issubdtype(array.dtype, np.integer):
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise InvalidArgument("an integer image array must hold values in 0..255")
        return np.ascontiguousarray(array.astype(np.uint8))
    raise InvalidArgument(f"an image array of dtype {array.dtype} is not an image")


def images_per_request(top_k: int | None, faithfulness: int, aug_smooth: bool = False) -> int:
    """How many images fit one request by the explainer's default compute
    budget, for models up to 224 px (larger ones are split further when the
    explainer says so; Score-CAM's pass per channel is left to that)."""
    map_passes = AUG_SMOOTH_PASSES if aug_smooth else 1
    passes = map_passes + max(1, top_k or 1) * _FAITHFULNESS_PASSES.get(faithfulness, 21)
    return max(1, min(MAX_IMAGES_PER_REQUEST, COMPUTE_UNITS_PER_REQUEST // passes))


def plan_batches(sizes: Sequence[int], max_images: int, max_bytes: int = MAX_BYTES_PER_REQUEST) -> list[range]:
    """Contiguous batches of at most ``max_images`` images and ``max_bytes``
    bytes (an image larger than that goes alone, for the server to judge)."""
    max_images = max(1, max_images)
    batches: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i - start >= max_images or (i > start and total + size > max_bytes):
            batches.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches


def too_large_for_one_request(message: str) -> bool:
    """Whether an INVALID_ARGUMENT says the request was too large as a whole
    (so a smaller batch would pass): images, compute units or decoded bytes."""
    return any(
        key in message
        for key in (
            "max_compute_units_per_request",
            "max_decode_bytes_in_flight",
            "images in one request, over the limit",
            "max_images_per_request",
        )
    )


class ImageError(CamshaftError):
    """:meth:`Explanation.raise_for_error` of an image the explainer could not
    explain (:attr:`kind`: ``undecodable``, ``empty``, ``too_large``,
    ``target_out_of_range``, ``internal``)."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, eq=False)
class Explanation:
    """The explanation of one image, or why there is none (:attr:`error`).

    ``maps[i]`` is the raw map of class ``map_classes[i]``: ``maps[0]`` the
    target class (``target``, or the predicted one), then the most probable
    other classes (``top_k``). In Jupyter an explanation shows its overlay.
    """

    id: str
    error: str | None
    error_kind: str | None
    model_version: str
    class_names: list[str]
    probabilities: np.ndarray
    logits: np.ndarray
    predicted_class: int
    maps: list[np.ndarray]
    map_classes: list[int]
    faithfulness: list[float | None]
    upsampled_maps: list[np.ndarray]
    overlay_png: bytes = field(repr=False)
    proto: Any = field(default=None, repr=False)
    recipe: Recipe | None = None
    """What the explainer ran for this image's request (method, layers,
    precision, faithfulness baseline, smoothing)."""

    @property
    def ok(self) -> bool:
        """Whether the image was explained."""
        return self.error is None

    @property
    def predicted_label(self) -> str | None:
        """The predicted class's name (``None`` when the image has an error)."""
        if self.error is not None or not 0 <= self.predicted_class < len(self.class_names):
            return None
        return self.class_names[self.predicted_class]

    @property
    def probability(self) -> float | None:
        """The predicted class's probability."""
        if self.error is not None or not 0 <= self.predicted_class < len(self.probabilities):
            return None
        return float(self.probabilities[self.predicted_class])

    @property
    def overlay(self) -> Image.Image | None:
        """``maps[0]`` over the resized image as a PIL image (asked with
        ``overlay=True``; ``None`` otherwise)."""
        if not self.overlay_png:
            return None
        image = Image.open(io.BytesIO(self.overlay_png))
        image.load()
        return image

    def raise_for_error(self) -> Explanation:
        """Raises :class:`~camshaft.ImageError` when the image was not explained."""
        if self.error is not None:
            raise ImageError(f"image {self.id!r}: {self.error}", kind=self.error_kind)
        return self

    def _repr_png_(self) -> bytes | None:
        return self.overlay_png or None

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Explanation(id={self.id!r}, error={self.error!r})"
        return (
            f"Explanation(id={self.id!r}, predicted={self.predicted_label!r} "
            f"p={self.probability:.3f}, maps={[m.shape for m in self.maps]}, model={self.model_version!r})"
        )

    @classmethod
    def from_proto(cls, r: Any, model_version: str, recipe: Recipe | None = None) -> Explanation:
        def maps(ms: Any) -> list[np.ndarray]:
            return [np.asarray(m.values, dtype=np.float32).reshape(m.height, m.width) for m in ms]

        error = r.error or None
        return cls(
            id=r.id,
            error=error,
            error_kind=_names.short_name(_names.ImageErrorKind, r.error_kind) if error else None,
            model_version=model_version,
            class_names=list(r.class_names),
            probabilities=np.asarray(r.probabilities, dtype=np.float32),
            logits=np.asarray(r.logits, dtype=np.float32),
            predicted_class=int(r.predicted_class) if not error else -1,
            maps=maps(r.maps),
            map_classes=[int(m.class_index) for m in r.maps],
            faithfulness=[float(m.faithfulness) if m.HasField("faithfulness") else None for m in r.maps],
            upsampled_maps=maps(r.upsampled_maps),
            overlay_png=bytes(r.overlay_png),
            proto=r,
            recipe=recipe,
        )


@dataclass(frozen=True)
class Recipe:
    """What an explain request ran: the request's options resolved against
    the model (``ExplanationRecipe``)."""

    method: str
    """The method that ran (``cam``, ``grad_cam``, ``score_cam``, ...): never
    ``unspecified``, so a model whose head changed behind an alias shows."""
    target_layers: list[str]
    """The layers the maps were taken at (``["layer4"]`` by default)."""
    precision: str
    """The dtype the model's body ran in: ``fp32``, ``bf16`` or ``fp16``."""
    faithfulness_baseline: str | None
    """``mean``, ``black`` or ``blur`` when a score used one, else ``None``."""
    aug_smooth: bool
    """Whether the maps were augmentation-smoothed."""

    @classmethod
    def from_proto(cls, r: Any) -> Recipe:
        baseline = _names.short_name(_names.FaithfulnessBaseline, r.faithfulness_baseline)
        return cls(
            method=_names.short_name(_names.ExplainMethod, r.method),
            target_layers=list(r.target_layers),
            precision=r.precision,
            faithfulness_baseline=None if baseline == "unspecified" else baseline,
            aug_smooth=bool(r.aug_smooth),
        )


@dataclass
class ExplainOptions:
    """The per-request options of an explain call, as wire values."""

    model: str
    method: Any  # the enum value (an int)
    top_k: int | None
    overlay: bool
    colormap: Any  # the enum value (an int)
    alpha: float | None
    faithfulness: Any  # the enum value (an int)
    upsampled: bool
    target_layers: list[str] = field(default_factory=list)
    aug_smooth: bool = False
    baseline: Any = 0  # the FaithfulnessBaseline value (an int)

    @classmethod
    def parse(
        cls,
        model: str,
        method: str | int | None,
        top_k: int | None,
        overlay: bool,
        colormap: str | int | None,
        alpha: float | None,
        faithfulness: str | int | None,
        upsampled: bool,
        layers: str | Sequence[str] | None = None,
        aug_smooth: bool = False,
        baseline: str | int | None = None,
    ) -> ExplainOptions:
        if not isinstance(model, str) or not model:
            raise InvalidArgument("model must be a reference like 'pets', 'pets@prod' or 'pets:3'")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise InvalidArgument(f"alpha {alpha} is outside [0, 1]")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise InvalidArgument(f"top_k must be a non-negative integer, not {top_k!r}")
        if isinstance(layers, str):
            layers = [layers]
        target_layers = list(layers or [])
        if any(not isinstance(layer, str) or not layer for layer in target_layers):
            raise InvalidArgument(f"layers must be layer names like 'layer3', not {layers!r}")
        return cls(
            model=model,
            method=_names.parse_optional(_names.ExplainMethod, method),
            top_k=top_k,
            overlay=overlay,
            colormap=_names.parse_optional(_names.Colormap, colormap),
            alpha=alpha,
            faithfulness=_names.parse_optional(_names.FaithfulnessMetric, faithfulness),
            upsampled=upsampled,
            target_layers=target_layers,
            aug_smooth=bool(aug_smooth),
            baseline=_names.parse_optional(_names.FaithfulnessBaseline, baseline),
        )

    def request(self, images: list[Any], request_id: str = "") -> Any:
        req = explainer_pb2.ExplainRequest(
            model=self.model,
            images=images,
            method=self.method,
            return_overlay=self.overlay,
            colormap=self.colormap,
            return_upsampled_maps=self.upsampled,
            faithfulness=self.faithfulness,
            request_id=request_id,
            target_layers=self.target_layers,
            aug_smooth=self.aug_smooth,
            faithfulness_baseline=self.baseline,
        )
        if self.top_k is not None:
            req.top_k = self.top_k
        if self.alpha is not None:
            req.alpha = self.alpha
        return req


def image_inputs(
    images: ImageLike | Sequence[ImageLike],
    ids: Sequence[str] | None,
    targets: int | Sequence[int | None] | None,
) -> list[Any]:
    """The ``ImageInput`` messages of ``images`` (one image or a list), in order."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)  # a batch: N × H × W × C (or N × C × H × W)
    elif isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)):
        images = [images]
    images = list(images)
    if ids is not None and len(ids) != len(images):
        raise InvalidArgument(f"{len(ids)} ids for {len(images)} images")
    if isinstance(targets, (list, tuple)):
        if len(targets) != len(images):
            raise InvalidArgument(f"{len(targets)} targets for {len(images)} images")
        per_image: list[int | None] = list(targets)
    else:
        per_image = [targets] * len(images)  # type: ignore[list-item]
    inputs = []
    for i, image in enumerate(images):
        data, default_id = encode_image(image)
        message = explainer_pb2.ImageInput(id=ids[i] if ids is not None else (default_id or str(i)), data=data)
        if per_image[i] is not None:
            message.target_class = int(per_image[i])  # type: ignore[arg-type]
        inputs.append(message)
    return inputs
