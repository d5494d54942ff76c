#!/usr/bin/env bash
# Copies the Reuters-21578 corn and grain ARFF files (ModApte split, as shipped in Debian's weka package's
# examples) into .cache/datasets/reuters, installing weka first when they are missing. Idempotent.
set -euo pipefail

examples=/usr/share/doc/weka/examples
out=${1:-.cache/datasets/reuters}
files=(ReutersCorn-train ReutersCorn-test ReutersGrain-train ReutersGrain-test)

present() { [[ -e "$examples/$1.arff" || -e "$examples/$1.arff.gz" ]]; }

if ! present ReutersCorn-train; then
  bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" weka  # for its Reuters example files
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
