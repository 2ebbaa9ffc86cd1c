"""Model weights for ``ImportModel``: what the registry stores is safetensors,
so everything else is converted here, in pure Python (no torch needed).

- ``.safetensors`` bytes are uploaded as they are (DDP's ``module.`` prefix
  stripped from the names, as ``ctl`` does);
- a PyTorch state dict saved by ``torch.save`` (``.pth``/``.pt``: a zip
  archive; told apart from safetensors by its first bytes, whatever the file
  is called) is read by a restricted unpickler that knows only the globals a
  state dict uses (``collections.OrderedDict``, ``torch._utils._rebuild_*``,
  the ``torch.*Storage`` classes) and calls nothing else, as ``ctl``'s
  ``camshaft-pth`` reader does, and re-saved as safetensors;
- a dict of arrays (numpy arrays, or torch tensors: ``model.state_dict()``)
  is saved as safetensors.

Conversions keep float32, float16 and bfloat16 tensors as they are, turn
float64 into float32 (the registry takes F32, F16 and BF16) and drop
BatchNorm's ``num_batches_tracked`` counters (loading ignores them), so the
upload holds what ``ctl models import`` would upload. Names and shapes are
checked by the coordinator against the model spec (INVALID_ARGUMENT listing
the offending keys).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgument

# safetensors dtype → (numpy dtype of the raw elements, bytes per element).
_NUMPY_OF: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # numpy has no bfloat16: the raw 16 bits
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}

# torch storage classes → safetensors dtype.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "F32",
    "DoubleStorage": "F64",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}


class RawTensor:
    """A tensor read from a file: its safetensors dtype and its elements as a
    numpy array (``uint16`` holding the bits of a bfloat16)."""

    __slots__ = ("dtype", "array")

    def __init__(self, dtype: str, array: np.ndarray) -> None:
        self.dtype = dtype
        self.array = array

    def __repr__(self) -> str:
        return f"RawTensor({self.dtype}, {list(self.array.shape)})"


def sniff(data: bytes) -> str:
    """``"safetensors"``, ``"zip"`` (torch.save) or ``"unknown"``, from the first bytes."""
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    if len(data) >= 9 and data[8:9] == b"{":
        (header,) = struct.unpack("<Q", data[:8])
        if 2 <= header <= len(data) - 8:
            return "safetensors"
    return "unknown"


# ───────────────────────────── torch.save archives ─────────────────────────────


class _StorageClass:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _Storage:
    def __init__(self, dtype: str, data: np.ndarray) -> None:
        self.dtype = dtype
        self.data = data


def _rebuild_tensor_v2(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> RawTensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    size, stride = tuple(size), tuple(stride)
    if not size:  # a scalar
        if not 0 <= offset < storage.data.size:
            raise pickle.UnpicklingError("a tensor reaches past its storage")
        return RawTensor(storage.dtype, storage.data[offset : offset + 1].reshape(()).copy())
    count = int(np.prod(size))
    if count == 0:
        return RawTensor(storage.dtype, np.zeros(size, dtype=storage.data.dtype))
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if offset < 0 or any(st < 0 for st in stride) or last >= storage.data.size:
        raise pickle.UnpicklingError("a tensor reaches past its storage")
    item = storage.data.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.data[offset:],
        shape=tuple(size),
        strides=tuple(st * item for st in stride),
        writeable=False,
    )
    return RawTensor(storage.dtype, np.ascontiguousarray(view))


def _rebuild_parameter(data: RawTensor, *_: Any) -> RawTensor:
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Runs a state dict's pickle knowing only the globals a state dict uses."""

    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageClass(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"the file refers to {module}.{name}, which a state dict does not use; "
            "save model.state_dict() (tensors only) with torch.save"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.60}")
        storage_class, key = pid[1], str(pid[2])
        if not isinstance(storage_class, _StorageClass):
            raise pickle.UnpicklingError("a storage of an unknown type")
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._prefix}/data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from None
            dtype = np.dtype(_NUMPY_OF[storage_class.dtype])
            usable = len(raw) - len(raw) % dtype.itemsize
            self._storages[key] = _Storage(storage_class.dtype, np.frombuffer(raw[:usable], dtype=dtype))
        return self._storages[key]


def _flatten(value: Any, prefix: str, out: dict[str, RawTensor]) -> None:
    if isinstance(value, RawTensor):
        out[prefix] = value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    # Anything else (an epoch number, optimizer settings) is not a tensor: skipped.


