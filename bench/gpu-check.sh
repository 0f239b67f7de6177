#!/usr/bin/env bash
# The CUDA checks of issue 11, for a machine with an NVIDIA GPU, a self-contained influx-cli publish and the PyTorch
# image (python3 with torch 2.x; no .NET SDK needed). The toy model comes from PUBLISH_DIR/models/toy (a publish
# carries it), else from ./models/toy. bench/gpu-pack.sh packs the publish and gives the one command that runs this:
#   bench/gpu-check.sh PUBLISH_DIR GOLDEN_DIR            # e.g. the unpacked pack's publish/ and the tree's tests/golden
#   bench/gpu-check.sh PUBLISH_DIR GOLDEN_DIR --dry-cpu  # the same rows at tiny sizes on the CPU: tests the table
# Each row runs with --json (its usual lines on stderr, one JSON object on stdout into RESULTS/NN.json) under a
# timeout, and the script ends with ONE table built from those objects by bench/gpu_table.py:
#   row | ours | baseline | ratio or figure | bar | ok?
# Rows come in priority order for a 10-minute window: doctor (every kernel built by the driver), the 1024² bf16
# forward against PyTorch eager bf16 (with the products' and attention's TFLOP/s), parity on CUDA in float32 and bf16,
# the 1024² LoRA step against PyTorch (kept and recomputed), the 50-step 1024² edit, the quantized and offloaded rows,
# then the rest.
# Environment: ROW_SECONDS (default 150) bounds each row; CHECK_SECONDS (default 540) bounds the whole script: a row
# that would not finish inside it is listed as skipped, so the table is always printed; RESULTS (default: a new
# temporary folder) keeps the JSON objects (point it under $OUT to bring them back); PYTHON: the Python with torch.
set -u
publish=$1
golden=$2
dry=${3:-}
cli="$publish/influx-cli"
toy=models/toy
[ -f "$publish/models/toy/flux1-fill-toy.safetensors" ] && toy="$publish/models/toy"
here=$(cd "$(dirname "$0")" && pwd)
results=${RESULTS:-$(mktemp -d)}
mkdir -p "$results"
: > "$results/rows.tsv"
python=${PYTHON:-$(command -v python3)}
budget=${CHECK_SECONDS:-540}
started=$SECONDS
count=0

# row NAME BARS -- COMMAND...: runs COMMAND --json into RESULTS/NN.json and records the row for the table. BARS says
# what the table reads and judges (bench/gpu_table.py): e.g. forward:ratio=0.55,products=650,attention=450.
row() {
  local name=$1 bars=$2
  shift 3
  count=$((count + 1))
  local out
  out="$results/$(printf %02d "$count").json"
  local left=$((budget - (SECONDS - started)))
  local limit=${ROW_SECONDS:-150}
  if [ "$left" -lt 20 ]; then
    printf '%s\t%s\t%s\t%s\n' "$name" "$bars" "$out" "skipped" >> "$results/rows.tsv"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name"
  # influx-cli prints its JSON with --json; pytorch_flux_forward.py (the check rows) always prints its own line.
  local json=(--json)
  [ "${bars%%:*}" = check ] && json=()
  timeout "$limit" "$@" "${json[@]}" > "$out"
  local status=$?
  [ "$status" -ne 0 ] && echo "(row stopped with status $status: $name)"
  printf '%s\t%s\t%s\t%s\n' "$name" "$bars" "$out" "$status" >> "$results/rows.tsv"
}

# The sizes: the real model at 1024² on a GPU; with --dry-cpu the tiny model on the CPU, every row otherwise the same.
if [ "$dry" = "--dry-cpu" ]; then
  device=cpu
  big=(--model flux-fill-tiny --tokens 64 --txt-tokens 16)
  half=(--model flux-fill-tiny --tokens 16 --txt-tokens 16)
  mid=(--model flux-fill-tiny)
  vae=(--model flux-fill-toy --vae-model flux-vae-toy --clip-model clip-tiny --t5-model t5-tiny --width 64 --height 64)
else
  device=cuda
  big=(--model flux-fill-dev --tokens 4096 --txt-tokens 512)
  half=(--model flux-fill-dev --tokens 1024 --txt-tokens 512)
  mid=(--model flux-mid)
  vae=(--model flux-fill-dev --vae-model flux-vae --clip-model clip-l --t5-model t5-xxl --width 1024 --height 1024)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
timed=(--runs 3 --warmup 1)
echo "results in $results; PyTorch baseline: $python"

# First: every kernel built by the driver up front, so a kernel the JIT rejects is named with ptxas's message (its
# registers and spills too) instead of failing deep inside a row below. Seconds; on the CPU it says there is no GPU.
row "doctor: every kernel built by the driver" doctor -- "$cli" doctor --kernels

row "forward 1024² bf16 vs PyTorch eager bf16" forward:ratio=0.55,products=650,attention=450 -- \
  "$cli" bench forward --device $device --precision bf16 "${big[@]}" "${timed[@]}" --baseline auto --python "$python" --profile

