# `make demo` and `make test` are the two commands a user needs; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= .demo

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.PHONY: setup browser demo pictures test docker-test lint docs clean

setup: $(STAMP) browser

# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads a browser).
browser:
	if [ ! -x /usr/bin/chromium ]; then
	  if [ "$$(id -u)" = 0 ]; then
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
	  else
	    echo "note: /usr/bin/chromium is missing; the browser tests need it: sudo apt-get install chromium"
	  fi
	fi

# Re-installs only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	touch $(STAMP)

# Act 1, the whole path on real bundled photos and the real offline teacher (EfficientNet-Lite0):
# demo data -> teacher store -> service (dashboard) -> stored views as pictures.
# Act 2, distillation shown working on real MNIST digits (distill demo-mnist): a teacher, a store
# from it, a student trained only from the store through the service, the same student with the
# teacher online, and one table of held-out top-1 and wall time.
demo: $(STAMP)
	@export HF_HUB_OFFLINE=1
	D=$(DEMO_DIR)
	echo "== 1/6 demo data: real photos bundled in scikit-image/scikit-learn -> $$D/images"
	$(BIN)/distill demo-data $$D/images
	echo "== 2/6 teacher store: efficientnet_lite0 on 8 augmented views per photo, top-10 -> $$D/stores/demo"
	$(BIN)/distill generate --data $$D/images --out $$D/stores/demo --views 8 --topk 10 \
	  --img-size 160 --batch-size 16 --workers 1 --overwrite --quiet
	echo "== 3/6 store summary"
	$(BIN)/distill info $$D/stores/demo
	PORT=$$($(BIN)/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	URL=http://127.0.0.1:$$PORT/v1/stores/demo
	echo "== 4/6 service: distill serve --root $$D/stores --data demo=$$D/images on 127.0.0.1:$$PORT"
	$(BIN)/distill serve --root $$D/stores --data demo=$$D/images --port $$PORT > $$D/serve.log 2>&1 &
	SERVER=$$!
	trap 'kill $$SERVER 2>/dev/null; wait $$SERVER 2>/dev/null || true' EXIT
	for _ in $$(seq 150); do
	  $(BIN)/python -c "import urllib.request as u; u.urlopen('$$URL'.rsplit('/v1', 1)[0] + '/readyz')" 2>/dev/null && break
	  kill -0 $$SERVER 2>/dev/null || { cat $$D/serve.log; exit 1; }
	  sleep 0.2
	done
	echo "serving $$URL"
	echo "dashboard (until the demo ends): http://127.0.0.1:$$PORT/"
	$(BIN)/python -c "import numpy as np; from teacher_store.client import StoreClient; \
	  c = StoreClient('$$URL'); b = c.read_block(0, 0, 4); names = c.attrs.teacher['class_names']; \
	  print('client fetched view slot 0, samples 0-3; teacher top-1:', \
	        [(names[i], round(float(p), 3)) for i, p in zip(b.ids[:, 0], np.exp(b.logprobs()[:, 0]))])"
	echo "== 5/6 two stored views replayed beside the teacher's top-5 (distill show)"
	mkdir -p $$D/show
	$(BIN)/distill show $$D/stores/demo --data $$D/images --sample 0 --view 0 --out $$D/show/sample0-view0.png
	$(BIN)/distill show $$D/stores/demo --data $$D/images --sample 9 --view 5 --out $$D/show/sample9-view5.png
	echo "pictures: $$(realpath $$D/show/sample0-view0.png) $$(realpath $$D/show/sample9-view5.png)"
	echo "(act 1, the photos: $$SECONDS s)"
	echo "== 6/6 distillation on real MNIST digits: teacher, store, service, students (distill demo-mnist)"
	$(BIN)/distill demo-mnist --out $$D/mnist

# The documentation's pictures from the demo's default store (prob-u8, top-10, as `make demo`
# makes it): the dashboard's pages (Playwright + /usr/bin/chromium) and two `distill show` views.
pictures: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python bench/pictures.py --out docs/images --work $(DEMO_DIR)/pictures

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# compose.yaml for real: builds both images in a Docker engine of its own, brings the stack up
# and checks what it serves (docker/stack_test.py; root only, skipped with one line otherwise).
docker-test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python docker/stack_test.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link, a missing
# page or an unresolved API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy teacher_store api student models

clean:
	rm -rf $(VENV) $(DEMO_DIR) site
