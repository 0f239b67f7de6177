using InFluxEdit.Runtime.Tensors;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.PixelFormats;

namespace InFluxEdit.Runtime.Images;

/// <summary>
/// Images as the models see them: NCHW float tensors. Colour images are [1, 3, H, W] in [−1, 1]
/// (u8/127.5 − 1), masks [1, 1, H, W] in [0, 1] (u8/255, kept soft as BFL keeps them). Reads every format
/// ImageSharp 2.x reads (PNG, JPEG, BMP, GIF, TGA, WebP, TIFF, PBM).
/// </summary>
public static class ImageFile
{
    /// <summary>The largest input image read (4096×4096); FLUX works at about one megapixel.</summary>
    public const long MaxPixels = 4096L * 4096;

    /// <summary>
    /// An RGB image as [1, 3, H, W] = u8/127.5 − 1. Alpha is dropped without compositing (as PIL's convert("RGB")
    /// does); grayscale becomes R = G = B.
    /// </summary>
    public static HostTensor LoadRgb(string path)
    {
        using var image = Decode<Rgb24>(path);
        int height = image.Height, width = image.Width;
        var tensor = new HostTensor(1, 3, height, width);
        float[] data = tensor.Data;
        int plane = height * width;
        image.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < height; y++)
            {
                Span<Rgb24> row = rows.GetRowSpan(y);
                for (int x = 0; x < width; x++)
                {
                    int i = y * width + x;
                    data[i] = row[x].R / 127.5f - 1f;
                    data[plane + i] = row[x].G / 127.5f - 1f;
                    data[2 * plane + i] = row[x].B / 127.5f - 1f;
                }
            }
        });
        return tensor;
    }

    /// <summary>
    /// A mask as [1, 1, H, W] = gray/255, soft (no thresholding); 1 marks the region to generate. Colour files are
    /// converted to gray with PIL's convert("L") weights (ITU-R 601-2, 299/587/114), which is what the reference
    /// pipelines apply to a mask file, so a colour mask gives the same values here as there.
    /// </summary>
    public static HostTensor LoadMask(string path)
    {
        using var image = Decode<Rgb24>(path);
        int height = image.Height, width = image.Width;
        var tensor = new HostTensor(1, 1, height, width);
        float[] data = tensor.Data;
        image.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < height; y++)
            {
                Span<Rgb24> row = rows.GetRowSpan(y);
                for (int x = 0; x < width; x++)
                    data[y * width + x] = PilLuminance(row[x]) / 255f;
            }
        });
        return tensor;
    }

    /// <summary>PIL's L = R·299/1000 + G·587/1000 + B·114/1000 in its 16-bit fixed point, rounded; exact for gray input.</summary>
    private static int PilLuminance(Rgb24 p) => (p.R * 19595 + p.G * 38470 + p.B * 7471 + 0x8000) >> 16;

    /// <summary>
    /// Writes [1, 3, H, W] in [−1, 1] as 8-bit RGB: clamp(−1, 1), (x + 1)·127.5 truncated toward zero, as BFL does
    /// (diffusers rounds instead; the two differ by at most one level). The format follows the file's extension.
    /// The file appears complete or not at all: it is written beside the target and renamed over it.
    /// </summary>
    public static void SaveRgb(HostTensor image, string path)
    {
        if (image.Rank != 4 || image.Shape[0] != 1 || image.Shape[1] != 3)
            throw new ArgumentException($"an RGB image to save must be [1, 3, H, W]; got {HostTensor.FormatShape(image.Shape)}");
        IImageEncoder encoder = EncoderFor(path);
        int height = image.Shape[2], width = image.Shape[3], plane = height * width;
        float[] data = image.Data;
        using var output = new Image<Rgb24>(width, height);
        output.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < height; y++)
            {
                Span<Rgb24> row = rows.GetRowSpan(y);
                for (int x = 0; x < width; x++)
                {
                    int i = y * width + x;
                    row[x] = new Rgb24(ToByte(data[i], path), ToByte(data[plane + i], path), ToByte(data[2 * plane + i], path));
                }
            }
        });

        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath)!;
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"cannot write {path}: the folder {directory} does not exist");
        IO.AtomicFile.Write(fullPath, stream => output.Save(stream, encoder));
    }

    private static byte ToByte(float value, string path)
    {
        // A NaN here means the model diverged; a black pixel would hide that from the user.
        if (float.IsNaN(value))
            throw new ArgumentException($"the image for {path} contains NaN values; nothing was written");
        return (byte)((Math.Clamp(value, -1f, 1f) + 1f) * 127.5f);
    }

    private static IImageEncoder EncoderFor(string path)
    {
        string extension = Path.GetExtension(path).TrimStart('.');
        var manager = Configuration.Default.ImageFormatsManager;
        IImageFormat? format = extension.Length == 0 ? null : manager.FindFormatByFileExtension(extension);
        if (format == null)
            throw new ArgumentException(
                $"cannot tell the image format of '{path}' from its extension; use one of " +
                string.Join(", ", manager.ImageFormats.SelectMany(f => f.FileExtensions).Select(e => "." + e)));
        return manager.FindEncoder(format);
    }

    private static Image<TPixel> Decode<TPixel>(string path) where TPixel : unmanaged, IPixel<TPixel>
    {
        IO.PathChecks.RequireFile(path, "image file");
        try
        {
            // The header is read first: a 69-byte PNG may claim 8192×8192, and decoding it would take gigabytes.
            var info = Image.Identify(path);
            if (info != null && (long)info.Width * info.Height > MaxPixels)
                throw new InvalidDataException(
                    $"'{path}' is {info.Width}×{info.Height}, more than the {MaxPixels / 1_000_000.0:F1} million pixels (4096×4096) an input image may have: scale it down first");
            return Image.Load<TPixel>(path);
        }
        catch (UnknownImageFormatException)
        {
            throw new InvalidDataException($"'{path}' is not an image in a format this build reads (PNG, JPEG, BMP, GIF, TGA, WebP, TIFF, PBM)");
        }
        catch (ImageFormatException e)
        {
            throw new InvalidDataException($"'{path}' cannot be read as an image: {e.Message}");
        }
        catch (NotSupportedException e)
        {
            throw new InvalidDataException($"'{path}' uses an image feature this build cannot read: {e.Message}");
        }
        // ImageSharp's decoders fail on corrupt files in many more ways than ImageFormatException (fuzzing found
        // ArgumentException, InvalidOperationException, DivideByZeroException, NullReferenceException): a damaged
        // file all the same, as is one that ends early. Failures to read the file itself, and our own refusal above, pass through.
        catch (Exception e) when (e is EndOfStreamException || e is not (IOException or UnauthorizedAccessException or OutOfMemoryException or InvalidDataException))
        {
            throw new InvalidDataException($"'{path}' is damaged: the image decoder failed ({e.GetType().Name}: {e.Message.Split('\n')[0]})");
        }
    }
}
