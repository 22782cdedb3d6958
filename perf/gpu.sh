#!/usr/bin/env bash
# On a CUDA machine with PyTorch (Python 3.12), from the repository root, with .gpu/ from perf/gpu_bundle.sh
# install the bundle into /tmp and run `python -m perf.gpu`. Results go to $OUT (or ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
rm -rf /tmp/bertserve-site /tmp/bertserve-numpy1 /tmp/bertserve-gpu
bundle=${BUNDLE:-.gpu} site=/tmp/bertserve-site numpy1=/tmp/bertserve-numpy1
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" \
    $bundle/wheels/bertserve-*.whl $bundle/wheels/tritonclient-*.whl $bundle/wheels/grpcio-*.whl $bundle/wheels/protobuf-*.whl $bundle/wheels/python_rapidjson-*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target "$numpy1" $bundle/wheels/numpy-1*.whl || exit 1
tar -C "$site" -xJf $bundle/tritonserver.tar.xz || exit 1
# The backend stub embeds Python through libpython3.X.so.1.0.
version=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
libdir=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
libpython=$(find "$libdir" /usr/lib /usr/local/lib /opt -name "libpython$version*.so.1.0" 2>/dev/null | head -1)
if [ -n "$libpython" ]; then
    export LD_LIBRARY_PATH="$(dirname "$libpython")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    echo "no libpython$version.so.1.0 here: the Python backend cannot start; in-process figures only" | tee "$out/warning.txt"
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The backend stub ignores PYTHONPATH; it reads the site-packages of the python3 first on PATH. A .pth file
# there puts the folders in BERTSERVE_STUB_PATH first on its path (and does nothing where that is unset).
purelib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo 'import os, sys; sys.path[0:0] = [p for p in os.environ.get("BERTSERVE_STUB_PATH", "").split(":") if p]' \
    > "$purelib/bertserve-stub-path.pth"
{ nvidia-smi; python3 -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)'; } 2>&1 | tee "$out/machine.txt"
python3 -m perf.gpu --out "$out" --work /tmp/bertserve-gpu --tokenizer $bundle/tokenizer --serve-pythonpath "$numpy1" "$@" \
    2>&1 | tee "$out/log.txt"