# The row above runs --attention auto: the flash kernel in bf16. The same forward and step with the cuBLAS attention
# (two bf16 strided-batched products around a float32 softmax) say what flash gains, in the same run.
if [ "$device" = cuda ]; then
  row "forward 1024² bf16, cuBLAS attention" forward:attention=450 -- \
    "$cli" bench forward --device $device --precision bf16 "${big[@]}" "${timed[@]}" --attention cublas --baseline none --profile
fi

row "parity $device fp32 (manifest tolerances)" parity -- "$cli" parity "$golden" --device $device --precision fp32
row "parity $device bf16" parity:rel=1e-2 -- "$cli" parity "$golden" --device $device --precision bf16

# The baseline's own numerics on this GPU: its forward of the golden tiny case against the float64 reference.
for dtype in fp32 bf16; do
  row "PyTorch baseline --check, $device $dtype" check -- "$python" "$here/pytorch_flux_forward.py" --device $device --dtype $dtype \
    --weights "$golden/flux-tiny.safetensors" --check "$golden/flux-tiny-forward.safetensors" --runs 1 --warmup 0
done

row "LoRA step 1024² bf16 vs PyTorch" train:kept_s=0.45,recompute_s=0.60,recompute_gb=30 -- \
  "$cli" bench train --device $device --precision bf16 "${big[@]}" "${timed[@]}" --baseline auto --python "$python"

if [ "$device" = cuda ]; then
  row "LoRA step 1024² bf16, cuBLAS attention" train -- \
    "$cli" bench train --device $device --precision bf16 "${big[@]}" "${timed[@]}" --attention cublas --baseline none
fi

row "edit 1024², 50 steps, CLIP-L and T5-XXL included" edit:s=8 -- \
  "$cli" bench edit --device $device --precision bf16 "${vae[@]}" --steps 50

for base in q8_0 q4_k; do
  row "forward 1024² base $base" forward -- \
    "$cli" bench forward --device $device --precision bf16 --base-precision "$base" "${big[@]}" "${timed[@]}" --baseline none
done
for base in q8_0 q4_k; do
  row "LoRA step 512² base $base" train -- \
    "$cli" bench train --device $device --precision bf16 --base-precision "$base" "${half[@]}" "${timed[@]}" --baseline none
done
row "forward 1024² --offload, 10 GiB budget" forward -- \
  "$cli" bench forward --device $device --precision bf16 "${big[@]}" "${timed[@]}" --baseline none --offload --gpu-memory-budget 10
row "LoRA step 1024² --offload, 10 GiB budget" train -- \
  "$cli" bench train --device $device --precision bf16 "${big[@]}" "${timed[@]}" --baseline none --offload --gpu-memory-budget 10
row "forward 1024² q4_k --offload, 4 GiB budget" forward -- \
  "$cli" bench forward --device $device --precision bf16 --base-precision q4_k "${big[@]}" "${timed[@]}" --baseline none --offload --gpu-memory-budget 4

row "LoRA step 512² bf16 (the 40 GB bar with recomputation)" train:recompute_gb=40 -- \
  "$cli" bench train --device $device --precision bf16 "${half[@]}" "${timed[@]}" --baseline none
row "forward, mid-size fp32" forward -- "$cli" bench forward --device $device --precision fp32 "${mid[@]}" --baseline none
row "LoRA step, mid-size fp32" train -- "$cli" bench train --device $device --precision fp32 "${mid[@]}" --baseline none

# --train-img-in over a bf16 base: img_in trained as a float32 master copy beside the bf16 words, 20 toy steps.
work=$(mktemp -d)
row "convert toy to bf16" run -- "$cli" convert "$toy/flux1-fill-toy.safetensors" "$work/toy-bf16.safetensors" --to bf16
row "toy dataset" run -- "$cli" dataset circles --out "$work/circles" --count 16 --held-out 0 --size 64
row "train --train-img-in over a bf16 base, 20 steps" run -- \
  "$cli" train --device $device --precision bf16 --flux-dir "$toy" --weights "$work/toy-bf16.safetensors" --data "$work/circles/train" \
  --method channel --train-img-in --steps 20 --resolution 64 --output "$work/img-in-run"

# Data-parallel LoRA steps over every GPU (NCCL all-reduce); NCCL from the PyTorch image's wheel when no libnccl2.
if [ "$device" = cuda ] && command -v mpirun >/dev/null; then
  nccl_lib=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null) \
    && export LD_LIBRARY_PATH="$nccl_lib:${LD_LIBRARY_PATH:-}"
  gpus=$(nvidia-smi -L | wc -l)
  row "data-parallel LoRA step 1024², $gpus GPUs" train -- \
    mpirun --allow-run-as-root -np "$gpus" "$cli" bench train --ranks "$gpus" --device cuda --precision bf16 "${big[@]}" "${timed[@]}"
else
  echo "data-parallel row skipped: no GPU or no mpirun (Open MPI: apt-get install openmpi-bin)"
fi

echo
[ "$dry" = "--dry-cpu" ] && echo "dry run on the CPU at tiny sizes (the row names give the GPU sizes): it checks the rows and the table, not the bars"
"$python" "$here/gpu_table.py" "$results/rows.tsv"
