#!/bin/sh
# Install every Debian package kfwd's build, tests, `make run` and `make bench` need.
# Idempotent: asks dpkg first and calls apt-get only for what is missing.
set -eu

PACKAGES="
make gcc clang llvm libclang-rt-dev pkg-config
libbpf-dev libmnl-dev libssl-dev libc-ares-dev node-llhttp bpftool
iproute2 nftables procps psmisc strace util-linux
python3 python3-pytest python3-websockets
nginx-light curl wrk haproxy ffmpeg
gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-tools
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
mandoc systemd dash
gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
libbpf-dev:arm64 libmnl-dev:arm64 libc-ares-dev:arm64 libelf-dev:arm64 zlib1g-dev:arm64
libssl-dev:arm64
"
# The :arm64 packages (cross builds, make ARCH=arm64) need dpkg's arm64 architecture.
FOREIGN_ARCH=arm64

# A name without :ARCH means the native or an arch-all package (with arm64 enabled, dpkg-query
# answers one line per installed architecture).
native=$(dpkg --print-architecture)
installed=$(dpkg-query -W -f='${Package} ${Architecture} ${Status}\n' 2>/dev/null || true)
missing=""
for p in $PACKAGES; do
	case "$p" in
	*:*) arches=${p#*:} ;;
	*) arches="$native all" ;;
	esac
	found=""
	for a in $arches; do
		if printf '%s\n' "$installed" | grep -qx "${p%%:*} $a install ok installed"; then
			found=1
		fi
	done
	[ -n "$found" ] || missing="$missing $p"
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx "$FOREIGN_ARCH"; then
	dpkg --add-architecture "$FOREIGN_ARCH"
fi
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
# The nginx package starts a system instance on port 80; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi
