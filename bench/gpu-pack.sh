#!/usr/bin/env bash
# Packs what bench/gpu-check.sh needs on a GPU machine that has no .NET SDK (the PyTorch image): a self-contained
# linux-x64 publish of influx-cli (it carries models/toy and bench/pytorch_flux_forward.py) and the bench scripts, as
# one .tar.xz under artifacts/ (ignored by git). A device call carries the repository's tracked files (the goldens
# among them, ~26 MB) plus what it names, 64 MiB in all, so the pack leaves out the goldens and the runtime's
# debugger and alternative-GC libraries: about 34 MiB. --with-goldens adds tests/golden for a machine without the tree.
#   bench/gpu-pack.sh [--with-goldens]     # → artifacts/gpu-pack/influx-gpu.tar.xz
# Then, from the repository root on the GPU machine (the device tool: carry ["artifacts/gpu-pack"], timeout_s 600):
#   mkdir -p /tmp/g && tar -xJf artifacts/gpu-pack/influx-gpu.tar.xz -C /tmp/g && RESULTS=/tmp/g/results PYTHONUNBUFFERED=1 /tmp/g/bench/gpu-check.sh /tmp/g/publish tests/golden 2>&1 | tee $OUT/gpu-check.log; tar -czf $OUT/results.tar.gz -C /tmp/g results
# gpu-check.sh keeps itself inside CHECK_SECONDS (default 540) and ends with its table; the rows' JSON come back in results.tar.gz.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/artifacts/gpu-pack"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rm -rf "$out"
mkdir -p "$out" "$stage/bench"
dotnet publish "$root/src/InFluxEdit.Cli" -c Release -r linux-x64 --self-contained -o "$stage/publish" -v q -nologo
# Only a debugger or another garbage collector loads these; influx-cli runs without them.
rm -f "$stage/publish/"{libclrgc.so,libclrgcexp.so,libmscordaccore.so,libmscordbi.so,createdump}
cp "$root/bench/gpu-check.sh" "$root/bench/gpu_table.py" "$root/bench/pytorch_flux_forward.py" "$stage/bench/"
parts=(publish bench)
if [ "${1:-}" = --with-goldens ]; then
  mkdir -p "$stage/tests" && cp -r "$root/tests/golden" "$stage/tests/golden" && parts+=(tests)
fi
XZ_OPT=-9eT0 tar -cJf "$out/influx-gpu.tar.xz" -C "$stage" "${parts[@]}"
size=$(stat -c %s "$out/influx-gpu.tar.xz")
echo "$out/influx-gpu.tar.xz: $((size / 1048576)) MiB"
if [ "$size" -ge $((64 * 1048576)) ]; then
  echo "error: the pack is over the 64 MiB a device call carries; leave out what gpu-check.sh does not read" >&2
  exit 1
fi
