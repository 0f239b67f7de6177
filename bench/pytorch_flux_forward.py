#!/usr/bin/python3
"""PyTorch baseline for `influx-cli bench forward` and `bench train` (OPTIONAL; never needed to build or test).

Runs the FLUX transformer (docs: /work/shared/spec/flux-fill.md section 2) in eager PyTorch, as diffusers runs it:
on the CPU or a CUDA GPU, float32 or bf16 throughout (weights and activations; norms' statistics, RoPE and the
timestep embeddings in float32), scaled_dot_product_attention where torch >= 2.0 has it, bmm + softmax + bmm
otherwise. Prints ONE JSON line on stdout:

  {"mode": "forward", "median_ms": ..., "runs_ms": [...], "device": "cuda", "dtype": "bf16", "torch": "2.x",
   "peak_bytes": ..., "weights_bytes": ..., "gemm_gflops": ..., "gemm_n": ..., ...}     (+ "check_*" with --check)
  {"mode": "train", "train": [{"recompute": false, "median_ms": ..., "runs_ms": [...], "peak_bytes": ...}, ...], ...}

Weights: --weights FILE (BFL-named safetensors, config JSON in __metadata__['config']), or --random-weights
MANIFEST.json as `influx-cli bench` writes it (seed, config, every parameter's name, shape and checkpoint dtype,
the LoRA targets of its preset): the script regenerates the C# benchmark's seeded random weights bit for bit (the
same counter-based hash, on the device), so a 12B model needs no weight file.

--train times one LoRA training step instead of a forward: rank-r adapters (float32, as PEFT keeps them; A ~ N(0,
1/r), B = 0) on the manifest's targets over the frozen base in --dtype, MSE loss against a random target, backward,
then one torch.optim.AdamW step (lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.01: the C# AdamW's defaults).
--recompute on|both wraps every block in torch.utils.checkpoint (non-reentrant), as our --recompute recomputes
each block's activations; 'both' times the kept and the recomputed step in one process.

Dependencies: torch only (Debian 12: python3-torch, libopenblas0-pthread; see bench/install-pytorch-baseline.sh;
on a GPU machine the PyTorch 2.x image). On Debian run it with /usr/bin/python3.

  /usr/bin/python3 bench/pytorch_flux_forward.py --weights W.safetensors --img-tokens N --txt-tokens M
  python3 bench/pytorch_flux_forward.py --random-weights M.json --device cuda --dtype bf16 --img-tokens 4096 --txt-tokens 512
  /usr/bin/python3 bench/pytorch_flux_forward.py --weights flux-tiny.safetensors \\
      --check flux-tiny-forward.safetensors        # correctness: rel L2 vs expected.out, within the dtype's tolerance

With --check the timed inputs are the ones from the check file (--img-tokens/--txt-tokens/--batch are then ignored).
Exit status: 0 ok, 2 bad arguments/inputs, 3 torch missing, 4 --check beyond its tolerance.
"""
import argparse
import json
import math
import mmap
import os
import statistics
import struct
import sys
import time

# Relative L2 against the float64 reference that --check accepts. float32: the baseline agrees to 1.1e-5 (golden
# flux-tiny). bf16: every product and the residual stream round to 8 significant bits (2^-9 relative); the golden
# flux-tiny case measured 7.2e-3 on the CPU (torch 1.13, bmm + softmax); 2e-2 leaves room for another attention kernel.
CHECK_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="BFL-named safetensors, config JSON in __metadata__['config']")
    src.add_argument("--random-weights", metavar="MANIFEST.json",
                     help="regenerate influx-cli bench's seeded random weights from this manifest (seed, config, parameters, lora)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weights and activations")
    p.add_argument("--img-tokens", type=int, help="image tokens N (required unless --check)")
    p.add_argument("--txt-tokens", type=int, help="text tokens M (required unless --check)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (also the host side of --device cuda)")
    p.add_argument("--seed", type=int, default=0, help="inputs (and with --train the target and adapters)")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="keep glibc's default of mmap()ing every large block (fresh page faults per tensor)")
    p.add_argument("--check", metavar="INPUTS.safetensors",
                   help="run img,img_ids,txt,txt_ids,timesteps,y,guidance from this file; compare with expected.out")
    p.add_argument("--train", action="store_true", help="time a LoRA training step (needs --random-weights: its manifest names the targets)")
    p.add_argument("--rank", type=int, help="--train: LoRA rank (default: the manifest's)")
    p.add_argument("--recompute", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                   help="--train: recompute each block's activations in the backward (torch.utils.checkpoint); both: time off and on")
    a = p.parse_args(argv)
    if not a.check and (a.img_tokens is None or a.txt_tokens is None):
        p.error("--img-tokens and --txt-tokens are required unless --check is given")
    if a.threads < 1 or a.batch < 1 or a.runs < 1 or a.warmup < 0:
        p.error("--threads, --batch, --runs must be >= 1 and --warmup >= 0")
    if a.train and not a.random_weights:
        p.error("--train needs --random-weights MANIFEST.json (it lists the layers to adapt)")
    if a.train and a.check:
        p.error("--check checks the forward; leave out --train")
    if a.recompute != "off" and not a.train:
        p.error("--recompute applies to --train")
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
    import torch
    import torch.nn.functional as F
    import torch.utils.checkpoint
