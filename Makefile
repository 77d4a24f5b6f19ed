# Thin wrapper: the real work is in CMake and deploy/local/.
#   make run    install deps, build Release, run the whole local stack (Ctrl-C stops)
#   make test   install deps, build with ASan+UBSan, run unit + integration tests
#   make bench  benchmarks: queue round trip, file API, session lifecycle, terminals, sync, web IDE (print figures;
#               never fail on timing)
RELEASE_DIR ?= build/release
TEST_DIR    ?= build/asan
JOBS        ?= $(shell nproc)
PYTEST      ?= /usr/bin/python3 -m pytest
# 1: make test also builds the docker-compose stack in its own dockerd and
# checks every role comes up (tests/integration/test_compose.py, ~2-4 min).
TEST_DOCKER ?= 1
# npm packages of the /docs page and the OpenAPI validator (gateway/docs):
# installed when missing or older than the lockfile; a failure (offline)
# leaves /docs answering 503 and the build going on.
DOCS_NPM = [ gateway/docs/node_modules/.package-lock.json -nt gateway/docs/package-lock.json ] \
  || (cd gateway/docs && npm ci --no-audit --no-fund --ignore-scripts) \
  || echo "make: npm ci in gateway/docs failed; /docs stays unavailable" >&2
# The web IDE (gateway/web): npm ci when node_modules is older than the
# lockfile, then `node build.mjs` when a source, build.mjs, tsconfig.json or
# the lockfile is newer than dist/index.html (or there is no dist). A failure
# leaves the gateway answering 503 on / and the build going on.
WEB_SRC = gateway/web/src gateway/web/build.mjs gateway/web/tsconfig.json \
  gateway/web/package-lock.json
WEB_NPM = { [ gateway/web/node_modules/.package-lock.json -nt gateway/web/package-lock.json ] \
    || (cd gateway/web && npm ci --no-audit --no-fund --ignore-scripts); } \
  && { [ -f gateway/web/dist/index.html ] \
    && [ -z "$$(find $(WEB_SRC) -newer gateway/web/dist/index.html 2>/dev/null | head -n 1)" ] \
    || (cd gateway/web && node build.mjs); } \
  || echo "make: building the web IDE in gateway/web failed (npm ci, node build.mjs);" \
       "the gateway answers 503 on / until it is built" >&2

.PHONY: all deps build build-test run test unit integration bench format lint clean

all: build

deps:
	@deploy/local/install-deps
	@$(DOCS_NPM)
	@$(WEB_NPM)

build: deps
	cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=Release -DATELIER_TESTS=OFF >/dev/null
	cmake --build $(RELEASE_DIR) -j$(JOBS)

build-test:
	@deploy/local/install-deps --browser $(if $(filter 1,$(TEST_DOCKER)),--docker)
	@$(DOCS_NPM)
	@$(WEB_NPM)
	cmake -S . -B $(TEST_DIR) -DCMAKE_BUILD_TYPE=Debug -DATELIER_SANITIZE=ON >/dev/null
	cmake --build $(TEST_DIR) -j$(JOBS)

run: build
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) deploy/local/atelier run

test: build-test
	$(MAKE) --no-print-directory unit integration

unit:
	cd $(TEST_DIR) && ctest --output-on-failure
	cd gateway/web && npx --no-install tsc --noEmit -p .

integration:
	ATELIER_BIN_DIR=$(abspath $(TEST_DIR)) ATELIER_TEST_DOCKER=$(TEST_DOCKER) \
	  $(PYTEST) -q -rs -p no:cacheprovider tests/integration

bench: build
	deploy/local/install-deps --bench --browser
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) tests/bench/queue/run
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) tests/bench/files/run
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) tests/bench/lifecycle/run
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) tests/bench/terminal/run
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) tests/bench/sync/run
	ATELIER_BIN_DIR=$(abspath $(RELEASE_DIR)) tests/bench/web/run
	tests/bench/hops/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

lint:
	cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 \
	  --suppress=missingIncludeSystem -I shared/include shared gateway session-manager \
	  sync-worker backup-worker

clean:
	rm -rf build
