#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, from `cargo run -p artstore-operator --bin crdgen`)
# into the chart. The test `chart_crds_equal_the_generated_crds` fails when they differ.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/charts/artstore-operator/crds"
mkdir -p "$dest"
rm -f "$dest"/*.yaml
cp "$root"/crds/*.yaml "$dest"/
files=("$root"/crds/*.yaml)
echo "copied ${#files[@]} CRDs into ${dest#"$root"/}"