except ImportError as e:  # optional baseline: say so clearly, the CLI carries on without it
    fail(3, "torch not importable by %s (%s); run bench/install-pytorch-baseline.sh and use /usr/bin/python3"
         % (sys.executable, e))

DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
DEVICE = torch.device(args.device)


# ----------------------------------------------------------------------------------------------
# safetensors reader: 8-byte LE header length, JSON header, raw little-endian data
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def load_safetensors(path, dtype=None, device="cpu"):
    """Returns (dict name -> tensor, metadata dict); each tensor converted to dtype (None: float32, float64 kept)
    on device one at a time, from a copy-on-write map of the file, so a large file is never held twice."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable view: torch.frombuffer wants one
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dt = _DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError("%s: unsupported dtype %s" % (name, info["dtype"]))
        b, e = info["data_offsets"]
        count = (e - b) // torch.tensor([], dtype=dt).element_size()
        t = torch.frombuffer(data, dtype=dt, count=count, offset=8 + n + b) if count else torch.empty(0, dtype=dt)
        want = dtype or (torch.float64 if dt == torch.float64 else torch.float32)
        out[name] = t.reshape(info["shape"]).to(device=device, dtype=want, copy=True)
    return out, meta


# ----------------------------------------------------------------------------------------------
# influx-cli bench's seeded random weights (src/Engine/Benchmarks/RandomWeights.cs), regenerated on the device:
# element i of a parameter is center + amplitude·(u·2 − 1), u the top 24 bits of SplitMix64's finaliser of
# stream + i·φ (φ = 0x9E3779B97F4A7C15), stream = seed·φ XOR FNV-1a(name). torch has no uint64: int64 arithmetic
# wraps the same way, and a logical right shift is an arithmetic one masked.
_U64 = (1 << 64) - 1
_PHI = 0x9E3779B97F4A7C15


def _signed(u):
    u &= _U64
    return u - (1 << 64) if u >> 63 else u


def _srl(z, k):
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z):
    z = (z ^ _srl(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _srl(z, 27)) * _signed(0x94D049BB133111EB)
    return z ^ _srl(z, 31)


def _fnv1a(name):
    h = 0xCBF29CE484222325
    for c in name:
        h = ((h ^ ord(c)) * 0x100000001B3) & _U64
    return h


def random_weight(name, shape, seed, device, chunk=1 << 24):
    n = math.prod(shape)
    stream = _signed(((seed * _PHI) & _U64) ^ _fnv1a(name))
    # float32 like the C#: (float)Math.Sqrt(3.0 / fan_in), 0.02f
    amplitude = torch.tensor(math.sqrt(3.0 / shape[1]) if len(shape) == 2 else 0.02, dtype=torch.float32, device=device)
    center = 1.0 if name.endswith(".scale") else 0.0
    out = torch.empty(n, dtype=torch.float32, device=device)
    for start in range(0, n, chunk):
        i = torch.arange(start, min(n, start + chunk), dtype=torch.int64, device=device)
        unit = _srl(_mix(i * _signed(_PHI) + stream), 40).float() * (1.0 / (1 << 24)) * 2.0 - 1.0
        out[start:start + i.numel()] = unit * amplitude + center
    return out.reshape(shape)


def random_weights(manifest, dtype, device):
    """The manifest's parameters, rounded through their checkpoint dtype as the C# holds them, then in dtype."""
    stored = {"BF16": torch.bfloat16, "F16": torch.float16}
    w = {}
    for p in manifest["parameters"]:
        t = random_weight(p["name"], p["shape"], manifest["seed"], device)
        if p.get("dtype") in stored:
            t = t.to(stored[p["dtype"]])
        w[p["name"]] = t.to(dtype)
    return w


