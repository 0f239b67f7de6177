using System.Runtime.InteropServices;

namespace InFluxEdit.Runtime.Backends.Gpu;

/// <summary>
/// The few cuBLAS entry points the backend needs, bound by hand: ILGPU.Algorithms' CuBlas only probes
/// libcublas.so.10/11/12 (the GPU machines run CUDA 13) and has no cublasGemmEx. Entry points are resolved with
/// NativeLibrary.GetExport into unmanaged function pointers, so nothing is bound until a library is found.
/// All matrices are column-major, as cuBLAS sees them.
/// </summary>
internal sealed unsafe class CuBlasNative : IDisposable
{
    public const int OperationNone = 0;      // CUBLAS_OP_N
    public const int OperationTranspose = 1; // CUBLAS_OP_T
    public const int DataFloat32 = 0;        // CUDA_R_32F
    public const int DataFloat16 = 2;        // CUDA_R_16F
    public const int DataBFloat16 = 14;      // CUDA_R_16BF
    public const int ComputeFloat32 = 68;    // CUBLAS_COMPUTE_32F
    public const int ComputeFloat32FastTf32 = 77; // CUBLAS_COMPUTE_32F_FAST_TF32: float32 inputs rounded to TF32 on tensor cores
    public const int GemmAlgorithmDefault = -1; // CUBLAS_GEMM_DEFAULT (tensor cores where the types allow)
    public const int GemmAlgorithmDefaultTensorOp = 99; // CUBLAS_GEMM_DEFAULT_TENSOR_OP (deprecated alias of DEFAULT since CUDA 11)
    private const int DefaultMath = 0;       // CUBLAS_DEFAULT_MATH: no TF32 for sgemm
    private const int Tf32TensorOpMath = 3;  // CUBLAS_TF32_TENSOR_OP_MATH: sgemm and 32F GemmEx may round inputs to TF32

    private static readonly string[] LinuxNames = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"];
    private static readonly string[] WindowsNames = ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"];

    private readonly IntPtr library;
    private IntPtr handle;
    private readonly delegate* unmanaged<IntPtr, int> destroy;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> setStream;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, IntPtr, int, float*, IntPtr, int, int> sgemm;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, IntPtr, int, int, void*, IntPtr, int, int, int, int, int> gemmEx;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, long, IntPtr, int, long, float*, IntPtr, int, long, int, int> sgemmStridedBatched;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, long, IntPtr, int, int, long, void*, IntPtr, int, int, long, int, int, int, int> gemmStridedBatchedEx;
    private readonly delegate* unmanaged<IntPtr, int, int> setMathMode;

    private CuBlasNative(IntPtr library, string libraryName)
    {
        this.library = library;
        LibraryName = libraryName;
        var create = (delegate* unmanaged<IntPtr*, int>)Export("cublasCreate_v2");
        destroy = (delegate* unmanaged<IntPtr, int>)Export("cublasDestroy_v2");
        setStream = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("cublasSetStream_v2");
        sgemm = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, IntPtr, int, float*, IntPtr, int, int>)Export("cublasSgemm_v2");
        gemmEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, IntPtr, int, int, void*, IntPtr, int, int, int, int, int>)Export("cublasGemmEx");
        // cublasSgemmStridedBatched(handle, transa, transb, m, n, k, const float* alpha, const float* A, int lda,
        //   long long strideA, const float* B, int ldb, long long strideB, const float* beta, float* C, int ldc,
        //   long long strideC, int batchCount) — no _v2 suffix exists for it.
        sgemmStridedBatched = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, long, IntPtr, int, long, float*, IntPtr, int, long, int, int>)Export("cublasSgemmStridedBatched");
        // cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, const void* alpha, const void* A, cudaDataType Atype,
        //   int lda, long long strideA, const void* B, cudaDataType Btype, int ldb, long long strideB, const void* beta,
        //   void* C, cudaDataType Ctype, int ldc, long long strideC, int batchCount, cublasComputeType_t computeType,
        //   cublasGemmAlgo_t algo).
        gemmStridedBatchedEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, long, IntPtr, int, int, long, void*, IntPtr, int, int, long, int, int, int, int>)Export("cublasGemmStridedBatchedEx");
        var getVersion = (delegate* unmanaged<IntPtr, int*, int>)Export("cublasGetVersion_v2");
        setMathMode = (delegate* unmanaged<IntPtr, int, int>)Export("cublasSetMathMode");

        IntPtr created;
        Check(create(&created), "cublasCreate_v2");
        handle = created;
        int version;
        Check(getVersion(handle, &version), "cublasGetVersion_v2");
        Version = version;
        Check(setMathMode(handle, DefaultMath), "cublasSetMathMode");
    }

    public string LibraryName { get; }

    /// <summary>cuBLAS's version number, major·10000 + minor·100 + patch (e.g. 130100 for 13.1.0).</summary>
    public int Version { get; }

    public string VersionText => $"{Version / 10000}.{Version / 100 % 100}.{Version % 100}";

    /// <summary>
    /// Loads the newest cuBLAS found and creates a handle in the CUDA context current on this thread.
    /// Returns null, with the reason in <paramref name="report"/>, when there is none or it does not work.
    /// </summary>
    public static CuBlasNative? TryCreate(out string report)
    {
        var tried = new List<string>();
        foreach (string name in CandidatePaths())
        {
            if (!NativeLibrary.TryLoad(name, typeof(CuBlasNative).Assembly, null, out IntPtr library))
            {
                tried.Add($"{name}: not found");
                continue;
            }
            try
            {
                var cublas = new CuBlasNative(library, name);
                report = $"loaded {name} (cuBLAS {cublas.VersionText})";
                return cublas;
            }
            catch (Exception e) when (e is EntryPointNotFoundException or InvalidOperationException)
            {
                tried.Add($"{name}: {e.Message}");
                NativeLibrary.Free(library);
            }
        }
        report = "no usable cuBLAS (" + string.Join("; ", tried) + ")";
        return null;
    }

    /// <summary>
    /// INFLUXEDIT_CUBLAS (an explicit file) first, then each soname through the loader's search path, then the
    /// same names in the CUDA toolkit's library folders, which a toolkit install does not always register with
    /// ldconfig.
    /// </summary>
    private static IEnumerable<string> CandidatePaths()
    {
        string? explicitPath = Environment.GetEnvironmentVariable("INFLUXEDIT_CUBLAS");
        if (!string.IsNullOrEmpty(explicitPath))
            yield return explicitPath;
        string[] names = OperatingSystem.IsWindows() ? WindowsNames : LinuxNames;
        foreach (string name in names)
            yield return name;
        var roots = new[] { Environment.GetEnvironmentVariable("CUDA_PATH"), Environment.GetEnvironmentVariable("CUDA_HOME"),
                OperatingSystem.IsWindows() ? null : "/usr/local/cuda" }
            .Where(root => !string.IsNullOrEmpty(root)).Distinct();
        foreach (string root in roots!)
            foreach (string folder in OperatingSystem.IsWindows()
                         ? new[] { Path.Combine(root!, "bin"), Path.Combine(root!, "bin", "x64") }
                         : new[] { Path.Combine(root!, "lib64"), Path.Combine(root!, "targets", "x86_64-linux", "lib") })
                foreach (string name in names)
                {
                    string path = Path.Combine(folder, name);
                    if (File.Exists(path))
                        yield return path;
                }
    }

    public void SetStream(IntPtr stream) => Check(setStream(handle, stream), "cublasSetStream_v2");

    /// <summary>
    /// Whether sgemm (and GemmEx with CUBLAS_COMPUTE_32F) may round float32 inputs to TF32 on tensor cores
    /// (CUBLAS_TF32_TENSOR_OP_MATH) or must compute in full float32 (CUBLAS_DEFAULT_MATH, the handle's initial mode).
    /// </summary>
    public void SetTf32(bool allowed) =>
        Check(setMathMode(handle, allowed ? Tf32TensorOpMath : DefaultMath), "cublasSetMathMode");

    /// <summary>
    /// For i in [0, batchCount): C_i = alpha·op(A_i)·op(B_i) + beta·C_i, float32 throughout, where X_i starts
    /// strideX elements after X_{i−1}. Strides may be smaller than a matrix (interleaved column blocks), as long as
    /// no two C_i share an element.
    /// </summary>
    public void SgemmStridedBatched(int transA, int transB, int m, int n, int k, float alpha,
        IntPtr a, int lda, long strideA, IntPtr b, int ldb, long strideB, float beta, IntPtr c, int ldc, long strideC,
        int batchCount)
    {
        Check(sgemmStridedBatched(handle, transA, transB, m, n, k, &alpha, a, lda, strideA, b, ldb, strideB,
            &beta, c, ldc, strideC, batchCount), "cublasSgemmStridedBatched");
    }

    /// <summary>
    /// <see cref="SgemmStridedBatched"/> with storage types and a compute type (float32 alpha/beta: the compute
    /// type must be one of the CUBLAS_COMPUTE_32F family).
    /// </summary>
    public void GemmStridedBatchedEx(int transA, int transB, int m, int n, int k, float alpha,
        IntPtr a, int aType, int lda, long strideA, IntPtr b, int bType, int ldb, long strideB,
        float beta, IntPtr c, int cType, int ldc, long strideC, int batchCount, int computeType)
    {
        Check(gemmStridedBatchedEx(handle, transA, transB, m, n, k, &alpha, a, aType, lda, strideA, b, bType, ldb,
            strideB, &beta, c, cType, ldc, strideC, batchCount, computeType, GemmAlgorithmDefault),
            "cublasGemmStridedBatchedEx");
    }

    /// <summary>C = alpha·op(A)·op(B) + beta·C, float32 throughout.</summary>
    public void Sgemm(int transA, int transB, int m, int n, int k, float alpha, IntPtr a, int lda,
        IntPtr b, int ldb, float beta, IntPtr c, int ldc)
    {
        Check(sgemm(handle, transA, transB, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc), "cublasSgemm_v2");
    }

    /// <summary>C = alpha·op(A)·op(B) + beta·C with the given storage types; alpha and beta are float32 (compute 32F).</summary>
    public void GemmEx(int transA, int transB, int m, int n, int k, float alpha,
        IntPtr a, int aType, int lda, IntPtr b, int bType, int ldb, float beta, IntPtr c, int cType, int ldc)
    {
        Check(gemmEx(handle, transA, transB, m, n, k, &alpha, a, aType, lda, b, bType, ldb, &beta, c, cType, ldc,
            ComputeFloat32, GemmAlgorithmDefault), "cublasGemmEx");
    }

    private IntPtr Export(string name) => NativeLibrary.GetExport(library, name);

    private static void Check(int status, string call)
    {
        if (status != 0)
            throw new InvalidOperationException($"{call} failed: {StatusName(status)} ({status})");
    }

    private static string StatusName(int status) => status switch
    {
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => "unknown cuBLAS status",
    };

    public void Dispose()
    {
        if (handle != IntPtr.Zero)
        {
            destroy(handle);
            handle = IntPtr.Zero;
        }
    }
}
