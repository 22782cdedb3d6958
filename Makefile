# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: install serve test compose-validator clean

install: $(STAMP)

# torch is pinned to the CPU build this machine keeps on disk; an unpinned torch pulls a multi-GB CUDA build.
# nvidia-pytriton only supplies the tritonserver binary, so its numpy<2 pin is skipped with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[server,test]'
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0
	touch $@

serve: install
	$(BIN)/bertserve serve --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: install compose-validator
	$(BIN)/python -m pytest

# docker-compose.yml is validated by Debian's docker-compose (no Docker engine needed).
compose-validator:
	@command -v docker-compose >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
	@command -v docker-compose >/dev/null || \
		echo "docker-compose is missing (install it as root): the compose file tests will be skipped"

clean:
	rm -rf $(VENV) .pytest_cache
