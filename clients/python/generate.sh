#!/usr/bin/env bash
# Regenerates the SDK's generated code from the protos:
#   camshaft/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py   from proto/camshaft/v1/*.proto
#   camshaft/_vendor/google_rpc.binpb                from clients/python/proto/google/rpc/*.proto
# with the grpcio-tools pinned in requirements-dev.txt (the output depends on
# its version). scripts/test-python runs it into a temporary folder and fails
# when the committed files differ.
#
#   clients/python/generate.sh            # rewrite the committed files
#   clients/python/generate.sh OUT_DIR    # write them under OUT_DIR instead
#
# PYTHON picks the interpreter (default: the repository's .venv/bin/python).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
out="${1:-$here}"
# Absolute paths: protoc runs from the protos' folders below.
[[ "$python" == */* ]] && python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"
mkdir -p "$out" && out="$(cd "$out" && pwd)"

pin="$(grep -E '^grpcio-tools==' "$here/requirements-dev.txt" | cut -d= -f3)"
have="$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [[ "$have" != "$pin" ]]; then
  echo "generate.sh: needs grpcio-tools==$pin in $python (found: ${have:-none});" \
    "install it with: $python -m pip install grpcio-tools==$pin" >&2
  exit 1
fi

mkdir -p "$out/camshaft/v1" "$out/camshaft/_vendor"
rm -f "$out"/camshaft/v1/*_pb2.py "$out"/camshaft/v1/*_pb2.pyi "$out"/camshaft/v1/*_pb2_grpc.py
# protoc names each output after the proto's path under -I: camshaft/v1/x.proto
# becomes the module camshaft.v1.x_pb2, which is this package's.
(cd "$root/proto" && "$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  camshaft/v1/*.proto)
# google.rpc.Status and its details as a descriptor set, loaded into a
# private pool by camshaft/_status.py (generated _pb2 modules would register
# google/rpc/*.proto in protobuf's default pool, where googleapis-common-protos
# registers its own, fuller copies: importing both would fail).
(cd "$here/proto" && "$python" -m grpc_tools.protoc -I . \
  --include_imports --descriptor_set_out="$out/camshaft/_vendor/google_rpc.binpb" \
  google/rpc/status.proto google/rpc/error_details.proto)
