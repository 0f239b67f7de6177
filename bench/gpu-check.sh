#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU and a published influx-cli (no .NET SDK needed):
#   dotnet publish src/InFluxEdit.Cli -c Release -r linux-x64 --self-contained -o OUT
#   bench/gpu-check.sh OUT ../shared/golden
# Runs the golden parity cases on CUDA (float32, then bf16 tensor-core precision, whose error is reported
# against the float32 tolerances for information) and times the forward pass of the mid-size and the real model.
set -u
cli="$1/influx-cli"
golden="$2"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== parity, CUDA, float32"
"$cli" parity "$golden" --device cuda --case flux
"$cli" parity "$golden" --device cuda --case embeddings
echo "== parity, CUDA, bf16 matrix products (information: bf16 rounding exceeds the float32 tolerances)"
"$cli" parity "$golden" --device cuda --precision bf16 --case flux-tiny-forward
echo "== bench: mid-size model"
"$cli" bench forward --device cuda --model flux-mid --baseline none
"$cli" bench forward --device cuda --precision bf16 --model flux-mid --baseline none
echo "== bench: FLUX.1 Fill [dev] at 1024x1024 (4096 image + 512 text tokens), bf16 weights"
"$cli" bench forward --device cuda --precision bf16 --model flux-fill-dev --tokens 4096 --txt-tokens 512 --runs 3 --warmup 1 --baseline none
