from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLAIN_METHOD_UNSPECIFIED: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_CAM: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_GRAD_CAM: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_GRAD_CAM_PLUS_PLUS: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_XGRAD_CAM: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_LAYER_CAM: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_HIRES_CAM: _ClassVar[ExplainMethod]
    EXPLAIN_METHOD_SCORE_CAM: _ClassVar[ExplainMethod]

class Colormap(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLORMAP_UNSPECIFIED: _ClassVar[Colormap]
    COLORMAP_MAGMA: _ClassVar[Colormap]
    COLORMAP_VIRIDIS: _ClassVar[Colormap]
    COLORMAP_INFERNO: _ClassVar[Colormap]
    COLORMAP_JET: _ClassVar[Colormap]

class FaithfulnessMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAITHFULNESS_METRIC_UNSPECIFIED: _ClassVar[FaithfulnessMetric]
    FAITHFULNESS_METRIC_DELETION_AUC: _ClassVar[FaithfulnessMetric]
    FAITHFULNESS_METRIC_AVERAGE_DROP: _ClassVar[FaithfulnessMetric]
    FAITHFULNESS_METRIC_ROAD: _ClassVar[FaithfulnessMetric]

class FaithfulnessBaseline(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAITHFULNESS_BASELINE_UNSPECIFIED: _ClassVar[FaithfulnessBaseline]
    FAITHFULNESS_BASELINE_MEAN: _ClassVar[FaithfulnessBaseline]
    FAITHFULNESS_BASELINE_BLACK: _ClassVar[FaithfulnessBaseline]
    FAITHFULNESS_BASELINE_BLUR: _ClassVar[FaithfulnessBaseline]

class ImageErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ERROR_KIND_UNSPECIFIED: _ClassVar[ImageErrorKind]
    IMAGE_ERROR_KIND_UNDECODABLE: _ClassVar[ImageErrorKind]
    IMAGE_ERROR_KIND_EMPTY: _ClassVar[ImageErrorKind]
    IMAGE_ERROR_KIND_TOO_LARGE: _ClassVar[ImageErrorKind]
    IMAGE_ERROR_KIND_TARGET_OUT_OF_RANGE: _ClassVar[ImageErrorKind]
    IMAGE_ERROR_KIND_INTERNAL: _ClassVar[ImageErrorKind]
EXPLAIN_METHOD_UNSPECIFIED: ExplainMethod
EXPLAIN_METHOD_CAM: ExplainMethod
EXPLAIN_METHOD_GRAD_CAM: ExplainMethod
EXPLAIN_METHOD_GRAD_CAM_PLUS_PLUS: ExplainMethod
EXPLAIN_METHOD_XGRAD_CAM: ExplainMethod
EXPLAIN_METHOD_LAYER_CAM: ExplainMethod
EXPLAIN_METHOD_HIRES_CAM: ExplainMethod
EXPLAIN_METHOD_SCORE_CAM: ExplainMethod
COLORMAP_UNSPECIFIED: Colormap
COLORMAP_MAGMA: Colormap
COLORMAP_VIRIDIS: Colormap
COLORMAP_INFERNO: Colormap
COLORMAP_JET: Colormap
FAITHFULNESS_METRIC_UNSPECIFIED: FaithfulnessMetric
FAITHFULNESS_METRIC_DELETION_AUC: FaithfulnessMetric
FAITHFULNESS_METRIC_AVERAGE_DROP: FaithfulnessMetric
FAITHFULNESS_METRIC_ROAD: FaithfulnessMetric
FAITHFULNESS_BASELINE_UNSPECIFIED: FaithfulnessBaseline
FAITHFULNESS_BASELINE_MEAN: FaithfulnessBaseline
FAITHFULNESS_BASELINE_BLACK: FaithfulnessBaseline
FAITHFULNESS_BASELINE_BLUR: FaithfulnessBaseline
IMAGE_ERROR_KIND_UNSPECIFIED: ImageErrorKind
IMAGE_ERROR_KIND_UNDECODABLE: ImageErrorKind
IMAGE_ERROR_KIND_EMPTY: ImageErrorKind
IMAGE_ERROR_KIND_TOO_LARGE: ImageErrorKind
IMAGE_ERROR_KIND_TARGET_OUT_OF_RANGE: ImageErrorKind
IMAGE_ERROR_KIND_INTERNAL: ImageErrorKind

class ExplainRequest(_message.Message):
    __slots__ = ("model", "images", "method", "return_overlay", "top_k", "colormap", "alpha", "return_upsampled_maps", "faithfulness", "request_id", "target_layers", "aug_smooth", "faithfulness_baseline")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RETURN_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COLORMAP_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    RETURN_UPSAMPLED_MAPS_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_LAYERS_FIELD_NUMBER: _ClassVar[int]
    AUG_SMOOTH_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_BASELINE_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[ImageInput]
    method: ExplainMethod
    return_overlay: bool
    top_k: int
    colormap: Colormap
    alpha: float
    return_upsampled_maps: bool
    faithfulness: FaithfulnessMetric
    request_id: str
    target_layers: _containers.RepeatedScalarFieldContainer[str]
    aug_smooth: bool
    faithfulness_baseline: FaithfulnessBaseline
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ImageInput, _Mapping]]] = ..., method: _Optional[_Union[ExplainMethod, str]] = ..., return_overlay: bool = ..., top_k: _Optional[int] = ..., colormap: _Optional[_Union[Colormap, str]] = ..., alpha: _Optional[float] = ..., return_upsampled_maps: bool = ..., faithfulness: _Optional[_Union[FaithfulnessMetric, str]] = ..., request_id: _Optional[str] = ..., target_layers: _Optional[_Iterable[str]] = ..., aug_smooth: bool = ..., faithfulness_baseline: _Optional[_Union[FaithfulnessBaseline, str]] = ...) -> None: ...

