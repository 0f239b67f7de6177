#!/usr/bin/python3
"""PyTorch CPU baseline for `influx-cli bench forward` (OPTIONAL; never needed to build or test).

Runs the FLUX transformer forward (docs: /work/shared/spec/flux-fill.md section 2) in float32
torch on the CPU and prints ONE JSON line on stdout:

  {"median_ms": ..., "runs_ms": [...], "threads": ..., "torch": "1.13...", "blas": "openblas",
   "gemm_gflops_1024": ..., ...}          (+ "check_rel_l2" with --check)

Dependencies: torch + numpy only (Debian 12: python3-torch, libopenblas0-pthread; see
bench/install-pytorch-baseline.sh). Run it with Debian's /usr/bin/python3.

  /usr/bin/python3 bench/pytorch_flux_forward.py --weights W.safetensors --img-tokens N --txt-tokens M
  /usr/bin/python3 bench/pytorch_flux_forward.py --weights flux-tiny.safetensors \
      --check flux-tiny-forward.safetensors        # correctness: rel L2 vs expected.out

With --check the timed inputs are the ones from the check file (--img-tokens/--txt-tokens/--batch
are then ignored). Exit status: 0 ok, 2 bad arguments/inputs, 3 torch or numpy missing.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="BFL-named safetensors, config JSON in __metadata__['config']")
    p.add_argument("--img-tokens", type=int, help="image tokens N (required unless --check)")
    p.add_argument("--txt-tokens", type=int, help="text tokens M (required unless --check)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="keep glibc's default of mmap()ing every large block (fresh page faults per tensor)")
    p.add_argument("--check", metavar="INPUTS.safetensors",
                   help="run img,img_ids,txt,txt_ids,timesteps,y,guidance from this file; compare with expected.out")
    a = p.parse_args(argv)
    if not a.check and (a.img_tokens is None or a.txt_tokens is None):
        p.error("--img-tokens and --txt-tokens are required unless --check is given")
    if a.threads < 1 or a.batch < 1 or a.runs < 1 or a.warmup < 0:
        p.error("--threads, --batch, --runs must be >= 1 and --warmup >= 0")
    return a


def fail(code, msg):
    print(json.dumps({"error": msg}), flush=True)
    print("pytorch_flux_forward: " + msg, file=sys.stderr)
    sys.exit(code)


args = parse_args(sys.argv[1:])
# Thread counts must be fixed before torch (and the BLAS it loads) starts its pools. Debian's torch
# calls OpenBLAS through the generic libblas.so.3 interface, so torch.set_num_threads() alone does
# not limit the GEMM threads; OPENBLAS_NUM_THREADS does.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)
# torch's OpenMP pool (elementwise ops) and OpenBLAS's own pthread pool (GEMMs) share the cores. By
# default both busy-wait after finishing (OpenBLAS for ~2^28 cycles), stealing the cores from the other
# pool's next op; on 2 cores the mid-size forward took ~1.4 s instead of ~0.75 s. Let idle threads sleep
# (the environment can still override either setting).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # minimum: spin 2^4 cycles, then sleep


def tune_malloc():
    """Keep freed tensor memory in the process. glibc mmap()s every block over 32 MiB (attention scores,
    MLP activations) and unmaps it on free, so each such tensor is page-faulted in afresh; in a VM that
    reports freed pages to the host this cost 30x the arithmetic of an elementwise op (300 ms vs 8 ms for
    a 42 MB multiply). M_MMAP_MAX=0 serves large blocks from the heap; M_TRIM_THRESHOLD=INT_MAX keeps it."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-4, 0) and libc.mallopt(-1, 2 ** 31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        return False


MALLOC_TUNED = False if args.no_malloc_tuning else tune_malloc()

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # optional baseline: say so clearly, the CLI carries on without it
    fail(3, "torch/numpy not importable by %s (%s); run bench/install-pytorch-baseline.sh and use /usr/bin/python3"
         % (sys.executable, e))


