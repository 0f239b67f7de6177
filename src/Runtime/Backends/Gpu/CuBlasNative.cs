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
    public const int GemmAlgorithmDefault = -1; // CUBLAS_GEMM_DEFAULT (tensor cores where the types allow)
    private const int DefaultMath = 0;       // CUBLAS_DEFAULT_MATH: no TF32 for sgemm

    private static readonly string[] LinuxNames = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"];
    private static readonly string[] WindowsNames = ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"];

    private readonly IntPtr library;
    private IntPtr handle;
    private readonly delegate* unmanaged<IntPtr, int> destroy;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> setStream;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, IntPtr, int, float*, IntPtr, int, int> sgemm;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, IntPtr, int, int, void*, IntPtr, int, int, int, int, int> gemmEx;

    private CuBlasNative(IntPtr library, string libraryName)
    {
        this.library = library;
        LibraryName = libraryName;
        var create = (delegate* unmanaged<IntPtr*, int>)Export("cublasCreate_v2");
        destroy = (delegate* unmanaged<IntPtr, int>)Export("cublasDestroy_v2");
        setStream = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("cublasSetStream_v2");
        sgemm = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, IntPtr, int, IntPtr, int, float*, IntPtr, int, int>)Export("cublasSgemm_v2");
        gemmEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, IntPtr, int, int, IntPtr, int, int, void*, IntPtr, int, int, int, int, int>)Export("cublasGemmEx");
        var getVersion = (delegate* unmanaged<IntPtr, int*, int>)Export("cublasGetVersion_v2");
        var setMathMode = (delegate* unmanaged<IntPtr, int, int>)Export("cublasSetMathMode");

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
