#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU and a published influx-cli (no .NET SDK needed):
#   dotnet publish src/InFluxEdit.Cli -c Release -r linux-x64 --self-contained -o OUT
#   bench/gpu-check.sh OUT tests/golden
# Runs every golden parity case on CUDA, trains img_in over a bf16 base (from the repository root: it reads models/toy), then times the forward pass of the mid-size and the real model and a
# whole 1024x1024 edit with the real model's sizes (seeded random weights), a LoRA training step of both, and the
# real model's forward and step with its weight matrices held quantized (Q8_0, Q4_K) on the GPU.
set -u
cli="$1/influx-cli"
golden="$2"
# One row that hangs or runs long must not take the rest of a lent machine's minutes: each gets ROW_SECONDS (default
# 150) and the script goes on, saying which row stopped.
row() { timeout "${ROW_SECONDS:-150}" "$@" || echo "(row stopped with status $?: ${*:2})"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== parity, CUDA, float32"
row "$cli" parity "$golden" --device cuda
echo "== --train-img-in over a bf16 base on CUDA (img_in trained as a float32 master copy beside the bf16 words): 20 toy steps"
work=$(mktemp -d)
row "$cli" convert models/toy/flux1-fill-toy.safetensors "$work/toy-bf16.safetensors" --to bf16 --quiet
row "$cli" dataset circles --out "$work/circles" --count 16 --held-out 0 --size 64 --quiet
row "$cli" train --device cuda --precision bf16 --flux-dir models/toy --weights "$work/toy-bf16.safetensors" --data "$work/circles/train" --method channel --train-img-in --steps 20 --resolution 64 --output "$work/img-in-run"
echo "== bench: mid-size model"
row "$cli" bench forward --device cuda --model flux-mid --baseline none
echo "== bench: FLUX.1 Fill [dev] at 1024x1024 (4096 image + 512 text tokens), bf16 weights"
row "$cli" bench forward --device cuda --precision bf16 --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1 --baseline none --profile
echo "== bench: a whole 1024x1024 channel edit, FLUX.1 Fill [dev] + FLUX VAE sizes, 4 steps"
row "$cli" bench edit --device cuda --precision bf16 --model flux-fill-dev --vae-model flux-vae --width 1024 --height 1024 --steps 4
echo "== bench: LoRA training step, mid-size model (float32) and FLUX.1 Fill [dev] at 1024x1024 (bf16 weights), peak GPU memory"
row "$cli" bench train --device cuda --model flux-mid
row "$cli" bench train --device cuda --precision bf16 --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1
echo "== bench: LoRA training step, FLUX.1 Fill [dev] at 512x512 (1024 image + 512 text tokens), bf16 weights: the 40 GB bar with recomputation"
row "$cli" bench train --device cuda --precision bf16 --model flux-fill-dev --tokens 1024 --txt-tokens 512 --runs 3 --warmup 1
echo "== bench: FLUX.1 Fill [dev] at 1024x1024 with the base held quantized in GPU memory (bf16 precision), beside bf16 weights: forward, then a 512x512 LoRA step (kept and recomputed), each with its peak GPU memory"
for base in bf16 q8_0 q4_k; do
  row "$cli" bench forward --device cuda --precision bf16 --base-precision "$base" --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1 --baseline none
done
for base in q8_0 q4_k; do
  row "$cli" bench train --device cuda --precision bf16 --base-precision "$base" --model flux-fill-dev --tokens 1024 --txt-tokens 512 --runs 3 --warmup 1
done
echo "== bench: --offload, FLUX.1 Fill [dev] at 1024x1024 with its bf16 weights streamed from host memory through a 10 GiB GPU budget (a 24 GB card's share): time and peak GPU memory against the rows above"
row "$cli" bench forward --device cuda --precision bf16 --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1 --baseline none --offload --gpu-memory-budget 10
row "$cli" bench train --device cuda --precision bf16 --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1 --offload --gpu-memory-budget 10
row "$cli" bench forward --device cuda --precision bf16 --base-precision q4_k --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1 --baseline none --offload --gpu-memory-budget 4
echo "== bench: data-parallel LoRA steps over every GPU (NCCL all-reduce), FLUX.1 Fill [dev] at 1024x1024, bf16 weights"
# NCCL from the PyTorch image's nvidia-nccl wheel when no system libnccl2 is installed.
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null) && export LD_LIBRARY_PATH="$nccl_lib:${LD_LIBRARY_PATH:-}"
gpus=$(nvidia-smi -L | wc -l)
if command -v mpirun >/dev/null; then
  row mpirun --allow-run-as-root -np "$gpus" "$cli" bench train --ranks "$gpus" --device cuda --precision bf16 --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1
else
  echo "skipped: no mpirun on this machine (Open MPI: apt-get install openmpi-bin)"
fi
