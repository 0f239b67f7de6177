#!/bin/sh
# Installs the OPTIONAL PyTorch CPU baseline used by `influx-cli bench forward`
# (bench/pytorch_flux_forward.py). Nothing in the build or the tests needs it.
#
# Debian 12 packages: python3-torch (1.13) + libopenblas0-pthread (+ python3-threadpoolctl,
# which reports the BLAS kernel in use). Without
# OpenBLAS, Debian's torch falls back to the reference BLAS (~4 GFLOP/s), which
# would make the comparison meaningless. The packages install for Debian's
# /usr/bin/python3, so the baseline must be run with /usr/bin/python3 (not a
# pyenv/venv python3 that may come first on PATH).
#
# Idempotent: packages already installed are left alone; apt-get update runs
# only when something is missing. Needs root (or sudo).
set -eu

PKGS="python3-torch python3-numpy libopenblas0-pthread python3-threadpoolctl"

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-pytorch-baseline: need root (or sudo) to run apt-get" >&2; exit 1
    fi
fi

missing=""
for p in $PKGS; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        echo "already installed: $p $(dpkg-query -W -f='${Version}' "$p")"
    else
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "installing:$missing"
    $SUDO apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
    for p in $missing; do
        echo "installed: $p $(dpkg-query -W -f='${Version}' "$p")"
    done
else
    echo "nothing to install"
fi

# Make sure the OpenBLAS alternative backs libblas.so.3 (what torch links against).
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    if update-alternatives --query "$alt" >/dev/null 2>&1; then
        echo "$alt -> $(update-alternatives --query "$alt" | sed -n 's/^Value: //p')"
    fi
done

# torch.__config__.show() of Debian's build says BLAS_INFO=generic (it links libblas.so.3), so also
# report which BLAS library the process actually mapped.
/usr/bin/python3 - <<'PY'
import os, re, time, torch
torch.set_num_threads(os.cpu_count() or 1)
m = re.search(r"BLAS_INFO=([^,]*)", torch.__config__.show())
print("torch.__config__: BLAS_INFO=%s" % (m.group(1) if m else "?"))
torch.manual_seed(0)
a = torch.randn(1024, 1024); b = torch.randn(1024, 1024)
for _ in range(3): a @ b
ts = []
for _ in range(9):
    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
ts.sort()
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.lower()})
print("BLAS mapped in process: %s" % (", ".join(libs) or "none"))
print("torch %s, threads %d, 1024^3 fp32 matmul %.1f GFLOP/s (median of 9; shared machines vary)"
      % (torch.__version__, torch.get_num_threads(), 2 * 1024**3 / ts[len(ts) // 2] / 1e9))
if not any("openblas" in l for l in libs):
    print("WARNING: OpenBLAS is not the BLAS torch uses; expect ~4 GFLOP/s "
          "(check: update-alternatives --display libblas.so.3-x86_64-linux-gnu)")
PY
