# obdlayout: `make demo` runs the main job on a built-in sample; `make test` runs lint, types and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# e2fsprogs: e2fsck/debugfs check images, mke2fs builds the demo's sample file system;
# skopeo: registry transport, and the tests check that it reads and copies what convert writes;
# docker-registry, htpasswd (apache2-utils), openssl: the registry tests run a real registry (HTTP, HTTPS, auth);
# mariadbd (mariadb-server): the cache tests run a real MariaDB for the fleet's shared index;
# fsck.erofs (erofs-utils): checks the EROFS images of --fstype erofs;
# gcc: builds the compiled modules (make compiled), with the Python headers checked for below.
SYSTEM_DEPS := e2fsck:e2fsprogs debugfs:e2fsprogs mke2fs:e2fsprogs skopeo:skopeo \
	docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl mariadbd:mariadb-server \
	fsck.erofs:erofs-utils gcc:gcc
HAS_HEADERS := import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))

.PHONY: demo test lint bench fuzz system-deps bytecode compiled clean

system-deps:
	@bash scripts/system-deps.sh $(SYSTEM_DEPS)
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || bash scripts/system-deps.sh __venv__:python3-venv
	@$(PYTHON) -c '$(HAS_HEADERS)' || bash scripts/system-deps.sh __headers__:python3-dev

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# An editable install gets no bytecode from pip, and where PYTHONDONTWRITEBYTECODE is set none is ever written:
# every run would compile the package from source first (0.3 s of each command here). Up-to-date files are skipped.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q obdlayout

# The hot modules compiled with mypyc from the same sources (scripts/compile.py; about 2.5 min, only when one of
# them changed). The package runs them only while their sources are the ones compiled (obdlayout/compiled.py).
compiled: system-deps $(STAMP)
	$(BIN)/python scripts/compile.py

lint: $(STAMP)
	$(BIN)/ruff check obdlayout tests bench fixtures scripts
	$(BIN)/ruff format --check obdlayout tests bench fixtures scripts
	$(BIN)/mypy

test: system-deps bytecode compiled lint
	$(BIN)/pytest -q

demo: system-deps bytecode compiled
	bash scripts/demo.sh $(BIN)/obdlayout $(BIN)/python

bench: system-deps bytecode compiled
	$(BIN)/python -m bench

# The parser fuzz targets (tests/test_fuzz.py) with thousands of examples each instead of make test's few dozen.
fuzz: system-deps bytecode compiled
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/test_fuzz.py --hypothesis-show-statistics

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache obdlayout/compiled.json
	find obdlayout -name '*.so' -delete
	find obdlayout -name __pycache__ -type d -prune -exec rm -rf {} +
