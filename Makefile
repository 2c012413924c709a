# cxr-triage — convenience front end over CMake.
#   make            build into build/
#   make test       install missing Debian packages, build, run every test
#   make test-asan  the unit tests again under AddressSanitizer + UBSan (build-asan/)
#   make run        build if needed and run the main job on the embedded defaults
#   make bench      benchmarks (bench/)
#   make test-fresh make test in a freshly made Debian 12 root (.ci/fresh-root; root only)
#   make deb        the Debian packages (packaging/debian) into $(DEB_OUT)
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
ifeq ($(CXR_WERROR),1)
CMAKE_ARGS += -DCXR_WERROR=ON
endif

.PHONY: all deps configure build test test-asan test-fresh deb run bench clean

all: build

deps:
	@packaging/install-deps.sh

# $(call configure,DIR,ARGS): configure DIR with CMake. A build folder left by
# a failed or stale configure (a cache from before a package was installed, from
# another checkout path, from another generator) must not need a `make clean`:
# when CMake fails on an existing cache, the cache is dropped and configure runs
# once more from nothing. Cheap when nothing changed, so every target runs it.
define configure
	@cmake -S . -B $(1) $(2) || { \
	  [ -f $(1)/CMakeCache.txt ] || exit 1; \
	  echo "make: configure of $(1) failed on an existing cache; once more from an empty cache"; \
	  rm -rf $(1)/CMakeCache.txt $(1)/CMakeFiles; \
	  cmake -S . -B $(1) $(2); }
endef

configure:
	$(call configure,$(BUILD),$(CMAKE_ARGS))

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: deps
	$(call configure,$(BUILD),$(CMAKE_ARGS))
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	$(call configure,$(ASAN_BUILD),-DCXR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS))
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -LE integration

# make run: the DICOM node (`cxr-triage serve`) on the embedded defaults:
# conf/cxr-triage.xml (AE CXRTRIAGE on 127.0.0.1:11112, worklist and metrics
# on http://127.0.0.1:8090/) with the bundled model; the spool goes to
# $(BUILD)/spool instead of /var/lib (no root needed). Should the bundled
# model be missing (a trimmed checkout), an UNTRAINED placeholder is made in
# $(BUILD) and used, with a loud warning: its scores are meaningless. Ctrl-C
# stops the node cleanly.
RUN_MODEL       ?= models/cxr-default.safetensors
RUN_PLACEHOLDER ?= $(BUILD)/untrained-placeholder.safetensors
RUN_SPOOL       ?= $(BUILD)/spool
run: deps build
	@model=$(RUN_MODEL); \
	if [ ! -f "$$model" ]; then \
	  model=$(RUN_PLACEHOLDER); \
	  echo "*****************************************************************************"; \
	  echo "** WARNING: $(RUN_MODEL) is missing."; \
	  echo "** Using an UNTRAINED placeholder: $$model"; \
	  echo "** Its scores, priorities and SRs are MEANINGLESS: try the plumbing only."; \
	  echo "*****************************************************************************"; \
	  [ -f "$$model" ] || $(BUILD)/cxr-triage model init --arch resnet50 --seed 1 \
	      --name "UNTRAINED-placeholder" --out "$$model" || exit 1; \
	fi; \
	echo "starting: $(BUILD)/cxr-triage serve --config conf/cxr-triage.xml --model $$model --spool $(RUN_SPOOL)"; \
	exec $(BUILD)/cxr-triage serve --config conf/cxr-triage.xml --model "$$model" --spool $(RUN_SPOOL)

# make test-fresh: what CI does first: `make test` in a freshly made Debian 12
# root (mmdebstrap; needs root on the host). Tests the last commit, not
# uncommitted changes. See .ci/fresh-root.
test-fresh:
	.ci/fresh-root -- make test

# make deb: the Debian packages cxr-triage and orthanc-cxr-triage into
# $(DEB_OUT) (packaging/build-deb.sh; DEB_VERSION=V builds them as version V).
DEB_OUT ?= build-deb
deb: deps
	packaging/build-deb.sh $(DEB_OUT)

bench: build
	@for b in bench/*.sh; do echo "== $$b"; bash $$b || exit 1; done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(DEB_OUT)
