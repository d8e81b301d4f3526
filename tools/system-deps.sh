#!/usr/bin/env bash
# What Switchboard needs from the system, installed from Debian's packages when this runs as root
# with apt-get; otherwise one line names the packages to install.
#
#   system-deps.sh build   what `pip install` needs to build PyICU (the TS #39 confusable
#                          skeleton of nicknames, switchboard.names): ICU's headers, pkg-config, g++
#   system-deps.sh test    the tools the tests drive for real (their tests are skipped without
#                          them, naming the package, except in CI, where a skip fails the run):
#       nc       netcat-openbsd    the README's reversal example
#       tshark   tshark            the dissector tests (real captures on loopback)
#       ip       iproute2          the pulled-cable test's network namespaces
#       ps       procps            process checks in the CLI tests
#       openssl  openssl           the TLS tests' certificates
#       gcc      gcc, libc6-dev    the C round-trip floor (tools/latency/pingpong.c) and its test
#       node     nodejs            the web page's JavaScript codec tests (node --test)
#       chromium chromium, chromium-driver, fonts-noto-cjk, fonts-noto-color-emoji
#                                  the web page's browser tests (headless, Selenium) and the
#                                  screenshot's Chinese and emoji
#       redis-server  redis-server  the cluster tests (serve --cluster: each test starts its own)
#       redis-cli     redis-tools   the cluster test across network namespaces (is Redis up there?)
set -euo pipefail

missing=()
need_command() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_file() { [ -e "$1" ] || missing+=("$2"); }

case "${1:-}" in
build)
    need_command pkg-config pkg-config
    need_command g++ g++
    pkg-config --exists icu-uc 2>/dev/null || missing+=(libicu-dev)
    ;;
test)
    need_command nc netcat-openbsd
    need_command tshark tshark
    need_command ip iproute2
    need_command ps procps
    need_command openssl openssl
    need_command gcc gcc
    need_file /usr/include/stdio.h libc6-dev
    need_command node nodejs
    need_command chromium chromium
    need_command chromedriver chromium-driver
    need_file /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc fonts-noto-cjk
    need_file /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf fonts-noto-color-emoji
    need_command redis-server redis-server
    need_command redis-cli redis-tools
    ;;
*)
    echo "usage: $0 build|test" >&2
    exit 2
    ;;
esac
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages ($1): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif [ "$1" = build ]; then
    echo "building PyICU needs these Debian packages: ${missing[*]} (install them, or run make as root)" >&2
else
    echo "the tests that need these Debian packages will be skipped: ${missing[*]}" \
         "(install them, or run make test as root)" >&2
fi
