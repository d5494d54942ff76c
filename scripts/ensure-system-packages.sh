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

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" "${missing[@]}"

for i in "${!programs[@]}"; do
  if ! command -v "${programs[$i]}" >/dev/null 2>&1; then
    echo "ensure-system-packages: ${programs[$i]} is still missing after installing ${packages[$i]}" >&2
    exit 1
  fi
done
