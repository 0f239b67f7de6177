#!/usr/bin/env bash
# Fuzzes one reader with AFL++ for a while: tests/Fuzz/run.sh TARGET SECONDS
#   TARGET: safetensors, lora, schema, clip-tokenizer, spm-tokenizer, image, gguf (see FuzzTargets.cs)
# Builds the harness into tests/Fuzz/out (git-ignored), instruments the assemblies under test with SharpFuzz, starts
# from tests/fuzz-corpus/TARGET, and afterwards copies every crash and hang there (crash-*, hang-*) and prints the
# execution count, and keeps the new coverage: the queue minimised by afl-cmin, inputs of at most 64 KiB, named corpus-SHA.
set -euo pipefail
target=${1:?usage: run.sh TARGET SECONDS}
seconds=${2:?usage: run.sh TARGET SECONDS}
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/tests/Fuzz/out"
corpus="$root/tests/fuzz-corpus/$target"
[ -d "$corpus" ] || { echo "no corpus folder $corpus: unknown target '$target'" >&2; exit 2; }

if ! command -v afl-fuzz >/dev/null; then
    apt-get update -qq && apt-get install -y -qq afl++ >/dev/null
fi
if [ ! -x "$out/tools/sharpfuzz" ]; then
    dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$out/tools" >/dev/null
fi

# Instrumentation rewrites assemblies in place, and MSBuild's incremental copy may put back an uninstrumented one with
# its old timestamp: so build into a folder of its own and instrument a fresh copy every run.
dotnet build "$root/tests/Fuzz/InFluxEdit.Fuzz.csproj" -c Release -o "$out/build" -v q -nologo >/dev/null
rm -rf "$out/bin"
cp -r "$out/build" "$out/bin"
for assembly in InFluxEdit.Runtime.dll InFluxEdit.Generator.dll SixLabors.ImageSharp.dll; do
    "$out/tools/sharpfuzz" "$out/bin/$assembly" >/dev/null
done

findings="$out/findings/$target"
rm -rf "$findings"
mkdir -p "$findings"
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# -t: the .NET fork server's first executions JIT everything; 5 s is a hang, not a slow start. -m none: the CLR
# reserves far more address space than it uses.
harness=("$(command -v dotnet)" "$out/bin/InFluxEdit.Fuzz.dll" "$target")
afl-fuzz -i "$corpus" -o "$findings" -V "$seconds" -t 5000 -m none -- "${harness[@]}" \
    > "$findings/afl.log" 2>&1 || { tail -30 "$findings/afl.log" >&2; exit 1; }

stats="$findings/default/fuzzer_stats"
for kind in crashes hangs; do
    for file in "$findings/default/$kind"/id:*; do
        [ -f "$file" ] || continue
        name=${kind%s}; name=${name%e}   # crashes -> crash, hangs -> hang
        cp "$file" "$corpus/$name-$(sha1sum "$file" | cut -c1-12)"
    done
done
known=$(sha1sum "$corpus"/* | cut -c1-40)
afl-cmin -i "$findings/default/queue" -o "$findings/minimised" -t 5000 -m none -- "${harness[@]}" > "$findings/cmin.log" 2>&1
for file in "$findings/minimised"/*; do
    sha=$(sha1sum "$file" | cut -c1-40)
    if [ "$(stat -c %s "$file")" -le 65536 ] && ! grep -q "$sha" <<< "$known"; then
        cp "$file" "$corpus/corpus-${sha:0:12}"
    fi
done
grep -E '^(execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|run_time) ' "$stats"
