# obdlayout: `make demo` runs the main job on a built-in sample; `make test` runs lint, types and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# e2fsprogs: e2fsck/debugfs check images, mke2fs builds the demo's sample file system;
# skopeo: registry transport, and the tests check that it reads and copies what convert writes;
# docker-registry, htpasswd (apache2-utils), openssl: the registry tests run a real registry (HTTP, HTTPS, auth);
# mariadbd (mariadb-server): the cache tests run a real MariaDB for the fleet's shared index;
# fsck.erofs (erofs-utils): checks the EROFS images of --fstype erofs.
SYSTEM_DEPS := e2fsck:e2fsprogs debugfs:e2fsprogs mke2fs:e2fsprogs skopeo:skopeo \
	docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl mariadbd:mariadb-server \
	fsck.erofs:erofs-utils

.PHONY: demo test lint bench fuzz system-deps clean

system-deps:
	@bash scripts/system-deps.sh $(SYSTEM_DEPS)
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || bash scripts/system-deps.sh __venv__:python3-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check obdlayout tests bench fixtures
	$(BIN)/ruff format --check obdlayout tests bench fixtures
	$(BIN)/mypy

test: system-deps $(STAMP) lint
	$(BIN)/pytest -q

demo: system-deps $(STAMP)
	bash scripts/demo.sh $(BIN)/obdlayout $(BIN)/python

bench: system-deps $(STAMP)
	$(BIN)/python -m bench

# The parser fuzz targets (tests/test_fuzz.py) with thousands of examples each instead of make test's few dozen.
fuzz: system-deps $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/test_fuzz.py --hypothesis-show-statistics

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
