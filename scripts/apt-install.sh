#!/usr/bin/env bash
# Installs Debian packages quietly (as root, or through sudo without a password), with no recommended
# packages: `apt-install.sh PACKAGE...`. On failure it prints apt's output and exits 1. Used by the scripts that
# fetch what the tests and benchmarks need.
set -euo pipefail

[[ $# -gt 0 ]] || { echo "usage: apt-install.sh PACKAGE..." >&2; exit 2; }
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-install: $* missing and this is not a Debian-based system; install them by hand" >&2
  exit 1
fi
run_as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    run_as_root=(sudo -n)
  else
    echo "apt-install: run as root (or with sudo) to install $*" >&2
    exit 1
  fi
fi

echo "apt-install: installing $*" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-install-recommends: docker-compose would otherwise pull in a whole Docker engine (docker.io), and
# prometheus its node exporter; nothing here needs them.
if ! { "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "apt-install: installing $* failed" >&2
  exit 1
fi
