namespace InFluxEdit.Runtime.Backends;

/// <summary>
/// Zero padding of a 2-D convolution's input, in pixels on each side. PyTorch's <c>padding=p</c> is
/// <see cref="Same"/>(p); the FLUX VAE's Downsample (<c>F.pad(x, (0, 1, 0, 1))</c> then a stride-2 conv without
/// padding) is <c>new Padding2d(0, 0, 1, 1)</c>: one zero column on the right and one zero row at the bottom.
/// </summary>
public readonly record struct Padding2d(int Top, int Left, int Bottom, int Right)
{
    /// <summary>p pixels on all four sides (PyTorch's symmetric <c>padding=p</c>).</summary>
    public static Padding2d Same(int p) => new(p, p, p, p);

    public static readonly Padding2d None = default;

    public bool IsNone => Top == 0 && Left == 0 && Bottom == 0 && Right == 0;

    public override string ToString() => $"pad(top {Top}, left {Left}, bottom {Bottom}, right {Right})";
}

/// <summary>
/// The sizes of one <see cref="IBackend.Conv2d"/> call, validated once and shared by both backends so they accept
/// and reject the same arguments with the same messages.
/// </summary>
internal readonly record struct ConvShape(
    int Batch, int Height, int Width, int InChannels, int OutChannels, int KernelHeight, int KernelWidth,
    int Stride, Padding2d Padding, int OutHeight, int OutWidth)
{
    /// <summary>Columns of one im2col row: kh·kw·Cin, tap-major ((ky·kw + kx)·Cin + ci).</summary>
    public int PatchLength => KernelHeight * KernelWidth * InChannels;

    public int OutPixels => OutHeight * OutWidth;

    public bool IsPointwise => KernelHeight == 1 && KernelWidth == 1 && Stride == 1 && Padding.IsNone;

    /// <summary>Checks x, y and the weight/bias shapes; <paramref name="weightShape"/> is PyTorch's [Cout, Cin, kh, kw].</summary>
    public static ConvShape Validate(View y, View x, int height, int width, int[] weightShape, long? biasLength,
        int stride, Padding2d padding)
    {
        if (weightShape.Length != 4)
            throw new ArgumentException(
                $"a conv weight is [Cout, Cin, kh, kw], got [{string.Join(", ", weightShape)}]", "weight");
        int cout = weightShape[0], cin = weightShape[1], kh = weightShape[2], kw = weightShape[3];
        if (cout <= 0 || cin <= 0 || kh <= 0 || kw <= 0)
            throw new ArgumentException($"conv weight [{string.Join(", ", weightShape)}] has an empty dimension", "weight");
        if (stride <= 0) throw new ArgumentOutOfRangeException(nameof(stride), stride, "stride must be positive");
        if (padding.Top < 0 || padding.Left < 0 || padding.Bottom < 0 || padding.Right < 0)
            throw new ArgumentOutOfRangeException(nameof(padding), padding, "padding must not be negative");
        if (height <= 0 || width <= 0)
            throw new ArgumentOutOfRangeException(nameof(height), $"image of {height}×{width} pixels");
        if ((long)height * width != x.Rows)
            throw new ArgumentException($"x {x} must have height·width = {height}·{width} rows", nameof(x));
        if (x.Cols != cin)
            throw new ArgumentException($"x {x} has {x.Cols} channels, weight [{string.Join(", ", weightShape)}] takes {cin}", nameof(x));
        int paddedHeight = height + padding.Top + padding.Bottom, paddedWidth = width + padding.Left + padding.Right;
        if (paddedHeight < kh || paddedWidth < kw)
            throw new ArgumentException(
                $"a {kh}×{kw} kernel does not fit a {height}×{width} image with {padding}", nameof(padding));
        int outHeight = (paddedHeight - kh) / stride + 1, outWidth = (paddedWidth - kw) / stride + 1;
        if (y.Batch != x.Batch)
            throw new ArgumentException($"y {y} and x {x} differ in batch", nameof(y));
        if ((long)outHeight * outWidth != y.Rows || y.Cols != cout)
            throw new ArgumentException(
                $"y {y} must be [{x.Batch}, {outHeight}·{outWidth}, {cout}] for a {kh}×{kw} stride-{stride} conv of {height}×{width} with {padding}",
                nameof(y));
        if (biasLength is long b && b != cout)
            throw new ArgumentException($"bias has {b} elements, the conv has {cout} output channels", "bias");
        RequireUnitColumnRows(x, nameof(x));
        RequireUnitColumnRows(y, nameof(y));
        return new ConvShape(x.Batch, height, width, cin, cout, kh, kw, stride, padding, outHeight, outWidth);
    }

    /// <summary>The sizes <see cref="IBackend.UpsampleNearest2x"/> needs: x is [B, height·width, C], y [B, 2height·2width, C], rows apart.</summary>
    public static void ValidateUpsample2x(View y, View x, int height, int width)
    {
        if (height <= 0 || width <= 0) throw new ArgumentOutOfRangeException(nameof(height), $"image of {height}×{width} pixels");
        if ((long)height * width != x.Rows) throw new ArgumentException($"x {x} must have height·width = {height}·{width} rows", nameof(x));
        if (y.Batch != x.Batch || y.Cols != x.Cols || y.Rows != 4L * x.Rows)
            throw new ArgumentException($"y {y} must be [{x.Batch}, {2 * height}·{2 * width}, {x.Cols}] for x {x}", nameof(y));
        RequireUnitColumnRows(x, nameof(x));
        RequireUnitColumnRows(y, nameof(y));
    }

    /// <summary>Rejects an output whose element range meets the input's in the same tensor (ops that read neighbours).</summary>
    public static void RequireDisjoint(View y, View x, string name)
    {
        if (!ReferenceEquals(y.Tensor, x.Tensor) || y.ElementCount == 0 || x.ElementCount == 0) return;
        long yLast = y.Offset + (y.Batch - 1) * y.BatchStride + (y.Rows - 1) * y.RowStride + y.Cols - 1;
        long xLast = x.Offset + (x.Batch - 1) * x.BatchStride + (x.Rows - 1) * x.RowStride + x.Cols - 1;
        if (y.Offset <= xLast && x.Offset <= yLast)
            throw new ArgumentException($"output {y} overlaps input {x}; this op cannot run in place", name);
    }

    /// <summary>Rows must not overlap (RowStride ≥ Cols) unless there is one row: pixels are distinct memory.</summary>
    public static void RequireUnitColumnRows(View view, string name)
    {
        if (view.Rows > 1 && view.RowStride < view.Cols)
            throw new ArgumentException(
                $"{name} {view}: image ops need rows that do not overlap (RowStride ≥ Cols), got RowStride {view.RowStride}", name);
        if (view.Batch > 1 && view.BatchStride < 0)
            throw new ArgumentException($"{name} {view} has a negative batch stride", name);
    }
}
