# memsync: build, test, benchmark and install.
#
#   make demo        install what is missing, build, serve an export and use it
#   make check       install what is missing, build, run every test suite
#   make check-long  the slow suites (long fuzzing, the full kernel batch)
#   make bench       side-by-side benchmarks against nbdkit and qemu-nbd (local,
#                    kernel, and the remote path at several RTTs)
#   make install     PREFIX=/usr/local DESTDIR= : binaries, man pages, completions
#   make deps        the one place that knows our Debian package names

VERSION   := 0.1.0
PREFIX    ?= /usr/local
DESTDIR   ?=
CXX       ?= g++
CLANGXX   ?= clang++
JOBS      ?= 2

TOOLS     := nbd-serve nbd-attach ram-ul ram-dl
BUILD     := build
ASAN      := build-asan
TSAN      := build-tsan
FUZZ      := build-fuzz

WARN      := -Wall -Wextra -Werror -Wno-missing-field-initializers
CPPFLAGS  := -Ilib -Itests -I/usr/include/libnl3 -DMEMSYNC_VERSION='"$(VERSION)"' -D_GNU_SOURCE
CXXFLAGS  ?= -O2 -g
CXXSTD    := -std=c++20 -pthread $(WARN)
LDLIBS    := -lboost_program_options -lssl -lcrypto -lnl-genl-3 -lnl-3 -llz4 -lhiredis -pthread