# ----------------------------------------------------------------------------------------------
# FLUX transformer (spec section 2), in the weights' dtype; statistics and positions in float32 as diffusers does
class Flux:
    def __init__(self, w, cfg, dtype):
        self.w = w
        self.cfg = cfg
        self.dtype = dtype
        self.D = cfg["hidden_size"]
        self.H = cfg["num_heads"]
        self.Dh = self.D // self.H
        self.axes_dim = list(cfg["axes_dim"])
        self.theta = cfg.get("theta", 10000)
        if sum(self.axes_dim) != self.Dh:
            raise ValueError("sum(axes_dim) %s != head dim %d" % (self.axes_dim, self.Dh))
        self.have_sdpa = hasattr(F, "scaled_dot_product_attention")
        self.lora = {}  # module -> [(row offset, rows, A [r, in], B [rows, r], scale)]
        self.recompute = False

    def add_lora(self, targets, rank, scale, generator):
        """PEFT's layout: float32 A ~ N(0, 1/rank) (init_lora_weights="gaussian"), B = 0, trainable; the base stays frozen."""
        params = []
        for t in targets:
            fan_in = self.w[t["module"] + ".weight"].shape[1]
            a = (torch.randn(rank, fan_in, generator=generator) / rank).to(self.w[t["module"] + ".weight"].device)
            b = torch.zeros(t["rows"], rank, device=a.device)
            a.requires_grad_(True), b.requires_grad_(True)
            self.lora.setdefault(t["module"], []).append((t["row_offset"], t["rows"], a, b, scale))
            params += [a, b]
        return params

    def lin(self, x, name):
        y = F.linear(x, self.w[name + ".weight"], self.w.get(name + ".bias"))
        for off, rows, a, b, scale in self.lora.get(name, ()):
            # PEFT casts the input to the adapters' float32 and the sum back to the layer's dtype
            y[..., off:off + rows] += (F.linear(F.linear(x.float(), a), b) * scale).to(y.dtype)
        return y

    def mlp_embed(self, x, name):
        return self.lin(F.silu(self.lin(x, name + ".in_layer")), name + ".out_layer")

    def tsemb(self, t, dim=256, max_period=10000, time_factor=1000.0):
        # computed in float64 (the golden reference is float64); cos first, then sin
        t = time_factor * t.double()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
        arg = t[:, None] * freqs[None]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1).to(self.dtype)

    def rope(self, ids):
        """ids [B, L, 3] -> (cos, sin) each [B, 1, L, Dh/2] float32; per-axis frequencies, axis 0 first."""
        angles = []
        for i, d in enumerate(self.axes_dim):
            scale = torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d
            omega = 1.0 / (self.theta ** scale)
            angles.append(ids[..., i].double()[..., None] * omega)
        ang = torch.cat(angles, dim=-1)[:, None]
        return torch.cos(ang).float(), torch.sin(ang).float()

    @staticmethod
    def apply_rope(x, pe):
        cos, sin = pe  # x [B, H, L, Dh]; rotates interleaved pairs (2p, 2p+1) in float32
        xr = x.float().reshape(*x.shape[:-1], -1, 2)
        x0, x1 = xr[..., 0], xr[..., 1]
        return torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1).reshape(x.shape).to(x.dtype)

    @staticmethod
    def rms(x, scale):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * scale

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
            p = torch.softmax(torch.bmm(q, k.transpose(1, 2)).float(), dim=-1).to(v.dtype)
            a = torch.bmm(p, v).view(B, H, L, Dh)
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

    def block(self, fn, *a):
        """One block, its activations recomputed in the backward when self.recompute (non-reentrant checkpoint)."""
        if self.recompute and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *a, use_reentrant=False)
        return fn(*a)

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
            img, txt = self.block(self.double_block, i, img, txt, svec, pe)
        Lt = txt.shape[1]
        x = torch.cat([txt, img], dim=1)
        for i in range(self.cfg["depth_single_blocks"]):
            x = self.block(self.single_block, i, x, svec, pe)
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


def on_device(inputs):
    """Activations in the run's dtype; positions and timesteps stay float32 (their embeddings are computed wider)."""
    keep = ("img_ids", "txt_ids", "timesteps", "guidance")
    return {k: None if v is None else v.to(DEVICE, torch.float32 if k in keep else DTYPE) for k, v in inputs.items()}


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(step, warmup, runs):
    """Milliseconds of each of `runs` calls after `warmup` untimed ones, the device waited for around each."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        synchronize()
        t0 = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def reset_peak():
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_bytes():
    """The most the caching allocator handed out since reset_peak() (weights included); None on the CPU."""
    return torch.cuda.max_memory_allocated() if DEVICE.type == "cuda" else None


def gemm_rate():
    """(n, GFLOP/s) of an n³ product measured in this process: float32 1024³ on the CPU (how fast this machine's BLAS
    is today), 8192³ in the run's dtype on a GPU (what its tensor cores give cuBLAS)."""
    n, dtype = (8192, DTYPE) if DEVICE.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=DEVICE).to(dtype)
    b = torch.randn(n, n, device=DEVICE).to(dtype)
    ms = statistics.median(timed(lambda: torch.matmul(a, b), 3, 7))
    return n, 2.0 * n ** 3 / (ms / 1e3) / 1e9


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