class ExplanationRecipe(_message.Message):
    __slots__ = ("method", "target_layers", "precision", "faithfulness_baseline", "aug_smooth")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TARGET_LAYERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_BASELINE_FIELD_NUMBER: _ClassVar[int]
    AUG_SMOOTH_FIELD_NUMBER: _ClassVar[int]
    method: ExplainMethod
    target_layers: _containers.RepeatedScalarFieldContainer[str]
    precision: str
    faithfulness_baseline: FaithfulnessBaseline
    aug_smooth: bool
    def __init__(self, method: _Optional[_Union[ExplainMethod, str]] = ..., target_layers: _Optional[_Iterable[str]] = ..., precision: _Optional[str] = ..., faithfulness_baseline: _Optional[_Union[FaithfulnessBaseline, str]] = ..., aug_smooth: bool = ...) -> None: ...

class ImageInput(_message.Message):
    __slots__ = ("id", "data", "target_class")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    target_class: int
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ..., target_class: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model_version", "results", "request_id", "recipe")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    results: _containers.RepeatedCompositeFieldContainer[ImageExplanation]
    request_id: str
    recipe: ExplanationRecipe
    def __init__(self, model_version: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ImageExplanation, _Mapping]]] = ..., request_id: _Optional[str] = ..., recipe: _Optional[_Union[ExplanationRecipe, _Mapping]] = ...) -> None: ...

class ImageExplanation(_message.Message):
    __slots__ = ("id", "error", "class_names", "probabilities", "predicted_class", "maps", "overlay_png", "upsampled_maps", "logits", "error_kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    UPSAMPLED_MAPS_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    error: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    predicted_class: int
    maps: _containers.RepeatedCompositeFieldContainer[ClassMap]
    overlay_png: bytes
    upsampled_maps: _containers.RepeatedCompositeFieldContainer[ClassMap]
    logits: _containers.RepeatedScalarFieldContainer[float]
    error_kind: ImageErrorKind
    def __init__(self, id: _Optional[str] = ..., error: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., predicted_class: _Optional[int] = ..., maps: _Optional[_Iterable[_Union[ClassMap, _Mapping]]] = ..., overlay_png: _Optional[bytes] = ..., upsampled_maps: _Optional[_Iterable[_Union[ClassMap, _Mapping]]] = ..., logits: _Optional[_Iterable[float]] = ..., error_kind: _Optional[_Union[ImageErrorKind, str]] = ...) -> None: ...

class ClassMap(_message.Message):
    __slots__ = ("class_index", "height", "width", "values", "faithfulness")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FAITHFULNESS_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    height: int
    width: int
    values: _containers.RepeatedScalarFieldContainer[float]
    faithfulness: float
    def __init__(self, class_index: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ..., faithfulness: _Optional[float] = ...) -> None: ...
