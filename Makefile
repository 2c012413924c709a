# cxr-triage — convenience front end over CMake.
#   make            build into build/
#   make test       install missing Debian packages, build, run every test
#   make test-asan  the unit tests again under AddressSanitizer + UBSan (build-asan/)
#   make run        build if needed and run the main job on the embedded defaults
#   make bench      benchmarks (bench/)
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
ifeq ($(CXR_WERROR),1)
CMAKE_ARGS += -DCXR_WERROR=ON
endif

.PHONY: all deps configure build test test-asan run bench clean

all: build

deps:
	@packaging/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)

configure: $(BUILD)/CMakeCache.txt

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: deps
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCXR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS)
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

bench: build
	@for b in bench/*.sh; do echo "== $$b"; bash $$b || exit 1; done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
