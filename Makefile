# kfwd — HTTP/RTSP forwarder whose body bytes stay in the kernel.
#
#   make          build build/kfwd and build/kfwdctl
#   make run      install missing deps, build, run kfwd in the foreground (embedded default config)
#   make test     install missing deps, build, run the C unit tests and every pytest test
#   make bench    benchmark against a direct transfer, HAProxy and nginx (BENCH_QUICK=1: reduced)
#   make fuzz     replay the fuzz regression inputs, then run every libFuzzer target FUZZ_TIME s
#   make clean

CC       ?= gcc
BUILD    := build
PYTHON   := /usr/bin/python3
PYTEST   := /usr/bin/pytest
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

WARN     := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter
CFLAGS   ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD) -I$(LLHTTP_INC) \
	-MMD -MP
# Third-party llhttp is compiled as Debian ships it, in strict mode, without our -Werror.
LLHTTP_CFLAGS := -std=gnu11 -O2 -g -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -w
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
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kfwdctl: $(BUILD)/user/kfwdctl.o $(COMMON_OBJS)
	$(CC) $(CFLAGS) -o $@ $^ -lmnl

# C unit tests link every daemon object but main.o.
$(BUILD)/unit_tests: $(UNIT_SRCS) $(filter-out $(BUILD)/user/main.o,$(DAEMON_OBJS)) $(COMMON_OBJS) $(LLHTTP_OBJS)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	./$(BUILD)/kfwd

unit: $(BUILD)/unit_tests
	./$(BUILD)/unit_tests

pytest: all
	$(PYTEST) -q -ra tests

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=10
	@$(MAKE) --no-print-directory pytest

# libFuzzer targets: each tests/fuzz/fuzz_NAME.c is linked with every daemon object but main.o
# (plus llhttp and user/common_*.c), all built with clang -fsanitize=fuzzer-no-link,address,undefined
# into build/fuzz/obj. `make fuzz` first replays tests/fuzz/regress_NAME/ (crashers kept as
# regression inputs), then runs each target FUZZ_TIME seconds from build/fuzz/corpus_NAME (seeded
# by tests/fuzz/seeds_NAME.py when there is one). FUZZ_TARGETS narrows the set: FUZZ_TARGETS=chunked.
FUZZ_CC    := clang
FUZZ_TIME  ?= 30
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_TARGETS ?= $(FUZZ_BINS:$(BUILD)/fuzz/fuzz_%=%)
FUZZ_OBJ   := $(BUILD)/fuzz/obj
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_FLAGS := -std=gnu11 $(WARN) -g -O1 -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD) -I$(LLHTTP_INC) \
	$(FUZZ_SAN) -MMD -MP
FUZZ_OBJS  := $(patsubst user/%.c,$(FUZZ_OBJ)/user/%.o,$(filter-out user/main.c,$(DAEMON_SRCS)) \
	$(COMMON_SRCS)) $(LLHTTP_OBJS:$(BUILD)/llhttp/%=$(FUZZ_OBJ)/llhttp/%)

$(FUZZ_OBJ)/user/sockmap.o: $(BUILD)/kfwd.skel.h

$(FUZZ_OBJ)/user/%.o: user/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_OBJ)/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(LLHTTP_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS) $(LDLIBS)

fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
	@set -e; for name in $(FUZZ_TARGETS); do \
		bin=$(BUILD)/fuzz/fuzz_$$name; corpus=$(BUILD)/fuzz/corpus_$$name; \
		regress=tests/fuzz/regress_$$name; mkdir -p $$corpus; \
		if [ -n "$$(ls -A $$regress 2>/dev/null)" ]; then \
			echo "fuzz: $$bin replays $$regress"; $$bin -runs=0 $$regress; fi; \
		if [ -f tests/fuzz/seeds_$$name.py ]; then $(PYTHON) tests/fuzz/seeds_$$name.py $$corpus; fi; \
		echo "fuzz: $$bin for $(FUZZ_TIME) s"; \
		$$bin -max_total_time=$(FUZZ_TIME) -max_len=8192 -print_final_stats=1 \
			-artifact_prefix=$(BUILD)/fuzz/$$name- $$corpus; \
	done

bench: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) scripts/bench.py

format:
	clang-format -i $(wildcard user/*.c user/*.h include/kfwd/*.h bpf/*.bpf.c tests/unit/*.c)

clean:
	rm -rf $(BUILD)

-include $(wildcard $(BUILD)/user/*.d $(FUZZ_OBJ)/user/*.d $(BUILD)/fuzz/*.d)
