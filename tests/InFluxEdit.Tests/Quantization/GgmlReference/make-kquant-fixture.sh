#!/usr/bin/env bash
# Regenerates kquants.bin: ggml's own reference K-quantizers (quantize_row_q{2..6}_K_ref) run on the inputs the
# fixture already holds, so QuantizerTests can check our encoders byte for byte against ggml's C without a C
# compiler in CI. The ggml functions are taken from the ggml-quants.c given (never copied into this repository);
# the harness around them is ours. Built without FMA contraction, as ggml's portable reference build is.
#   usage: make-kquant-fixture.sh path/to/ggml/src/ggml-quants.c [inputs.f32]
# Without inputs.f32 the inputs of the existing kquants.bin are reused.
# Fixture layout: int32 block count n, n·256 float32 inputs, then per format (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) its bytes.
set -euo pipefail
source_file=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the C function whose definition starts with a line matching $1, through its closing brace at column 0.
extract() { awk -v start="$1" '$0 ~ start { on = 1 } on { print } on && /^}/ { exit }' "$source_file"; }

{
  cat <<'C'
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <assert.h>
#include <stdbool.h>
#define GGML_RESTRICT restrict
#define QK_K 256
#define K_SCALE_SIZE 12
#define GROUP_MAX_EPS 1e-15f
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
typedef _Float16 half_t;
#define GGML_FP32_TO_FP16(x) ((half_t)(x))
#define GGML_FP16_TO_FP32(x) ((float)(x))
typedef struct { uint8_t scales[QK_K/16]; uint8_t qs[QK_K/4]; half_t d; half_t dmin; } block_q2_K;
typedef struct { uint8_t hmask[QK_K/8]; uint8_t qs[QK_K/4]; uint8_t scales[12]; half_t d; } block_q3_K;
typedef struct { half_t d; half_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K/2]; } block_q4_K;
typedef struct { half_t d; half_t dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K/8]; uint8_t qs[QK_K/2]; } block_q5_K;
typedef struct { uint8_t ql[QK_K/2]; uint8_t qh[QK_K/4]; int8_t scales[QK_K/16]; half_t d; } block_q6_K;
C
  extract '^static inline int nearest_int\('
  extract '^static float make_qx_quants\('
  extract '^static float make_q3_quants\('
  extract '^static float make_qkx2_quants\('
  extract '^static inline void get_scale_min_k4\('
  for type in q2_K q3_K q4_K q5_K q6_K; do extract "^void quantize_row_${type}_ref\\("; done
  cat <<'C'
#define RUN(type) do { block_##type *out = calloc(n, sizeof(block_##type)); \
    quantize_row_##type##_ref(x, out, (int64_t)n * QK_K); fwrite(out, sizeof(block_##type), n, stdout); free(out); } while (0)
int main(int argc, char **argv) {
    FILE *in = fopen(argv[1], "rb");
    fseek(in, 0, SEEK_END); long bytes = ftell(in); fseek(in, 0, SEEK_SET);
    int n = (int)(bytes / (4 * QK_K));
    float *x = malloc(bytes);
    if (fread(x, 4, (size_t)n * QK_K, in) != (size_t)n * QK_K) return 1;
    fwrite(&n, 4, 1, stdout); fwrite(x, 4, (size_t)n * QK_K, stdout);
    RUN(q2_K); RUN(q3_K); RUN(q4_K); RUN(q5_K); RUN(q6_K);
    return 0;
}
C
} > "$work/reference.c"
gcc -O2 -std=gnu11 -ffp-contract=off -fno-fast-math -o "$work/reference" "$work/reference.c" -lm

inputs=${2:-}
if [ -z "$inputs" ]; then
  inputs=$work/inputs.f32
  python3 - "$here/kquants.bin" "$inputs" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
n = struct.unpack_from('<i', data)[0]
open(sys.argv[2], 'wb').write(data[4:4 + n * 1024])
PY
fi
"$work/reference" "$inputs" > "$here/kquants.bin.tmp"
mv "$here/kquants.bin.tmp" "$here/kquants.bin"
