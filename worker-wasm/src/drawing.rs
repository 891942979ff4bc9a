//! Turns a drawing into an MNIST-style 28×28 image, the way MNIST itself was
//! made: the ink's bounding box is scaled (keeping its aspect ratio) to fit a
//! 20×20 box, then placed in a 28×28 frame with its center of mass at the center.

use crate::IMAGE_LEN;

/// Side of the MNIST frame.
const SIDE: usize = 28;
/// Side of the box the ink is scaled into.
const BOX: f32 = 20.0;

/// `intensity` is `width × height` bytes, white (255) ink on black (0).
/// Returns 784 bytes; all zeros if there is no ink or the sizes do not match.
pub fn mnist_from_drawing(intensity: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = vec![0u8; IMAGE_LEN];
    if width == 0 || height == 0 || intensity.len() != width * height {
        return out;
    }
    // Bounding box of the ink.
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, &v) in intensity.iter().enumerate() {
        if v > 0 {
            let (x, y) = (i % width, i / width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 == usize::MAX {
        return out;
    }
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    let scale = BOX / bw.max(bh) as f32;
    let tw = ((bw as f32 * scale).round() as usize).clamp(1, SIDE);
    let th = ((bh as f32 * scale).round() as usize).clamp(1, SIDE);
    // Area resampling: each source pixel covers [x·s, (x+1)·s) in the target
    // and adds its value times the overlap to every target pixel it touches.
    let mut scaled = vec![0f32; tw * th];
    for y in y0..=y1 {
        let (ty0, ty1) = ((y - y0) as f32 * scale, (y - y0 + 1) as f32 * scale);
        for x in x0..=x1 {
            let v = intensity[y * width + x] as f32;
            if v == 0.0 {
                continue;
            }
            let (tx0, tx1) = ((x - x0) as f32 * scale, (x - x0 + 1) as f32 * scale);
            for ty in (ty0.floor() as usize)..(ty1.ceil() as usize).min(th) {
                let oy = ty1.min(ty as f32 + 1.0) - ty0.max(ty as f32);
                for tx in (tx0.floor() as usize)..(tx1.ceil() as usize).min(tw) {
                    let ox = tx1.min(tx as f32 + 1.0) - tx0.max(tx as f32);
                    if ox > 0.0 && oy > 0.0 {
                        scaled[ty * tw + tx] += v * ox * oy;
                    }
                }
            }
        }
    }
    // Center of mass, then the shift that puts it at the frame's center.
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (i, &v) in scaled.iter().enumerate() {
        let v = v as f64;
        mass += v;
        mx += v * ((i % tw) as f64 + 0.5);
        my += v * ((i / tw) as f64 + 0.5);
    }
    if mass <= 0.0 {
        return out;
    }
    let half = SIDE as f64 / 2.0;
    let dx = (half - mx / mass).round() as isize;
    let dy = (half - my / mass).round() as isize;
    for (i, &v) in scaled.iter().enumerate() {
        let x = (i % tw) as isize + dx;
        let y = (i / tw) as isize + dy;
        if (0..SIDE as isize).contains(&x) && (0..SIDE as isize).contains(&y) {
            out[y as usize * SIDE + x as usize] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 28×28 image with a 20-pixel-high bar, its center of mass at the center.
    fn bar() -> Vec<u8> {
        let mut img = vec![0u8; IMAGE_LEN];
        for y in 4..24 {
            for x in 12..16 {
                img[y * SIDE + x] = 200 + (y as u8 % 7) * 5;
            }
        }
        img
    }

    fn upscale(img: &[u8], k: usize) -> Vec<u8> {
        let w = SIDE * k;
        (0..w * w)
            .map(|i| img[(i / w / k) * SIDE + (i % w) / k])
            .collect()
    }

    #[test]
    fn a_centered_mnist_digit_drawn_ten_times_larger_comes_back_unchanged() {
        let img = bar();
        assert_eq!(mnist_from_drawing(&upscale(&img, 10), 280, 280), img);
    }

    #[test]
    fn a_small_off_center_drawing_is_scaled_up_and_centered() {
        let mut canvas = vec![0u8; 100 * 100];
        for y in 5..15 {
            for x in 80..82 {
                canvas[y * 100 + x] = 255;
            }
        }
        let out = mnist_from_drawing(&canvas, 100, 100);
        let rows: Vec<usize> = (0..SIDE)
            .filter(|y| out[y * SIDE..(y + 1) * SIDE].iter().any(|&v| v > 0))
            .collect();
        assert_eq!(rows.len(), 20, "the ink fills a 20-pixel box");
        assert_eq!((rows[0], rows[19]), (4, 23), "and is centered vertically");
        let cols: Vec<usize> = (0..SIDE)
            .filter(|x| (0..SIDE).any(|y| out[y * SIDE + x] > 0))
            .collect();
        assert_eq!(cols, vec![12, 13, 14, 15]);
    }

    #[test]
    fn no_ink_or_wrong_sizes_give_a_blank_image() {
        assert!(
            mnist_from_drawing(&[0; 400], 20, 20)
                .iter()
                .all(|&v| v == 0)
        );
        assert!(
            mnist_from_drawing(&[255; 10], 20, 20)
                .iter()
                .all(|&v| v == 0)
        );
        assert!(mnist_from_drawing(&[], 0, 0).iter().all(|&v| v == 0));
    }
}
