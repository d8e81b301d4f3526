#!/usr/bin/env bash
# The system tools the tests drive for real, installed from Debian's packages when this runs as
# root with apt-get; otherwise one line per missing tool names the package to install (the tests
# that need it are then skipped with the same name, except in CI, where a skip fails the run).
#
#   command  package           used by
#   nc       netcat-openbsd    the README's reversal example
#   tshark   tshark            the dissector tests (real captures on loopback)
#   ip       iproute2          the pulled-cable test's network namespaces
#   ps       procps            process checks in the CLI tests
#   openssl  openssl           the TLS tests' certificates
#   gcc      gcc, libc6-dev    the C round-trip floor (tools/latency/pingpong.c) and its test
set -euo pipefail

declare -A package_of=(
    [nc]=netcat-openbsd [tshark]=tshark [ip]=iproute2 [ps]=procps [openssl]=openssl [gcc]=gcc
)
missing=()
for command in "${!package_of[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${package_of[$command]}")
done
# gcc without the C library headers cannot build the round-trip floor.
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages the tests need: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "the tests that need these Debian packages will be skipped: ${missing[*]}" \
         "(install them, or run make test as root)" >&2
fi
