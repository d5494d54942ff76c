#!/usr/bin/env bash
# Installs the Debian packages whose programs the test suite runs, when they are missing: docker-compose (v1,
# validates docker-compose.yml) and prometheus (for promtool, which checks the Prometheus config and rules).
# Quiet and idempotent: when every program is already there it does nothing, not even `apt-get update`.
set -euo pipefail

# program -> Debian package that provides it (bookworm names)
programs=(docker-compose promtool)
packages=(docker-compose prometheus)

missing=()
for i in "${!programs[@]}"; do
  command -v "${programs[$i]}" >/dev/null 2>&1 || missing+=("${packages[$i]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-system-packages: missing ${missing[*]}; this is not a Debian-based system, install them by hand" >&2
  exit 1
fi

run_as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    run_as_root=(sudo -n)
  else
    echo "ensure-system-packages: missing ${missing[*]}; run as root (or with sudo) to install them" >&2
    exit 1
  fi
fi

echo "ensure-system-packages: installing ${missing[*]}" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-install-recommends: docker-compose would otherwise pull in a whole Docker engine (docker.io), and
# prometheus its node exporter; the tests need neither.
if ! { "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "ensure-system-packages: installing ${missing[*]} failed" >&2
  exit 1
fi

for i in "${!programs[@]}"; do
  if ! command -v "${programs[$i]}" >/dev/null 2>&1; then
    echo "ensure-system-packages: ${programs[$i]} is still missing after installing ${packages[$i]}" >&2
    exit 1
  fi
done
