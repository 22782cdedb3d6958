#!/usr/bin/env bash
# Pack what perf/gpu.sh needs on a GPU machine that has PyTorch but no network and no Triton: the tritonserver
# of the installed nvidia-pytriton wheel (Python 3.12 stub only, xz), bertserve and the few wheels the machine
# lacks, and MiniLM's tokenizer files. Writes .gpu/ (git-ignored, about 52 MB). Run after `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STUB_PYTHON=${STUB_PYTHON:-3.12}  # the GPU machine's Python
out=${BUNDLE:-.gpu}
rm -rf "$out" && mkdir -p "$out/wheels" "$out/tokenizer"
site=$($PY -c 'import pathlib, importlib.util; print(pathlib.Path(importlib.util.find_spec("pytriton").submodule_search_locations[0]).parent)')

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/pytriton/tritonserver/bin" "$stage/pytriton/tritonserver/backends/python" \
         "$stage/pytriton/tritonserver/python_backend_stubs/$STUB_PYTHON"
touch "$stage/pytriton/__init__.py"
cp "$site/pytriton/tritonserver/bin/tritonserver" "$stage/pytriton/tritonserver/bin/"
cp "$site"/pytriton/tritonserver/backends/python/{libtriton_python.so,triton_python_backend_utils.py} \
   "$stage/pytriton/tritonserver/backends/python/"
cp "$site/pytriton/tritonserver/python_backend_stubs/$STUB_PYTHON/triton_python_backend_stub" \
   "$stage/pytriton/tritonserver/python_backend_stubs/$STUB_PYTHON/"
cp -r "$site/nvidia_pytriton.libs" "$stage/"
rm -f "$stage"/nvidia_pytriton.libs/libpython3-*  # the wheel's own Python, which the server does not use
echo "compressing tritonserver (a minute)"
tar -C "$stage" -cf - . | xz -9 -T0 > "$out/tritonserver.tar.xz"

# numpy 1 for the Python backend's string tensors; grpcio, protobuf and tritonclient for the SDK.
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$STUB_PYTHON" --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out/wheels" \
    numpy==1.26.4 grpcio==1.85.3 protobuf==6.33.6 tritonclient==2.73.0 python-rapidjson==1.20
$PY -m pip wheel -q --no-deps . -w "$out/wheels"
model=$($PY -c 'from bertserve.server import default_model_dir; print(default_model_dir())')
cp "$model"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$out/tokenizer/"
du -sh "$out"