def load_model():
    """(model, manifest or None, weights' bytes on the device)."""
    manifest = None
    try:
        if args.random_weights:
            with open(args.random_weights) as f:
                manifest = json.load(f)
            cfg = manifest["config"]
            w = random_weights(manifest, DTYPE, DEVICE)
        else:
            w, meta = load_safetensors(args.weights, DTYPE, DEVICE)
            cfg = json.loads(meta["config"])
        model = Flux(w, cfg, DTYPE)
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(2, "cannot read weights %s: %r" % (args.weights or args.random_weights, e))
    return model, manifest, sum(t.numel() * t.element_size() for t in w.values())


def train_steps(model, manifest, inputs):
    """Times kept and/or recomputed LoRA steps: forward, float32 MSE against a random target, backward, AdamW."""
    lora = manifest.get("lora")
    if not lora or not lora.get("targets"):
        fail(2, "%s lists no LoRA targets ('lora': {'rank', 'scale', 'targets'})" % args.random_weights)
    rank = args.rank or lora["rank"]
    g = torch.Generator().manual_seed(args.seed + 1)
    params = model.add_lora(lora["targets"], rank, lora.get("scale", 1.0), g)
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    with torch.no_grad():
        shape = model.forward(**inputs).shape
    target = torch.randn(*shape, generator=g).to(DEVICE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model.forward(**inputs).float(), target)
        loss.backward()
        optimizer.step()

    rows = []
    for recompute in {"off": [False], "on": [True], "both": [False, True]}[args.recompute]:
        model.recompute = recompute
        reset_peak()
        try:
            runs = timed(step, args.warmup, args.runs)
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one: keeping every activation may not fit
            if "out of memory" not in str(e):
                raise
            optimizer.zero_grad(set_to_none=True)
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
            rows.append({"recompute": recompute, "median_ms": None, "peak_bytes": peak_bytes(), "error": "out of memory"})
            continue
        rows.append({"recompute": recompute, "median_ms": round(statistics.median(runs), 3),
                     "runs_ms": [round(r, 3) for r in runs], "peak_bytes": peak_bytes()})
    return {"train": rows, "lora_adapters": len(lora["targets"]), "lora_rank": rank,
            "lora_parameters": sum(p.numel() for p in params), "optimizer": "AdamW"}


def main():
    torch.set_num_threads(args.threads)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        fail(2, "--device cuda: this torch (%s) sees no CUDA GPU" % torch.__version__)
    model, manifest, weights_bytes = load_model()

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
        inputs = random_inputs(model.cfg, args.batch, args.img_tokens, args.txt_tokens, args.seed)
    inputs = on_device(inputs)

    gemm_n, gflops = gemm_rate()
    res = {"mode": "train" if args.train else "forward"}
    if args.train:
        res.update(train_steps(model, manifest, inputs))
    else:
        out = []
        with torch.inference_mode():
            def forward():
                out[:] = [model.forward(**inputs)]
            reset_peak()
            runs = timed(forward, args.warmup, args.runs)
        res.update({"median_ms": round(statistics.median(runs), 3), "runs_ms": [round(r, 3) for r in runs],
                    "peak_bytes": peak_bytes()})

    B, N = inputs["img"].shape[:2]
    res.update({
        "device": DEVICE.type,
        "gpu": torch.cuda.get_device_name() if DEVICE.type == "cuda" else None,
        "dtype": args.dtype,
        "weights_bytes": weights_bytes,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gemm_gflops": round(gflops, 1),
        "gemm_n": gemm_n,
        "gemm_dtype": args.dtype if DEVICE.type == "cuda" else "fp32",
        "batch": int(B),
        "img_tokens": int(N),
        "txt_tokens": int(inputs["txt"].shape[1]),
        "attention": "sdpa" if model.have_sdpa else "matmul_softmax",
        "malloc_tuned": MALLOC_TUNED,
    })
    if DEVICE.type == "cpu":
        res.update({
            "blas": blas_name(),
            "blas_kernel": blas_kernel(),
            "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "openblas_thread_timeout": os.environ["OPENBLAS_THREAD_TIMEOUT"],
        })
    if expected is not None:
        ref = expected.double().to(DEVICE)
        rel = float(torch.linalg.norm(out[0].double() - ref) / torch.linalg.norm(ref))
        res.update({"check_rel_l2": rel, "check_tolerance": CHECK_TOLERANCE[args.dtype],
                    "check_ok": rel <= CHECK_TOLERANCE[args.dtype]})
    print(json.dumps(res), flush=True)
    if expected is not None and not res["check_ok"]:
        print("pytorch_flux_forward: --check rel L2 %.3g beyond the %s tolerance %g" % (rel, args.dtype, res["check_tolerance"]),
              file=sys.stderr)
        sys.exit(4)


if __name__ == "__main__":
    main()
