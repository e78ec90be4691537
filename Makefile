# kfwd — HTTP/RTSP forwarder whose body bytes stay in the kernel.
#
#   make          build build/kfwd and build/kfwdctl
#   make run      install missing deps, build, run kfwd in the foreground (embedded default config)
#   make test     install missing deps, build, run the C unit tests and every pytest test
#   make test SANITIZE=1   the same against an ASan+UBSan build in build-san/ (no fuzzing)
#   make bench    benchmark against a direct transfer, HAProxy and nginx (BENCH_QUICK=1: reduced)
#   make fuzz     build and run the libFuzzer target(s) for a short while
#   make clean

CC       ?= gcc
# SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer, in a build directory of its own so
# the normal build is untouched; pytest runs against it (KFWD_BIN) and fails on any report.
ifeq ($(SANITIZE),1)
BUILD    := build-san
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
else
BUILD    := build
SAN_FLAGS :=
endif
PYTHON   := /usr/bin/python3
PYTEST   := /usr/bin/pytest
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

WARN     := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter
CFLAGS   ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) $(SAN_FLAGS) -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD) -I$(LLHTTP_INC) \
	-MMD -MP
# Third-party llhttp is compiled as Debian ships it, in strict mode, without our -Werror.
LLHTTP_CFLAGS := -std=gnu11 -O2 -g -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -w $(SAN_FLAGS)
LDLIBS   := -lbpf -lelf -lz -lmnl -lcares

# BPF: CO-RE object from bpf/kfwd.bpf.c against the committed vmlinux.h, embedded in the daemon
# as a libbpf skeleton (bpftool gen skeleton).
CLANG      ?= clang
LLVM_STRIP ?= llvm-strip
BPFTOOL    ?= bpftool
ARCH       := $(shell uname -m)
BPF_ARCH   := $(subst x86_64,x86,$(subst aarch64,arm64,$(ARCH)))
VMLINUX_H  := vmlinux/$(ARCH)/vmlinux.h
BPF_CFLAGS := -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_$(BPF_ARCH) -Ivmlinux/$(ARCH) -Iinclude

CTL_SRCS    := user/kfwdctl.c
COMMON_SRCS := $(wildcard user/common_*.c)
DAEMON_SRCS := $(filter-out $(CTL_SRCS) $(COMMON_SRCS),$(wildcard user/*.c))
DAEMON_OBJS := $(DAEMON_SRCS:user/%.c=$(BUILD)/user/%.o)
COMMON_OBJS := $(COMMON_SRCS:user/%.c=$(BUILD)/user/%.o)
LLHTTP_OBJS := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
UNIT_SRCS   := $(wildcard tests/unit/*.c)

.PHONY: all run test unit pytest bench fuzz clean deps format

all: $(BUILD)/kfwd $(if $(wildcard $(CTL_SRCS)),$(BUILD)/kfwdctl)

deps:
	@scripts/install-deps.sh

$(BUILD)/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LLHTTP_CFLAGS) -c $< -o $@

$(VMLINUX_H):
	scripts/gen-vmlinux.sh

# -g for BTF (CO-RE relocations, typed maps for bpftool); DWARF stripped: 137 KB, not 2.2 MB.
$(BUILD)/kfwd.bpf.o: bpf/kfwd.bpf.c include/kfwd/sockmap.h $(VMLINUX_H)
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(LLVM_STRIP) -g $@

$(BUILD)/kfwd.skel.h: $(BUILD)/kfwd.bpf.o
	$(BPFTOOL) gen skeleton $< name kfwd > $@.tmp
	mv $@.tmp $@

# user/sockmap.c includes the skeleton.
$(BUILD)/user/sockmap.o: $(BUILD)/kfwd.skel.h

$(BUILD)/user/%.o: user/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/kfwd: $(DAEMON_OBJS) $(COMMON_OBJS) $(LLHTTP_OBJS)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kfwdctl: $(BUILD)/user/kfwdctl.o $(COMMON_OBJS)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ -lmnl

# C unit tests link every daemon object but main.o.
$(BUILD)/unit_tests: $(UNIT_SRCS) $(filter-out $(BUILD)/user/main.o,$(DAEMON_OBJS)) $(COMMON_OBJS) $(LLHTTP_OBJS)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	./$(BUILD)/kfwd

unit: $(BUILD)/unit_tests
	./$(BUILD)/unit_tests

# Sanitizer reports go to kfwd's stderr (which conftest checks) and do not stop the daemon;
# leaks are checked when it exits.
SAN_ENV := KFWD_SANITIZE=1 KFWD_BIN=$(CURDIR)/$(BUILD)/kfwd KFWDCTL_BIN=$(CURDIR)/$(BUILD)/kfwdctl \
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=0:abort_on_error=0:quarantine_size_mb=16 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0

pytest: all
	$(if $(SAN_FLAGS),$(SAN_ENV)) $(PYTEST) -q -ra tests

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(if $(SAN_FLAGS),true,$(MAKE) --no-print-directory fuzz FUZZ_TIME=10)
	@$(MAKE) --no-print-directory pytest

# libFuzzer targets: tests/fuzz/fuzz_NAME.c linked with user/common_*.c, run FUZZ_TIME seconds
# each from build/fuzz/corpus_NAME (seeded by tests/fuzz/seeds_NAME.py when there is one).
FUZZ_CC    := clang
FUZZ_TIME  ?= 30
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_FLAGS := -std=gnu11 $(WARN) -g -O1 -D_GNU_SOURCE -Iinclude -Iuser \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(COMMON_SRCS) $(wildcard user/common_*.h include/kfwd/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(COMMON_SRCS) -lmnl

fuzz: $(FUZZ_BINS)
	@set -e; for bin in $(FUZZ_BINS); do \
		name=$${bin##*/fuzz_}; corpus=$(BUILD)/fuzz/corpus_$$name; mkdir -p $$corpus; \
		if [ -f tests/fuzz/seeds_$$name.py ]; then $(PYTHON) tests/fuzz/seeds_$$name.py $$corpus; fi; \
		echo "fuzz: $$bin for $(FUZZ_TIME) s"; \
		$$bin -max_total_time=$(FUZZ_TIME) -max_len=8192 -print_final_stats=1 \
			-artifact_prefix=$(BUILD)/fuzz/ $$corpus; \
	done

bench: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) scripts/bench.py

format:
	clang-format -i $(wildcard user/*.c user/*.h include/kfwd/*.h bpf/*.bpf.c tests/unit/*.c)

clean:
	rm -rf build build-san

-include $(wildcard $(BUILD)/user/*.d)
