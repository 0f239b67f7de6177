#!/usr/bin/env bash
# Packs what bench/gpu-check.sh needs on a GPU machine that has no .NET SDK (the PyTorch image): a self-contained
# linux-x64 publish of influx-cli (it carries bench/pytorch_flux_forward.py), the golden cases, models/toy and the
# bench scripts, as one .tar.xz under artifacts/ (ignored by git), kept under the 64 MiB a lent machine's call carries.
#   bench/gpu-pack.sh                      # → artifacts/gpu-pack/influx-gpu.tar.xz
# Then, on the GPU machine (the device tool: carry ["artifacts/gpu-pack"], timeout_s 600), the one command:
#   mkdir -p /tmp/g && tar -xJf artifacts/gpu-pack/influx-gpu.tar.xz -C /tmp/g && cd /tmp/g && RESULTS=/tmp/g/results PYTHONUNBUFFERED=1 bench/gpu-check.sh publish tests/golden 2>&1 | tee $OUT/gpu-check.log; tar -czf $OUT/results.tar.gz -C /tmp/g results
# gpu-check.sh keeps itself inside CHECK_SECONDS (default 540) and ends with its table; the rows' JSON come back in results.tar.gz.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/gpu-pack"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rm -rf "$out"
mkdir -p "$out" "$stage/bench" "$stage/tests" "$stage/models"
dotnet publish "$root/src/InFluxEdit.Cli" -c Release -r linux-x64 --self-contained -o "$stage/publish" -v q -nologo
cp -r "$root/tests/golden" "$stage/tests/golden"
cp -r "$root/models/toy" "$stage/models/toy"
cp "$root/bench/gpu-check.sh" "$root/bench/gpu_table.py" "$root/bench/pytorch_flux_forward.py" "$stage/bench/"
XZ_OPT=-6T0 tar -cJf "$out/influx-gpu.tar.xz" -C "$stage" publish tests models bench
size=$(stat -c %s "$out/influx-gpu.tar.xz")
echo "$out/influx-gpu.tar.xz: $((size / 1048576)) MiB"
if [ "$size" -ge $((64 * 1048576)) ]; then
  echo "error: the pack is over the 64 MiB a device call carries; leave out what gpu-check.sh does not read" >&2
  exit 1
fi