LIB_SRC   := $(sort $(wildcard lib/*/*.cpp))
LIB_OBJ   := $(LIB_SRC:%.cpp=$(BUILD)/%.o)
UNIT_SRC  := $(sort $(wildcard tests/unit/*.cpp))
FUZZ_SRC  := $(sort $(wildcard tests/fuzz/*.cpp))
FUZZERS   := $(FUZZ_SRC:tests/fuzz/%.cpp=$(FUZZ)/%)
BINS      := $(TOOLS:%=$(BUILD)/bin/%)
HELPER_SRC := $(sort $(wildcard tests/helpers/*.cpp))
HELPERS   := $(HELPER_SRC:tests/helpers/%.cpp=$(BUILD)/tests/%)

# Debian packages: build, tests (third-party NBD clients, the VM), benchmarks.
DEB_PACKAGES := g++ make pkg-config libboost-program-options-dev libssl-dev \
  libnl-3-dev libnl-genl-3-dev liblz4-dev libhiredis-dev libgtest-dev \
  clang libclang-rt-14-dev bats mandoc libnbd-bin python3-libnbd nbdkit qemu-utils fio \
  nbd-client nbd-server gnutls-bin openssl redis-server redis-tools \
  qemu-system-x86 busybox-static xz-utils procps

.PHONY: all deps check check-long unit unit-asan unit-tsan bats fuzz kernel lint bench demo install clean
.DEFAULT_GOAL := all
# Keep object files that pattern rules chain through (make would delete them).
.SECONDARY:

all: deps $(BUILD)/libmemsync.a $(BINS)

deps:
	@tests/helpers/ensure-deps $(DEB_PACKAGES)

$(BUILD)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXSTD) $(CPPFLAGS) $(CXXFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libmemsync.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/tools/%/main.o $(BUILD)/libmemsync.a
	@mkdir -p $(@D)
	$(CXX) $(CXXSTD) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

# Test programs: one tests/helpers/NAME.cpp each, linked with the library.
$(BUILD)/tests/%: $(BUILD)/tests/helpers/%.o $(BUILD)/libmemsync.a
	@mkdir -p $(@D)
	$(CXX) $(CXXSTD) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(UNIT_SRC:%.cpp=$(BUILD)/%.o) $(BUILD)/libmemsync.a
	$(CXX) $(CXXSTD) $(CXXFLAGS) -o $@ $^ -lgtest -lgtest_main $(LDLIBS)

# The sanitizer build: library and unit tests with ASan + UBSan.
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
$(ASAN)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXSTD) $(CPPFLAGS) -O1 -g $(SAN) -MMD -MP -c $< -o $@

$(ASAN)/unit-tests: $(UNIT_SRC:%.cpp=$(ASAN)/%.o) $(LIB_SRC:%.cpp=$(ASAN)/%.o)
	$(CXX) $(CXXSTD) -O1 -g $(SAN) -o $@ $^ -lgtest -lgtest_main $(LDLIBS)

# The same tests under ThreadSanitizer: the NBD engine is concurrent.
$(TSAN)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CXX) $(CXXSTD) $(CPPFLAGS) -O1 -g -fsanitize=thread -MMD -MP -c $< -o $@

$(TSAN)/unit-tests: $(UNIT_SRC:%.cpp=$(TSAN)/%.o) $(LIB_SRC:%.cpp=$(TSAN)/%.o)
	$(CXX) $(CXXSTD) -O1 -g -fsanitize=thread -o $@ $^ -lgtest -lgtest_main $(LDLIBS)

# libFuzzer targets (clang), each linked with the whole library.
$(FUZZ)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CLANGXX) $(CXXSTD) $(CPPFLAGS) -O1 -g -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@

$(FUZZ)/%: $(FUZZ)/tests/fuzz/%.o $(LIB_SRC:%.cpp=$(FUZZ)/%.o)
	$(CLANGXX) $(CXXSTD) -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

# The tools and test helpers must also compile warning-free under clang (the
# library already does, in the fuzz build).
$(FUZZ)/clang-syntax.ok: $(wildcard tools/*/main.cpp) $(wildcard tests/helpers/*.cpp) $(UNIT_SRC)
	@mkdir -p $(@D)
	$(CLANGXX) $(CXXSTD) $(CPPFLAGS) -fsyntax-only $^
	@touch $@

unit: deps $(BUILD)/unit-tests
	$(BUILD)/unit-tests --gtest_brief=1

unit-asan: deps $(ASAN)/unit-tests
	$(ASAN)/unit-tests --gtest_brief=1

unit-tsan: deps $(TSAN)/unit-tests
	TSAN_OPTIONS="halt_on_error=1 suppressions=tests/unit/tsan.supp" $(TSAN)/unit-tests --gtest_brief=1

bats: all $(HELPERS)
	bats --timing tests/*.bats

fuzz: deps $(FUZZERS)
	@tests/fuzz/run-fuzzers $(FUZZ) $${FUZZ_SECONDS:-20}

kernel: all $(HELPERS)
	@tests/kernel/run-smoke

lint: deps
	@tests/helpers/lint-man man/*.[1-8]

# One target runs every suite, timing each, then prints the totals line.
check: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all $(HELPERS) $(BUILD)/unit-tests $(ASAN)/unit-tests $(TSAN)/unit-tests $(FUZZERS) $(FUZZ)/clang-syntax.ok
	@tests/helpers/run-suites \
	  "unit"      "$(BUILD)/unit-tests --gtest_brief=1" \
	  "unit-asan" "$(ASAN)/unit-tests --gtest_brief=1" \
	  "unit-tsan" "TSAN_OPTIONS='halt_on_error=1 suppressions=tests/unit/tsan.supp' $(TSAN)/unit-tests --gtest_brief=1" \
	  "man"       "tests/helpers/lint-man man/*.[1-8]" \
	  "bats"      "bats --timing tests/*.bats" \
	  "fuzz"      "FUZZ_SEED=$${FUZZ_SEED:-1} tests/fuzz/run-fuzzers $(FUZZ) $${FUZZ_SECONDS:-15}" \
	  "kernel"    "tests/kernel/run-smoke"

check-long: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all $(HELPERS) $(FUZZERS)
	@tests/helpers/run-suites \
	  "fuzz-long"   "tests/fuzz/run-fuzzers $(FUZZ) $${FUZZ_SECONDS:-300}" \
	  "kernel-full" "tests/kernel/run-smoke full"

bench: all $(HELPERS)
	tests/bench/run-bench
	tests/bench/run-kernel-bench
	tests/bench/run-remote-bench

demo: all
	examples/serve-and-inspect.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man7 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/*.7 $(DESTDIR)$(PREFIX)/share/man/man7/
	install -m 644 completions/* $(DESTDIR)$(PREFIX)/share/bash-completion/completions/

clean:
	rm -rf $(BUILD) $(ASAN) $(TSAN) $(FUZZ)

-include $(shell find $(BUILD) $(ASAN) $(TSAN) $(FUZZ) -name '*.d' 2>/dev/null)