# ----------------------------------------------------------------------------------------------
# safetensors reader: 8-byte LE header length, JSON header, raw little-endian data
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def load_safetensors(path):
    """Returns (dict name -> float32 torch tensor, metadata dict)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = bytearray(f.read())  # writable buffer, so torch.from_numpy gets writable arrays
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _DTYPES:
            raise ValueError("%s: unsupported dtype %s" % (name, dt))
        b, e = info["data_offsets"]
        a = np.frombuffer(data, dtype=_DTYPES[dt], count=(e - b) // np.dtype(_DTYPES[dt]).itemsize, offset=b)
        if dt == "BF16":  # bf16 is the upper half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif dt != "F32":
            a = a.astype(np.float32)
        out[name] = torch.from_numpy(a.reshape(info["shape"]))
    return out, meta


# ----------------------------------------------------------------------------------------------
# FLUX transformer, float32 (spec section 2)
class Flux:
    def __init__(self, w, cfg):
        self.w = w
        self.cfg = cfg
        self.D = cfg["hidden_size"]
        self.H = cfg["num_heads"]
        self.Dh = self.D // self.H
        self.axes_dim = list(cfg["axes_dim"])
        self.theta = cfg.get("theta", 10000)
        if sum(self.axes_dim) != self.Dh:
            raise ValueError("sum(axes_dim) %s != head dim %d" % (self.axes_dim, self.Dh))
        self.have_sdpa = hasattr(F, "scaled_dot_product_attention")

    def lin(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))

    def mlp_embed(self, x, name):
        return self.lin(F.silu(self.lin(x, name + ".in_layer")), name + ".out_layer")

    @staticmethod
    def tsemb(t, dim=256, max_period=10000, time_factor=1000.0):
        # computed in float64 (the golden reference is float64); cos first, then sin
        t = time_factor * t.double()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        arg = t[:, None] * freqs[None]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1).float()

    def rope(self, ids):
        """ids [B, L, 3] -> (cos, sin) each [B, 1, L, Dh/2] float32; per-axis frequencies, axis 0 first."""
        angles = []
        for i, d in enumerate(self.axes_dim):
            scale = torch.arange(0, d, 2, dtype=torch.float64) / d
            omega = 1.0 / (self.theta ** scale)
            angles.append(ids[..., i].double()[..., None] * omega)
        ang = torch.cat(angles, dim=-1)[:, None]
        return torch.cos(ang).float(), torch.sin(ang).float()

    @staticmethod
    def apply_rope(x, pe):
        cos, sin = pe  # x [B, H, L, Dh]; rotates interleaved pairs (2p, 2p+1)
        xr = x.reshape(*x.shape[:-1], -1, 2)
        x0, x1 = xr[..., 0], xr[..., 1]
        return torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1).reshape(x.shape)

    @staticmethod
    def rms(x, scale):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * scale

    def ln(self, x):
        return F.layer_norm(x, (self.D,), eps=1e-6)

    def split_qkv(self, qkv, qn, kn):
        B, L, _ = qkv.shape
        q, k, v = qkv.view(B, L, 3, self.H, self.Dh).permute(2, 0, 3, 1, 4)  # each [B, H, L, Dh]
        return self.rms(q, self.w[qn]), self.rms(k, self.w[kn]), v

    def attention(self, q, k, v, pe):
        q, k = self.apply_rope(q, pe), self.apply_rope(k, pe)
        B, H, L, Dh = q.shape
        if self.have_sdpa:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            # 3-D bmm on contiguous [B*H, L, Dh]: torch 1.13's 4-D matmul on these views is ~5x slower
            q = q.reshape(B * H, L, Dh) * (1.0 / math.sqrt(Dh))
            k, v = k.reshape(B * H, L, Dh), v.reshape(B * H, L, Dh)
            a = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v).view(B, H, L, Dh)
        return a.permute(0, 2, 1, 3).reshape(B, L, H * Dh)

    def double_block(self, i, img, txt, svec, pe):
        p = "double_blocks.%d." % i
        Lt = txt.shape[1]
        mods, qs, ks, vs = {}, [], [], []
        for s, x in (("txt", txt), ("img", img)):  # text first in the joint sequence
            m = self.lin(svec, p + s + "_mod.lin")[:, None].chunk(6, dim=-1)  # shift1 scale1 gate1 shift2 scale2 gate2
            mods[s] = m
            xs = (1 + m[1]) * self.ln(x) + m[0]
            q, k, v = self.split_qkv(self.lin(xs, p + s + "_attn.qkv"),
                                     p + s + "_attn.norm.query_norm.scale", p + s + "_attn.norm.key_norm.scale")
            qs.append(q), ks.append(k), vs.append(v)
        a = self.attention(torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2), pe)
        out = {}
        for s, x, att in (("txt", txt, a[:, :Lt]), ("img", img, a[:, Lt:])):
            m = mods[s]
            x = x + m[2] * self.lin(att, p + s + "_attn.proj")
            h = (1 + m[4]) * self.ln(x) + m[3]
            h = self.lin(F.gelu(self.lin(h, p + s + "_mlp.0"), approximate="tanh"), p + s + "_mlp.2")
            out[s] = x + m[5] * h
        return out["img"], out["txt"]

    def single_block(self, i, x, svec, pe):
        p = "single_blocks.%d." % i
        shift, scale, gate = self.lin(svec, p + "modulation.lin")[:, None].chunk(3, dim=-1)
        xm = (1 + scale) * self.ln(x) + shift
        h = self.lin(xm, p + "linear1")
        qkv, mlp = h[..., :3 * self.D], h[..., 3 * self.D:]
        q, k, v = self.split_qkv(qkv, p + "norm.query_norm.scale", p + "norm.key_norm.scale")
        a = self.attention(q, k, v, pe)
        return x + gate * self.lin(torch.cat([a, F.gelu(mlp, approximate="tanh")], dim=-1), p + "linear2")

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None):
        img = self.lin(img, "img_in")
        vec = self.mlp_embed(self.tsemb(timesteps), "time_in")
        if self.cfg.get("guidance_embed", False):
            if guidance is None:
                raise ValueError("guidance_embed model needs a guidance input")
            vec = vec + self.mlp_embed(self.tsemb(guidance), "guidance_in")
        vec = vec + self.mlp_embed(y, "vector_in")
        txt = self.lin(txt, "txt_in")
        pe = self.rope(torch.cat([txt_ids, img_ids], dim=1))
        svec = F.silu(vec)  # every modulation consumer applies SiLU(vec)
        for i in range(self.cfg["depth"]):
            img, txt = self.double_block(i, img, txt, svec, pe)
        Lt = txt.shape[1]
        x = torch.cat([txt, img], dim=1)
        for i in range(self.cfg["depth_single_blocks"]):
            x = self.single_block(i, x, svec, pe)
        img = x[:, Lt:]
        shift, scale = self.lin(svec, "final_layer.adaLN_modulation.1")[:, None].chunk(2, dim=-1)  # (shift, scale)
        return self.lin((1 + scale) * self.ln(img) + shift, "final_layer.linear")


# ----------------------------------------------------------------------------------------------
def square_ish(n):
    h = int(math.isqrt(n))
    while n % h:
        h -= 1
    return h, n // h


def random_inputs(cfg, B, N, M, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = square_ish(N)
    i = torch.arange(N)
    ids = torch.stack([torch.zeros(N), (i // w).float(), (i % w).float()], dim=-1)
    return {
        "img": torch.randn(B, N, cfg["in_channels"], generator=g),
        "img_ids": ids[None].expand(B, N, 3).contiguous(),
        "txt": torch.randn(B, M, cfg["context_in_dim"], generator=g),
        "txt_ids": torch.zeros(B, M, 3),
        "timesteps": torch.rand(B, generator=g),
        "y": torch.randn(B, cfg["vec_in_dim"], generator=g),
        "guidance": torch.full((B,), 30.0),
    }


def gemm_gflops(n=1024, reps=7):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.matmul(a, b)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        ts.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(ts) / 1e9


def blas_name():
    info = torch.__config__.show()
    for line in info.split(","):
        if "BLAS_INFO=" in line:
            v = line.split("=", 1)[1].strip().lower()
            if v and v != "generic":
                return v
    # generic build (Debian): whatever libblas.so.3 resolves to; look at the mapped libraries
    try:
        with open("/proc/self/maps") as f:
            libs = {l.split()[-1] for l in f if ".so" in l}
    except OSError:
        return "unknown"
    for key, name in (("openblas", "openblas"), ("mkl", "mkl"), ("blis", "blis"), ("atlas", "atlas")):
        if any(key in os.path.basename(os.path.dirname(p)) + os.path.basename(p) for p in libs):
            return name
    if any("/blas/libblas.so" in p for p in libs):
        return "reference"
    return "unknown"


def blas_kernel():
    """Which BLAS library and which of its kernels run the products (OpenBLAS picks one per CPU unless
    OPENBLAS_CORETYPE forces one): threadpoolctl's report when it is installed (Debian: python3-threadpoolctl),
    else OpenBLAS's own openblas_get_corename() from the library torch mapped. None when neither can tell."""
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                return {"library": pool.get("internal_api"), "version": pool.get("version"),
                        "kernel": pool.get("architecture"), "threads": pool.get("num_threads"), "via": "threadpoolctl"}
    except ImportError:
        pass
    try:
        import ctypes
        with open("/proc/self/maps") as f:
            libs = sorted({l.split()[-1] for l in f if "openblas" in l and ".so" in l})
        for path in libs:
            lib = ctypes.CDLL(path)
            if hasattr(lib, "openblas_get_corename"):
                lib.openblas_get_corename.restype = ctypes.c_char_p
                return {"library": "openblas", "kernel": lib.openblas_get_corename().decode(), "via": "openblas_get_corename"}
    except OSError:
        pass
    return None


