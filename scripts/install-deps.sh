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
gstreamer1.0-plugins-base gstreamer1.0-plugins-good
"

missing=""
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	"install ok installed") ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
# The nginx package starts a system instance on port 80; the tests run their own.
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi
