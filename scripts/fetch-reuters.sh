#!/usr/bin/env bash
# Copies the Reuters-21578 corn and grain ARFF files (ModApte split, as shipped in Debian's weka package's
# examples) into .cache/datasets/reuters, installing weka first when they are missing. Idempotent.
set -euo pipefail

examples=/usr/share/doc/weka/examples
out=${1:-.cache/datasets/reuters}
files=(ReutersCorn-train ReutersCorn-test ReutersGrain-train ReutersGrain-test)

present() { [[ -e "$examples/$1.arff" || -e "$examples/$1.arff.gz" ]]; }

if ! present ReutersCorn-train; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fetch-reuters: $examples is missing and this is not a Debian-based system; install weka by hand" >&2
    exit 1
  fi
  run_as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      run_as_root=(sudo -n)
    else
      echo "fetch-reuters: run as root (or with sudo) to install the weka package" >&2
      exit 1
    fi
  fi
  echo "fetch-reuters: installing weka (for its Reuters example files)" >&2
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! { "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends weka; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    echo "fetch-reuters: installing weka failed" >&2
    exit 1
  fi
fi

mkdir -p "$out"
for name in "${files[@]}"; do
  if [[ -e "$examples/$name.arff" ]]; then
    cp "$examples/$name.arff" "$out/$name.arff"
  elif [[ -e "$examples/$name.arff.gz" ]]; then
    gunzip -c "$examples/$name.arff.gz" >"$out/$name.arff"
  else
    echo "fetch-reuters: $examples/$name.arff is missing even though weka is installed" >&2
    exit 1
  fi
done