def main():
    torch.set_num_threads(args.threads)
    try:
        w, meta = load_safetensors(args.weights)
        cfg = json.loads(meta["config"])
    except (OSError, ValueError, KeyError) as e:
        fail(2, "cannot read weights %s: %r" % (args.weights, e))
    model = Flux(w, cfg)

    expected = None
    if args.check:
        try:
            data, _ = load_safetensors(args.check)
            inputs = {k: data[k] for k in ("img", "img_ids", "txt", "txt_ids", "timesteps", "y")}
            inputs["guidance"] = data.get("guidance")
            expected = data["expected.out"]
        except (OSError, ValueError, KeyError) as e:
            fail(2, "cannot read check inputs %s: %r" % (args.check, e))
    else:
        inputs = random_inputs(cfg, args.batch, args.img_tokens, args.txt_tokens, args.seed)

    with torch.inference_mode():
        gflops = gemm_gflops()
        out = None
        for _ in range(args.warmup):
            out = model.forward(**inputs)
        runs = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = model.forward(**inputs)
            runs.append((time.perf_counter() - t0) * 1e3)

    B, N = inputs["img"].shape[:2]
    res = {
        "median_ms": round(statistics.median(runs), 3),
        "runs_ms": [round(r, 3) for r in runs],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": blas_name(),
        "blas_kernel": blas_kernel(),
        "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
        "gemm_gflops_1024": round(gflops, 1),
        "batch": int(B),
        "img_tokens": int(N),
        "txt_tokens": int(inputs["txt"].shape[1]),
        "attention": "sdpa" if model.have_sdpa else "matmul_softmax",
        "dtype": "float32",
        "malloc_tuned": MALLOC_TUNED,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "openblas_thread_timeout": os.environ["OPENBLAS_THREAD_TIMEOUT"],
    }
    if expected is not None:
        ref = expected.double()
        res["check_rel_l2"] = float(torch.linalg.norm(out.double() - ref) / torch.linalg.norm(ref))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
