# kfwd — HTTP/RTSP forwarder whose body bytes stay in the kernel.
#
#   make          build build/kfwd and build/kfwdctl
#   make run      install missing deps, build, run kfwd in the foreground (embedded default config)
#   make test     install missing deps, build, run the C unit tests and every pytest test
#   make bench    benchmark against a direct transfer, HAProxy and nginx (BENCH_QUICK=1: reduced)
#   make fuzz     build and run the libFuzzer target(s) for a short while
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
	@$(MAKE) --no-print-directory pytest

bench: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) scripts/bench.py

format:
	clang-format -i $(wildcard user/*.c user/*.h include/kfwd/*.h bpf/*.bpf.c tests/unit/*.c)

clean:
	rm -rf $(BUILD)

-include $(wildcard $(BUILD)/user/*.d)
