# Airlock: the two commands that matter are `make demo` and `make test`. Both set everything up on
# a fresh machine (as root): Debian packages, the local cluster, images, the Helm release.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export AIRLOCK_CACHE ?= /var/cache/airlock
K8S_VERSION ?= v1.34.4
HELM_VERSION ?= v3.19.0
GRPCURL_VERSION ?= v1.9.4
BIN := $(AIRLOCK_CACHE)/k8s/$(K8S_VERSION)/bin
HELM := $(AIRLOCK_CACHE)/helm/$(HELM_VERSION)/bin/helm
export KUBECONFIG := /var/lib/airlock-cluster/pki/admin.kubeconfig
export PATH := $(BIN):$(AIRLOCK_CACHE)/grpcurl/$(GRPCURL_VERSION)/bin:$(HOME)/.cargo/bin:$(PATH)
NS := airlock-system
CRD_FILES := sandbox sandboxtemplate sandboxpool

.PHONY: help demo test unit lint crds cluster-up cluster-down install uninstall e2e e2b-sdks sdk-python sdk-stubs bench-e2b bench-scale readme-examples helm-lifecycle cluster-lifecycle bench tools

# The published e2b SDKs for e2e/tests/e2b_sdk.rs, cached by the pins' hash: Python (PyPI) in a
# venv, JavaScript (npm, package-lock.json) in a node_modules.
E2B_REQS := e2e/e2b/requirements.txt
export AIRLOCK_E2B_VENV ?= $(AIRLOCK_CACHE)/e2b/venv-$(shell sha256sum $(E2B_REQS) | cut -c1-12)
export AIRLOCK_E2B_JS ?= $(AIRLOCK_CACHE)/e2b/js-$(shell cat e2e/e2b/js/package.json e2e/e2b/js/package-lock.json | sha256sum | cut -c1-12)

# The Python SDK (sdk/python): its build and test tools from PyPI, pinned, in a venv cached by the
# pins' hash; e2e/tests/python_sdk.rs runs its cluster tests with this venv's python.
SDK_PY := sdk/python
export AIRLOCK_SDK_VENV ?= $(AIRLOCK_CACHE)/sdk-python/venv-$(shell sha256sum $(SDK_PY)/requirements-dev.txt | cut -c1-12)

help:
	@echo "make demo   - local cluster + operator + gateway, then run Python in a sandbox"
	@echo "make test   - unit tests, CRD/chart checks, and every cluster test"
	@echo "make bench  - benchmarks against the local cluster (report in bench/)"
	@echo "make bench-scale - 10,000 Sandboxes on 100 simulated nodes (report in bench/scale/)"
	@echo "make cluster-down - stop the local cluster and remove its state"

tools:
	@command -v protoc >/dev/null && command -v lua5.4 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler lua5.4 >/dev/null; }
	@e2e/lib/build-k8s.sh helm
	@e2e/lib/build-k8s.sh grpcurl

## crds: regenerate the CRD YAML from the Rust types (and the chart's copy)
crds:
	cargo build -q -p airlock-crds --bin crdgen
	for c in $(CRD_FILES); do cargo run -q -p airlock-crds --bin crdgen $$c.yaml > crds/$$c.yaml && cp crds/$$c.yaml charts/airlock/files/$$c-crd.yaml || exit 1; done

unit: tools
	@echo "==> unit tests (operator build steps, mock-API reconciles, gateway, agent, CRD drift)"
	cargo test --workspace --exclude airlock-e2e

lint: tools
	@echo "==> chart: CRD copy in sync, helm lint, schema"
	@for c in $(CRD_FILES); do cmp -s crds/$$c.yaml charts/airlock/files/$$c-crd.yaml || { echo "charts/airlock/files/$$c-crd.yaml differs from crds/$$c.yaml: run 'make crds'"; exit 1; }; done
	$(HELM) lint --strict charts/airlock
	$(HELM) lint --strict charts/airlock -f e2e/values-local.yaml
	HELM=$(HELM) e2e/tests/chart-render.sh

cluster-up: tools
	e2e/cluster up

cluster-down:
	e2e/cluster down