def read_torch_state_dict(data: bytes, source: str = "weights") -> dict[str, RawTensor]:
    """The tensors of a ``torch.save`` zip archive, in file order; a nested
    dict (``{"model": state_dict}``) is flattened with dotted keys."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise InvalidArgument(f"{source}: not a torch.save zip archive: {e}") from None
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise InvalidArgument(f"{source}: not a torch.save archive (no <name>/data.pkl)")
    prefix = pickles[0].split("/", 1)[0]
    try:
        byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
    except KeyError:
        byteorder = "little"
    if byteorder != "little":
        raise InvalidArgument(f"{source}: saved on a {byteorder}-endian machine; only little-endian is read")
    unpickler = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix)
    try:
        obj = unpickler.load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as e:
        raise InvalidArgument(f"{source}: cannot read the state dict: {e}") from None
    tensors: dict[str, RawTensor] = {}
    _flatten(obj, "", tensors)
    if not tensors:
        raise InvalidArgument(f"{source}: holds no tensors")
    return tensors


# ───────────────────────────── safetensors ─────────────────────────────


def _header(data: bytes, source: str) -> tuple[dict[str, Any], int]:
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise InvalidArgument(f"{source}: truncated safetensors header")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidArgument(f"{source}: bad safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise InvalidArgument(f"{source}: bad safetensors header")
    return header, 8 + length


def _encode_header(header: dict[str, Any]) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def read_safetensors(data: bytes, source: str = "weights") -> dict[str, RawTensor]:
    """The tensors of a safetensors file (for inspecting or converting)."""
    header, start = _header(data, source)
    out: dict[str, RawTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = np.dtype(_NUMPY_OF[info["dtype"]])
        array = np.frombuffer(data[start + begin : start + end], dtype=dtype).reshape(info["shape"])
        out[name] = RawTensor(info["dtype"], array)
    return out


def write_safetensors(tensors: Mapping[str, RawTensor]) -> bytes:
    """``tensors`` as a safetensors file, in the given order."""
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        raw = np.ascontiguousarray(tensor.array).tobytes()
        header[name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    return _encode_header(header) + b"".join(chunks)


def _strip_module_prefix(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def _for_registry(tensors: Mapping[str, RawTensor]) -> dict[str, RawTensor]:
    out: dict[str, RawTensor] = {}
    for name, tensor in tensors.items():
        name = _strip_module_prefix(name)
        if name.endswith("num_batches_tracked"):
            continue
        if tensor.dtype == "F64":
            tensor = RawTensor("F32", tensor.array.astype("<f4"))
        out[name] = tensor
    return out


def _array_of(name: str, value: Any) -> RawTensor:
    if isinstance(value, RawTensor):
        return value
    module = type(value).__module__ or ""
    if module.startswith("torch") and hasattr(value, "detach"):
        t = value.detach().cpu().contiguous()
        if str(t.dtype) == "torch.bfloat16":
            import torch  # only reached with a torch tensor in hand

            return RawTensor("BF16", t.view(torch.int16).numpy().view("<u2"))
        value = t.numpy()
    array = np.asarray(value)
    kinds = {
        "f8": "F64",
        "f4": "F32",
        "f2": "F16",
        "i8": "I64",
        "i4": "I32",
        "i2": "I16",
        "i1": "I8",
        "u1": "U8",
        "b1": "BOOL",
    }
    key = f"{array.dtype.kind}{array.dtype.itemsize}"
    if key not in kinds:
        raise InvalidArgument(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold here")
    return RawTensor(kinds[key], array.astype(array.dtype.newbyteorder("<"), copy=False))


def to_safetensors(weights: str | os.PathLike[str] | bytes | Mapping[str, Any]) -> tuple[bytes, str]:
    """The bytes to upload for ``weights`` (a path, the file's bytes, or a dict
    of arrays), and the file name to record (empty when there is none)."""
    file_name = ""
    if isinstance(weights, Mapping):
        tensors = {str(k): _array_of(str(k), v) for k, v in weights.items()}
        return write_safetensors(_for_registry(tensors)), file_name
    if isinstance(weights, (bytes, bytearray, memoryview)):
        data = bytes(weights)
        source = "weights"
    else:
        path = Path(weights)
        file_name = path.name
        source = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InvalidArgument(f"cannot read the weights file {path}: {e}") from None
    kind = sniff(data)
    if kind == "safetensors":
        header, start = _header(data, source)
        renamed = {_strip_module_prefix(k): v for k, v in header.items()}
        if len(renamed) != len(header):
            raise InvalidArgument(f"{source}: names clash once the module. prefix is stripped")
        if renamed == header:
            return data, file_name
        return _encode_header(renamed) + data[start:], file_name
    if kind == "zip":
        return write_safetensors(_for_registry(read_torch_state_dict(data, source))), file_name
    raise InvalidArgument(
        f"{source}: neither safetensors nor a torch.save zip archive; give a .safetensors file "
        "or a PyTorch state dict saved by torch.save (PyTorch 1.6 or later)"
    )
