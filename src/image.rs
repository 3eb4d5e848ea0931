//! Image grids as PNG bytes (for `samples.png` and `vic sample -o FILE.png`).

/// Lay `n` images of `channels x height x width` values in [0, 1] (row-major, one after
/// the other) out in a near-square grid with a 1-pixel gap, and encode it as PNG
/// (grey for 1 channel, RGB for 3). Images smaller than 28 pixels are enlarged by an
/// integer factor (nearest neighbour) so that 8x8 digits can be seen.
pub fn grid_png(
    values: &[f32],
    n: usize,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, String> {
    let cols = (n as f64).sqrt().ceil() as usize;
    grid_png_cols(values, n, cols, channels, height, width)
}

/// [`grid_png`] with `cols` images per row (`vic sample --steps`: one row per sample, one
/// column per step).
pub fn grid_png_cols(
    values: &[f32],
    n: usize,
    cols: usize,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, String> {
    if !(channels == 1 || channels == 3) {
        return Err(format!("cannot draw images with {channels} channels"));
    }
    let per = channels * height * width;
    if values.len() < n * per || n == 0 {
        return Err("not enough image data for the grid".into());
    }
    let zoom = (28 / height.max(width).max(1)).max(1);
    let src_w = width;
    let (height, width) = (height * zoom, width * zoom);
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (width + 1) + 1, rows * (height + 1) + 1);
    let mut pixels = vec![0u8; gw * gh * channels];
    for i in 0..n {
        let (gr, gc) = (i / cols, i % cols);
        let (oy, ox) = (1 + gr * (height + 1), 1 + gc * (width + 1));
        for y in 0..height {
            for x in 0..width {
                for c in 0..channels {
                    let (sy, sx) = (y / zoom, x / zoom);
                    let v = values[i * per + c * (height / zoom) * src_w + sy * src_w + sx];
                    let v = if v.is_finite() {
                        v.clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    pixels[((oy + y) * gw + ox + x) * channels + c] = (v * 255.0).round() as u8;
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, gw as u32, gh as u32);
        enc.set_color(if channels == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&pixels).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The image layout `[C, H, W]` of a per-example shape, if it is an image: `[C, H, W]`
/// with 1 or 3 channels, `[H, W]`, or a flat square `[D]` (D = s², s >= 4).
pub fn image_layout(shape: &[usize]) -> Option<(usize, usize, usize)> {
    match shape {
        [c, h, w] if (*c == 1 || *c == 3) && *h >= 4 && *w >= 4 => Some((*c, *h, *w)),
        [h, w] if *h >= 4 && *w >= 4 => Some((1, *h, *w)),
        [d] => {
            let s = (*d as f64).sqrt().round() as usize;
            (s >= 4 && s * s == *d).then_some((1, s, s))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_a_decodable_grid() {
        assert_eq!(image_layout(&[784]), Some((1, 28, 28)));
        assert_eq!(image_layout(&[64]), Some((1, 8, 8)));
        assert_eq!(image_layout(&[1, 28, 28]), Some((1, 28, 28)));
        assert_eq!(image_layout(&[10]), None);
        let vals: Vec<f32> = (0..5 * 16).map(|i| (i % 7) as f32 / 6.0).collect();
        let bytes = grid_png(&vals, 5, 1, 4, 4).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = dec.read_info().unwrap();
        let info = reader.info();
        // 3 columns x 2 rows of 4x4 images enlarged 7 times, with 1-pixel gaps.
        assert_eq!((info.width, info.height), (3 * 29 + 1, 2 * 29 + 1));
    }
}