## install: build and import the images, then install (or upgrade) the chart into the local cluster
install: cluster-up
	@TAG=$$(e2e/lib/images.sh | sed -n 's/^TAG=//p'); \
	echo "==> helm upgrade --install airlock (images $$TAG)"; \
	for n in $(NS) airlock-demo; do kubectl create namespace $$n --dry-run=client -o yaml | kubectl apply -f - >/dev/null; done; \
	for c in $(CRD_FILES); do kubectl apply --server-side --force-conflicts --field-manager=helm -f crds/$$c.yaml >/dev/null || exit 1; done; \
	kubectl wait --for=condition=Established --timeout=60s crd/sandboxtemplates.airlock.dev crd/sandboxpools.airlock.dev >/dev/null; \
	for r in crd/sandboxes.airlock.dev crd/sandboxtemplates.airlock.dev crd/sandboxpools.airlock.dev priorityclass/airlock-sandbox; do \
	  kubectl get $$r >/dev/null 2>&1 || continue; \
	  kubectl label --overwrite $$r app.kubernetes.io/managed-by=Helm >/dev/null; \
	  kubectl annotate --overwrite $$r meta.helm.sh/release-name=airlock meta.helm.sh/release-namespace=$(NS) >/dev/null; \
	done; \
	$(HELM) template airlock charts/airlock -n $(NS) --kube-version $(K8S_VERSION) -f e2e/values-local.yaml $(INSTALL_SET) --set image.tag=$$TAG --set agentImage=airlock.local/agent:$$TAG \
	  | kubectl apply --dry-run=server -f - >/dev/null; \
	$(HELM) upgrade --install airlock charts/airlock -n $(NS) -f e2e/values-local.yaml $(INSTALL_SET) \
	  --set image.tag=$$TAG --set agentImage=airlock.local/agent:$$TAG --wait --timeout 180s \
	  || { kubectl -n $(NS) get pods -o wide; kubectl -n $(NS) logs deploy/airlock-operator --tail=40 || true; exit 1; }
	kubectl -n $(NS) rollout status deploy/airlock-operator --timeout=120s
	kubectl -n $(NS) rollout status deploy/airlock-exec-gateway --timeout=120s

uninstall:
	$(HELM) uninstall airlock -n $(NS) --wait

