#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# deps.sh: install the Debian 12 packages that mudbus needs to build, test
# and run its demo. Idempotent and fast when everything is present: it asks
# dpkg which packages are missing and runs `apt-get update` and
# `apt-get install -y --no-install-recommends` only for those.
#
# Usage: scripts/deps.sh [GROUP...]
#   build  compiler, CMake, pkg-config and the libraries the build links
#   demo   build + what scripts/demo.sh runs (nats-server)
#   test   demo + clang/libFuzzer, clang-format, the LLVM symbolizer and openssl (test certificates)
#   all    everything (the default)
#
# Run as root (or as a user with sudo).

set -euo pipefail

pkgs_build=(
    gcc make libc6-dev cmake pkg-config git ca-certificates
    libjansson-dev libcmocka-dev libnats-dev libinih-dev
    libwebsockets-dev libuv1-dev libjwt-dev libssl-dev libsqlite3-dev libpq-dev
)
pkgs_demo=(nats-server curl)
# postgresql: the mute store tests start a real PostgreSQL server (initdb, pg_ctl).
# python3-websockets: the gateway's integration tests; chromium + node/npm:
# the browser test (npm only fetches playwright-core, never a browser).
pkgs_test=(clang clang-format libclang-rt-14-dev llvm openssl python3 python3-websockets chromium
    postgresql)
if ! command -v npm >/dev/null 2>&1; then
    pkgs_test+=(nodejs npm)
fi

usage() {
    sed -n '4,17s/^# \{0,1\}//p' "$0"
}

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(all)

wanted=()
for g in "${groups[@]}"; do
    case "$g" in
    build) wanted+=("${pkgs_build[@]}") ;;
    demo) wanted+=("${pkgs_build[@]}" "${pkgs_demo[@]}") ;;
    test | all) wanted+=("${pkgs_build[@]}" "${pkgs_demo[@]}" "${pkgs_test[@]}") ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "deps.sh: unknown group '$g'" >&2
        usage >&2
        exit 2
        ;;
    esac
done

mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort -u)
missing=()
for p in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps.sh: every package of ${groups[*]} is installed (${#wanted[@]} checked)"
    exit 0
fi

echo "deps.sh: installing ${missing[*]}"
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "deps.sh: not root and no sudo: install these packages as root: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "deps.sh: done"
