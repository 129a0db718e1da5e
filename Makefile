# coframe: build, test and install. GNU make.
#
#   make            build the library (target/release/libcoframe.{so,a})
#   make demo       install system packages if needed, build, run the c-examples, cpp-examples, Zig and Python demos
#   make test       everything CI runs (.ci/run is `make test`)
#   make install    PREFIX=/usr/local DESTDIR= LIBDIR=$(PREFIX)/lib INCLUDEDIR=$(PREFIX)/include MANDIR=$(PREFIX)/share/man
#   make docs       the API reference: man pages and HTML in target/docs
#   make help       the full list
#
# docs/BUILD.md explains each target and the variables.

CARGO      ?= cargo
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
DESTDIR    ?=

# Loom explores every interleaving up to this many preemptions.
LOOM_MAX_PREEMPTIONS ?= 3
export LOOM_MAX_PREEMPTIONS

RELEASE_DIR := target/release
SONAME_MAJOR = $(shell sh scripts/version.sh major)

# The steps of `make test`, in order. Those before ':' must pass for the
# rest to run; after ':' every step runs and the summary counts them.
TEST_STEPS := deps build : lint test-rust test-loom test-ports test-drift test-abi test-ffi test-examples test-zig test-install test-cinstall test-deb test-docs

.DEFAULT_GOAL := build
# Prerequisites run left to right (deps before build); cargo and the
# sub-makes parallelise on their own.
.NOTPARALLEL:
.PHONY: build build-tsan build-asan deps demo test lint fmt clippy test-rust \
        test-loom test-ports test-drift test-abi abi-baseline test-ffi test-examples test-zig \
        test-install test-deb test-docs test-cinstall deb install docs bench fuzz clean help

## build: cargo build --release, then libcoframe.so linked from libcoframe.a with the symbol versions (scripts/link-so.sh)
build:
	$(CARGO) build --release
	@sh scripts/link-so.sh $(RELEASE_DIR)
	@echo "built $(RELEASE_DIR)/libcoframe.so (soname libcoframe.so.$(SONAME_MAJOR)) and $(RELEASE_DIR)/libcoframe.a"

## build-tsan: the ThreadSanitizer library (feature tsan) in target/tsan/release; docs/SANITIZERS.md
build-tsan:
	$(CARGO) build --release --features tsan --target-dir target/tsan
	@sh scripts/link-so.sh target/tsan/release

## build-asan: the AddressSanitizer library (feature asan) in target/asan/release
build-asan:
	$(CARGO) build --release --features asan --target-dir target/asan
	@sh scripts/link-so.sh target/asan/release

## deps: check for (as root: apt-get install) gcc, g++, valgrind, sanitizer runtimes...
deps:
	@sh scripts/deps.sh

## demo: deps, build, then the c-examples demo, the cpp-examples demo (C++20 tasks), the Zig example and the Python (ctypes) example
demo: deps build
	$(MAKE) -C c-examples demo
	@echo
	@echo "=================================================================="
	$(MAKE) -C cpp-examples demo
	@echo
	@echo "=================================================================="
	@echo "zig build demo: zig/examples/pipeline.zig, with the Zig scripts/zig.sh pins"
	@zig=$$(sh scripts/zig.sh) && $$zig build demo --summary none
	@echo
	@echo "=================================================================="
	$(MAKE) -C python-examples demo

## test: deps, build, lint, Rust tests, loom, header drift, ffi-tests, c-examples, cpp-examples, python-examples, Zig package, install, Debian packages, docs
test:
	@MAKE="$(MAKE)" sh scripts/steps.sh $(TEST_STEPS)

## lint: cargo fmt --check and cargo clippy --all-targets -- -D warnings
lint: fmt clippy

fmt:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

## test-rust: cargo test, release and debug (the debug build checks the debug assertions)
test-rust:
	$(CARGO) test --release
	$(CARGO) test

## test-loom: the loom models (tests named loom_*), in their own target dir
LOOM_CARGO = RUSTFLAGS="--cfg loom" $(CARGO) test --release --target-dir target/loom --lib loom_
test-loom:
	LOOM_MAX_PREEMPTIONS=$(LOOM_MAX_PREEMPTIONS) $(LOOM_CARGO)
	@n=$$($(LOOM_CARGO) -q -- --list 2>/dev/null | grep -c ': test$$'); \
	if [ "$$n" = 0 ]; then sh scripts/skip.sh "no loom_ tests exist yet"; fi

## test-ports: Rust and C tests for i686 Linux, Rust tests for aarch64 under qemu; macOS, FreeBSD compiled (scripts/ports.sh)
test-ports:
	@CARGO="$(CARGO)" MAKE="$(MAKE)" sh scripts/ports.sh

## test-drift: include/coframe.h is what src/ffi generates, and is committed
test-drift:
	$(CARGO) test --release --test header_drift
	@sh scripts/check-header.sh

## test-abi: the exports and their symbol versions, the header's ABI against abi/ (abidiff), and proofs that both checks fail on a break (scripts/test-abi.sh)
test-abi:
	@sh scripts/test-abi.sh

## abi-baseline: record the ABI of this tree as the released one in abi/libcoframe.so.MAJOR.abi (at a release; docs/API.md)
abi-baseline:
	@sh scripts/abi.sh baseline

## test-ffi: the C, C++ and Zig tests of the C ABI (make -C ffi-tests test)
test-ffi: build-tsan build-asan
	@if [ ! -f ffi-tests/Makefile ]; then \
	    echo "ffi-tests/Makefile is missing" >&2; exit 1; fi
	$(MAKE) -C ffi-tests test

## test-examples: make -C c-examples test, make -C cpp-examples test, then make -C python-examples test
test-examples:
	$(MAKE) -C c-examples test
	$(MAKE) -C cpp-examples test
	$(MAKE) -C python-examples test

## test-zig: the Zig package: zig build test, the tests under valgrind and the safe mode, README.md's Zig block (scripts/test-zig.sh)
test-zig:
	@sh scripts/test-zig.sh

## test-install: make install into a temporary DESTDIR, then build and run a C program against it
test-install:
	@MAKE="$(MAKE)" sh scripts/test-install.sh

## test-deb: make deb, lintian, dpkg -i the packages, README.md's C, C++ and Zig quick looks against them, dpkg --purge (root)
test-deb:
	@MAKE="$(MAKE)" sh scripts/test-deb.sh

## test-docs: the reference's man pages and HTML (each function's page, roff lint, links), docs/TUTORIAL.md's C blocks built and run
test-docs:
	@CC="$(CC)" CXX="$(CXX)" sh scripts/test-docs.sh

## docs: the API reference from include/coframe.h: target/docs/man/man3/coro_*.3, man7/coframe.7, html/index.html
docs:
	python3 scripts/apiref.py --out target/docs

## deb: the Debian packages libcoframe0 and libcoframe-dev (dpkg-buildpackage, debhelper) in target/deb/
deb:
	@sh scripts/deb.sh

## test-cinstall: cargo cinstall (cargo-c) installs what make install installs (scripts/test-cinstall.sh; skipped without cargo-c)
test-cinstall:
	@MAKE="$(MAKE)" CARGO="$(CARGO)" sh scripts/test-cinstall.sh

## install: the library, headers, man pages, coframe.pc and the CMake package under $(DESTDIR)$(PREFIX)
install: build docs
	@PREFIX="$(PREFIX)" LIBDIR="$(LIBDIR)" INCLUDEDIR="$(INCLUDEDIR)" MANDIR="$(MANDIR)" DESTDIR="$(DESTDIR)" \
	    BUILD_DIR="$(CURDIR)/$(RELEASE_DIR)" DOCS_DIR="$(CURDIR)/target/docs" sh scripts/install.sh

## bench: coframe next to corosensei, may, tokio, Boost.Context; writes docs/bench/ (FULL=1: the long run)
# benches/deps.sh installs Boost.Context, valgrind and g++ if missing (root);
# benches/Makefile builds the Rust, C and C++ benches; benches/run.py runs
# them (wall time and callgrind) and writes RESULTS.md, results.json and
# results.svg. Fails only if a bench crashes, never on a figure.
FULL ?=
bench: build
	@sh benches/deps.sh
	$(MAKE) -C benches all
	python3 benches/run.py $(if $(filter-out 0,$(FULL)),--full)

## fuzz: the operation-sequence fuzzer for FUZZ_SECONDS (300), nightly + ASan; fuzz/README.md
# scripts/fuzz.sh installs cargo-fuzz if missing, and says how to install
# the nightly toolchain if that is missing. The corpus it grows in
# fuzz/corpus/ops is replayed by `cargo test` (tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 300
fuzz:
	@FUZZ_SECONDS="$(FUZZ_SECONDS)" CARGO="$(CARGO)" sh scripts/fuzz.sh

## clean: cargo clean (target/, including target/loom and target/tsan), the bench crate's target, debhelper's outputs in debian/, and the sub-directories' clean
clean:
	$(CARGO) clean
	rm -rf benches/compare/target fuzz/target .zig-cache zig-out zig/consumer/.zig-cache zig/consumer/zig-out
	rm -rf debian/.debhelper debian/tmp debian/libcoframe0 debian/libcoframe-dev debian/files \
	    debian/*.substvars debian/*.debhelper.log debian/debhelper-build-stamp
	@for d in ffi-tests c-examples cpp-examples python-examples; do \
	    if [ -f $$d/Makefile ]; then $(MAKE) -C $$d clean || true; fi; \
	done

## help: this list
help:
	@sed -n 's/^## \([^:]*\): /  make \1\t/p' $(firstword $(MAKEFILE_LIST)) | expand -t 22