## e2b-sdks: the pinned e2b SDKs: PyPI into a venv (AIRLOCK_E2B_VENV), npm into AIRLOCK_E2B_JS
e2b-sdks:
	@if [ ! -f $(AIRLOCK_E2B_VENV)/.complete ]; then \
	  echo "==> the e2b SDK from PyPI ($(E2B_REQS)) into $(AIRLOCK_E2B_VENV)"; \
	  rm -rf $(AIRLOCK_E2B_VENV); python3 -m venv $(AIRLOCK_E2B_VENV); \
	  $(AIRLOCK_E2B_VENV)/bin/pip install -q --disable-pip-version-check -r $(E2B_REQS); \
	  touch $(AIRLOCK_E2B_VENV)/.complete; \
	fi
	@if [ ! -f $(AIRLOCK_E2B_JS)/.complete ]; then \
	  echo "==> the e2b SDK from npm (e2e/e2b/js/package-lock.json) into $(AIRLOCK_E2B_JS)"; \
	  rm -rf $(AIRLOCK_E2B_JS); mkdir -p $(AIRLOCK_E2B_JS); \
	  cp e2e/e2b/js/package.json e2e/e2b/js/package-lock.json $(AIRLOCK_E2B_JS)/; \
	  (cd $(AIRLOCK_E2B_JS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); \
	  touch $(AIRLOCK_E2B_JS)/.complete; \
	fi

## sdk-python: the Python SDK's stubs match proto/, its wheel builds and installs into a fresh venv,
## its unit tests pass (the wheel is then installed into AIRLOCK_SDK_VENV for the cluster tests)
sdk-python:
	@if [ ! -f $(AIRLOCK_SDK_VENV)/.complete ]; then \
	  echo "==> the Python SDK's tools from PyPI ($(SDK_PY)/requirements-dev.txt) into $(AIRLOCK_SDK_VENV)"; \
	  rm -rf $(AIRLOCK_SDK_VENV); python3 -m venv $(AIRLOCK_SDK_VENV); \
	  $(AIRLOCK_SDK_VENV)/bin/pip install -q --disable-pip-version-check -r $(SDK_PY)/requirements-dev.txt; \
	  touch $(AIRLOCK_SDK_VENV)/.complete; \
	fi
	@echo "==> Python SDK: the committed stubs match proto/"
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(AIRLOCK_SDK_VENV)/bin/python -m grpc_tools.protoc -I proto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp proto/airlock/v1/sandbox.proto; \
	for f in sandbox_pb2.py sandbox_pb2.pyi sandbox_pb2_grpc.py; do \
	  cmp -s $$tmp/airlock/v1/$$f $(SDK_PY)/src/airlock/v1/$$f || { echo "$(SDK_PY)/src/airlock/v1/$$f differs from proto/: run 'make sdk-stubs'"; exit 1; }; \
	done
	@echo "==> Python SDK: a wheel from the source tree, installed into a fresh venv"
	@rm -rf $(SDK_PY)/dist; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(AIRLOCK_SDK_VENV)/bin/pip wheel -q --disable-pip-version-check --no-deps -w $(SDK_PY)/dist ./$(SDK_PY); \
	python3 -m venv $$tmp/venv; $$tmp/venv/bin/pip install -q --disable-pip-version-check $(SDK_PY)/dist/*.whl; \
	cd $$tmp && $$tmp/venv/bin/python -c 'import airlock, airlock.aio, airlock.v1.sandbox_pb2_grpc; print("   installed", airlock.__version__, "from", airlock.__file__)'
	@$(AIRLOCK_SDK_VENV)/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall $(SDK_PY)/dist/*.whl
	@echo "==> Python SDK: types (mypy --strict) and unit tests"
	cd $(SDK_PY) && $(AIRLOCK_SDK_VENV)/bin/python -m mypy src/airlock
	cd $(SDK_PY) && $(AIRLOCK_SDK_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit

## sdk-stubs: regenerate the Python SDK's gRPC stubs from proto/
sdk-stubs:
	@test -f $(AIRLOCK_SDK_VENV)/.complete || $(MAKE) sdk-python
	$(AIRLOCK_SDK_VENV)/bin/python -m grpc_tools.protoc -I proto --python_out=$(SDK_PY)/src --pyi_out=$(SDK_PY)/src --grpc_python_out=$(SDK_PY)/src proto/airlock/v1/sandbox.proto

e2e: install e2b-sdks sdk-python
	@echo "==> cluster tests (real kube-apiserver, kubelet, containerd, gVisor)"
	cargo test -p airlock-e2e --no-fail-fast -- --test-threads=4
	@echo "==> the gateway's cluster tests again over pods/exec (the direct path's fallback; the two"
	@echo "    byte-exact bulk-output tests stay on the direct path: over pods/exec the API server can"
	@echo "    end an exec stream before its last bytes, see docs/DESIGN-NOTES.md)"
	AIRLOCK_E2E_AGENT_TRANSPORT=pods-exec cargo test -p airlock-e2e --test gateway -- --test-threads=4 \
	  --skip big_output_and_files_are_intact --skip fifty_concurrent_execs_are_byte_exact

## readme-examples: the README's marked examples, run as pasted (kubectl, grpcurl, the airlock CLI)
readme-examples: install
	@echo "==> README examples, as pasted"
	PATH="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug:$$PATH" e2e/tests/readme-examples.sh

## helm-lifecycle: release Ready; uninstall removes it and keeps the CRD and Sandboxes
helm-lifecycle:
	HELM=$(HELM) e2e/tests/helm-lifecycle.sh

## cluster-lifecycle: `down` leaves nothing behind, `up` works again, and `up` on a running
## cluster restarts only what is down (`e2e/tests/cluster-lifecycle.sh rerun` runs just that part)
cluster-lifecycle:
	e2e/tests/cluster-lifecycle.sh

test: unit lint sdk-python e2e readme-examples helm-lifecycle cluster-lifecycle
	@echo "==> all tests passed"

demo: install
	e2e/demo.sh

# The bench compares Sandboxes under runc (the floor) and parks some on an unschedulable class:
# its install allows both (the tests' install does not, so they can show runc is refused). The
# next `make install` / `make e2e` takes the allowance away again.
bench: INSTALL_SET = --set 'runtimeClass.allowed={runc,airlock-bench-unschedulable}'
bench: install
	e2e/bench/run.sh

## bench-scale: 10,000 Sandboxes on 100 simulated nodes (kwok), not part of make test (bench/scale/).
# Simulated pods run nothing, so no agent answers: the fence probe is off for this install, and its
# operator and gateway are release builds (what users run). The next `make install` puts back both.
SCALE_NODES ?= 100
bench-scale: INSTALL_SET = --set 'runtimeClass.allowed={runc,airlock-bench-unschedulable,kwok}' --set operator.fenceProbe=false
bench-scale: export AIRLOCK_PROFILE = release
bench-scale: install
	e2e/cluster kwok-up $(SCALE_NODES)
	rc=0; BENCH_ONLY=scale BENCH_OUT=$${BENCH_OUT:-bench/scale} e2e/bench/run.sh || rc=$$?; e2e/cluster kwok-down; exit $$rc

## bench-e2b: the e2b-compatible API through the published e2b SDK, beside gRPC and kubectl exec
bench-e2b: install e2b-sdks
	cargo build -q -p airlock-cli
	e2e/bench/e2b.sh
