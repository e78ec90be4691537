# kfwd — HTTP/RTSP forwarder whose body bytes stay in the kernel.
#
#   make          build build/kfwd and build/kfwdctl
#   make run      install missing deps, build, run kfwd in the foreground (embedded default config)
#   make test     install missing deps, build, run the C unit tests and every pytest test
#   make test SANITIZE=1   the same against an ASan+UBSan build in build-san/ (no fuzzing)
#   make bench    benchmark against a direct transfer, HAProxy and nginx (BENCH_QUICK=1: reduced)
#   make fuzz     replay the fuzz regression inputs, then run every libFuzzer target FUZZ_TIME s
#   make install  install into $(DESTDIR)$(PREFIX) (see "Installing" below); make uninstall
#   make clean
#
# Cross builds: make CROSS_COMPILE=aarch64-linux-gnu- (or ARCH=arm64) builds into build-arm64/.

# Target. ARCH is the kernel's name for it (x86, arm64; x86_64 and aarch64 are accepted too),
# CROSS_COMPILE the toolchain prefix (aarch64-linux-gnu-: Debian's cross gcc, which finds the
# arm64 libraries of the multiarch -dev:arm64 packages by itself). Either implies the other;
# neither: this host. MACHINE is the target's uname -m / multiarch name.
HOST_MACHINE := $(shell uname -m)
ifneq ($(CROSS_COMPILE),)
ARCH ?= $(firstword $(subst -, ,$(CROSS_COMPILE)))
endif
ARCH     ?= $(HOST_MACHINE)
override ARCH := $(subst x86_64,x86,$(subst aarch64,arm64,$(ARCH)))
MACHINE  := $(subst x86,x86_64,$(subst arm64,aarch64,$(ARCH)))
ifneq ($(MACHINE),$(HOST_MACHINE))
CROSS_COMPILE ?= $(MACHINE)-linux-gnu-
endif
ifeq ($(origin CC),default)
CC       := $(CROSS_COMPILE)gcc
endif
ifneq ($(origin BUILD),command line)
BUILD    := $(if $(CROSS_COMPILE),build-$(ARCH),build)
endif
# SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer, in a build directory of its own so
# the normal build is untouched; pytest runs against it (KFWD_BIN) and fails on any report.
ifeq ($(SANITIZE),1)
ifneq ($(origin BUILD),command line)
BUILD    := build-san
endif
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
else
SAN_FLAGS :=
endif
PYTHON   := /usr/bin/python3
PYTEST   := /usr/bin/pytest
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

WARN     := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter
# Cross builds are router builds: optimised for size as OpenWrt builds its packages (-Os: the
# arm64 binary is 334 KB instead of 399 KB; its text is 10 % smaller and its 64 KiB-aligned data
# segment no longer lands just past a page), native builds for speed.
OPT      ?= $(if $(CROSS_COMPILE),-Os,-O2)
CFLAGS   ?= $(OPT) -g
# Unwind tables serve C++ exceptions and debuggers only: the stripped router binary goes without
# them (40 of its 415 KB); -g keeps .debug_frame for gdb and perf on unstripped builds, and
# sanitizer builds keep them for their stack traces.
NO_UNWIND := $(if $(SAN_FLAGS),,-fno-asynchronous-unwind-tables -fno-unwind-tables)
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) $(NO_UNWIND) $(SAN_FLAGS) -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD) -I$(LLHTTP_INC) \
	-MMD -MP
# Third-party llhttp is compiled as Debian ships it, in strict mode, without our -Werror.
LLHTTP_CFLAGS := -std=gnu11 $(OPT) -g $(NO_UNWIND) -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -w $(SAN_FLAGS)
LDLIBS   := -lbpf -lelf -lz -lmnl -lcares -lssl -lcrypto

# BPF: CO-RE object from bpf/kfwd.bpf.c against the committed vmlinux.h, embedded in the daemon
# as a libbpf skeleton (bpftool gen skeleton).
CLANG      ?= clang
LLVM_STRIP ?= llvm-strip
BPFTOOL    ?= bpftool
# The program uses no arch-specific kernel type (no pt_regs): only the UAPI __sk_buff and
# CO-RE-relocated fields of sk_buff/tcp_skb_cb/tcp_sock, placed by the target kernel's BTF at
# load time. So a target without its own vmlinux/MACHINE/vmlinux.h builds with the x86_64 one;
# the object is byte-identical for __TARGET_ARCH_x86 and _arm64 (tests/test_cross_arm64.py).
VMLINUX_H  := $(firstword $(wildcard vmlinux/$(MACHINE)/vmlinux.h) vmlinux/x86_64/vmlinux.h)
BPF_CFLAGS := -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_$(ARCH) -I$(dir $(VMLINUX_H)) -Iinclude

