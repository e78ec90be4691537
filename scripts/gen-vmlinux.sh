#!/bin/sh
# Regenerate vmlinux/$(arch)/vmlinux.h from the running kernel's BTF.
#
#   scripts/gen-vmlinux.sh [BTF_FILE]     (default /sys/kernel/btf/vmlinux)
#
# The header is committed so that building bpf/kfwd.bpf.c does not depend on
# the build host's BTF; CO-RE relocations adapt the object to the kernel it
# is loaded on.  Regenerate only to use kernel types the header lacks.
set -eu

cd "$(dirname "$0")/.."
btf=${1:-/sys/kernel/btf/vmlinux}
arch=$(uname -m)
out=vmlinux/$arch/vmlinux.h

if ! command -v bpftool >/dev/null 2>&1; then
	echo "gen-vmlinux: bpftool not found (apt-get install bpftool)" >&2
	exit 1
fi
if [ ! -r "$btf" ]; then
	echo "gen-vmlinux: $btf not readable (kernel without CONFIG_DEBUG_INFO_BTF?)" >&2
	exit 1
fi

mkdir -p "vmlinux/$arch"
tmp=$(mktemp "vmlinux/$arch/.vmlinux.h.XXXXXX")
trap 'rm -f "$tmp"' EXIT
bpftool btf dump file "$btf" format c >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "gen-vmlinux: wrote $out ($(wc -c <"$out") bytes, kernel $(uname -r))" >&2
