using InFluxEdit.Runtime.Tensors;

namespace InFluxEdit.Runtime.Images;

/// <summary>Contact sheets: RGB images [1, 3, H, W] laid side by side in rows, rows stacked.</summary>
public static class ImageGrid
{
    /// <summary>Images of one height side by side ([1, 3, H, W] each; others are resized to the first's height).</summary>
    public static HostTensor Row(params HostTensor[] images)
    {
        int height = images[0].Shape[2];
        var fitted = images.Select(i => i.Shape[2] == height ? i : Resample.Bicubic(i, height, Math.Max(1, i.Shape[3] * height / i.Shape[2]))).ToList();
        int width = fitted.Sum(i => i.Shape[3]);
        var row = new HostTensor(1, 3, height, width);
        int left = 0;
        foreach (var image in fitted)
        {
            int w = image.Shape[3];
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < height; y++)
                    Array.Copy(image.Data, (c * height + y) * w, row.Data, (c * height + y) * width + left, w);
            left += w;
        }
        return row;
    }

    /// <summary>Rows one above the other, each resized to the first row's width.</summary>
    public static HostTensor Stack(IReadOnlyList<HostTensor> rows)
    {
        int width = rows[0].Shape[3];
        var fitted = rows.Select(r => r.Shape[3] == width ? r : Resample.Bicubic(r, Math.Max(1, r.Shape[2] * width / r.Shape[3]), width)).ToList();
        int height = fitted.Sum(r => r.Shape[2]);
        var sheet = new HostTensor(1, 3, height, width);
        int top = 0;
        foreach (var row in fitted)
        {
            int h = row.Shape[2];
            for (int c = 0; c < 3; c++)
                Array.Copy(row.Data, c * h * width, sheet.Data, (c * height + top) * width, h * width);
            top += h;
        }
        return sheet;
    }
}