CTL_SRCS    := user/kfwdctl.c
COMMON_SRCS := $(wildcard user/common_*.c)
DAEMON_SRCS := $(filter-out $(CTL_SRCS) $(COMMON_SRCS),$(wildcard user/*.c))
DAEMON_OBJS := $(DAEMON_SRCS:user/%.c=$(BUILD)/user/%.o)
COMMON_OBJS := $(COMMON_SRCS:user/%.c=$(BUILD)/user/%.o)
LLHTTP_OBJS := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
UNIT_SRCS   := $(wildcard tests/unit/*.c)

.PHONY: all run test unit layers pytest bench fuzz clean deps format install uninstall

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

# The declared layers of user/ (scripts/layers.txt): no upward include, no cycle.
layers:
	$(PYTHON) scripts/check-layers.py
# Sanitizer reports go to kfwd's stderr (which conftest checks) and do not stop the daemon;
# leaks are checked when it exits. The tests' own make runs (cross build, install) must not
# inherit SANITIZE=1 (MAKEFLAGS, and make exports command-line variables): they would build into
# build-san and replace KFWD_BIN, or find it up to date and build nothing.
SAN_ENV := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZE KFWD_SANITIZE=1 KFWD_BIN=$(CURDIR)/$(BUILD)/kfwd KFWDCTL_BIN=$(CURDIR)/$(BUILD)/kfwdctl \
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=0:abort_on_error=0:quarantine_size_mb=16 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0

pytest: all
	$(if $(SAN_FLAGS),$(SAN_ENV)) $(PYTEST) -q -ra tests

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory layers
	@$(MAKE) --no-print-directory unit
	@$(if $(SAN_FLAGS),true,$(MAKE) --no-print-directory fuzz FUZZ_TIME=10)
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
	$(PYTHON) scripts/bench_tls.py
	$(PYTHON) scripts/bench_rtsp.py
	$(PYTHON) scripts/bench_rtsp_gateway.py

format:
	clang-format -i $(wildcard user/*.c user/*.h include/kfwd/*.h bpf/*.bpf.c tests/unit/*.c)

# Installing. PREFIX=/usr for distribution packages; the configuration directory is /etc
# then, $(PREFIX)/etc otherwise. An existing kfwd.conf is never overwritten, and uninstall
# removes it only while it is still the unchanged example. Nothing outside $(DESTDIR).
PREFIX     ?= /usr/local
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DATADIR    ?= $(PREFIX)/share/kfwd
PKG        := scripts/packaging
MAN5       := $(PKG)/man/kfwd.conf.5
MAN8       := $(PKG)/man/kfwd.8 $(PKG)/man/kfwdctl.8
OPENWRT    := kfwd.init kfwd.uci uci2conf.sh
# The packaged files name /usr/sbin, /etc/kfwd and /usr/share/kfwd; other prefixes get theirs.
SUBST_PATHS := sed -e 's|/usr/sbin/|$(SBINDIR)/|g' -e 's|/etc/kfwd/|$(SYSCONFDIR)/kfwd/|g' \
	-e 's|/usr/share/kfwd/|$(DATADIR)/|g'

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSCONFDIR)/kfwd $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)/openwrt
	install -m 0755 $(BUILD)/kfwd $(BUILD)/kfwdctl $(DESTDIR)$(SBINDIR)/
	install -m 0644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	$(SUBST_PATHS) $(PKG)/systemd/kfwd.service > $(DESTDIR)$(UNITDIR)/kfwd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/kfwd.service
	set -e; for f in $(OPENWRT); do \
		$(SUBST_PATHS) $(PKG)/openwrt/$$f > $(DESTDIR)$(DATADIR)/openwrt/$$f; \
		chmod $$(case $$f in *.uci) echo 0644;; *) echo 0755;; esac) $(DESTDIR)$(DATADIR)/openwrt/$$f; \
	done
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf ]; then \
		echo "install: $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf exists, left as it is"; \
	else \
		echo "install -m 0644 $(PKG)/kfwd.conf.example $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf"; \
		install -m 0644 $(PKG)/kfwd.conf.example $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf; \
	fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/kfwd $(DESTDIR)$(SBINDIR)/kfwdctl \
		$(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(MAN5))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN8))) \
		$(DESTDIR)$(UNITDIR)/kfwd.service $(addprefix $(DESTDIR)$(DATADIR)/openwrt/,$(OPENWRT))
	@if cmp -s $(PKG)/kfwd.conf.example $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf ]; then \
		echo "uninstall: $(DESTDIR)$(SYSCONFDIR)/kfwd/kfwd.conf was edited, left as it is"; \
	fi
	-rmdir $(DESTDIR)$(DATADIR)/openwrt $(DESTDIR)$(DATADIR) $(DESTDIR)$(SYSCONFDIR)/kfwd 2>/dev/null

clean:
	rm -rf $(BUILD) $(wildcard build-*/)

-include $(wildcard $(BUILD)/user/*.d $(FUZZ_OBJ)/user/*.d $(BUILD)/fuzz/*.d)
