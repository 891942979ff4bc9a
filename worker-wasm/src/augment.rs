//! Small random shifts of the training images, as LeCun's distortions of
//! MNIST: each image moves by up to `max` pixels in x and y (the border
//! fills with background), a fresh draw every round. Applied on the device
//! to its copy of the round's images, so the samples the ledger credits
//! stay the same; the draws follow from a seed, so a round is reproducible.

use crate::IMAGE_LEN;

/// Side of an image.
const SIDE: usize = 28;

/// A 64-bit mix (SplitMix64's finalizer): a seed to well-spread bits.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Shifts each 28×28 image of `pixels` by its own offsets in `-max..=max`
/// (drawn from `seed` and its position), in place. `max` 0 changes nothing.
pub fn shift(pixels: &mut [u8], max: u8, seed: u64) {
    if max == 0 {
        return;
    }
    let span = 2 * u64::from(max) + 1;
    let mut image = [0u8; IMAGE_LEN];
    for (i, img) in pixels.chunks_exact_mut(IMAGE_LEN).enumerate() {
        let r = mix(seed ^ mix(i as u64));
        let dx = (r % span) as isize - isize::from(max);
        let dy = ((r >> 32) % span) as isize - isize::from(max);
        if dx == 0 && dy == 0 {
            continue;
        }
        image.copy_from_slice(img);
        img.fill(0);
        for y in 0..SIDE as isize {
            let sy = y - dy;
            if !(0..SIDE as isize).contains(&sy) {
                continue;
            }
            for x in 0..SIDE as isize {
                let sx = x - dx;
                if (0..SIDE as isize).contains(&sx) {
                    img[y as usize * SIDE + x as usize] = image[sy as usize * SIDE + sx as usize];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot_at(x: usize, y: usize) -> Vec<u8> {
        let mut img = vec![0u8; IMAGE_LEN];
        img[y * SIDE + x] = 255;
        img
    }

    #[test]
    fn images_move_by_at_most_max_and_keep_their_ink() {
        let mut batch: Vec<u8> = (0..200).flat_map(|_| dot_at(14, 14)).collect();
        shift(&mut batch, 2, 7);
        let mut moved = 0;
        for img in batch.chunks_exact(IMAGE_LEN) {
            let at = img.iter().position(|&p| p == 255).expect("the dot stays");
            let (x, y) = (at % SIDE, at / SIDE);
            assert!(x.abs_diff(14) <= 2 && y.abs_diff(14) <= 2, "({x}, {y})");
            assert_eq!(img.iter().filter(|&&p| p != 0).count(), 1);
            moved += usize::from((x, y) != (14, 14));
        }
        assert!(moved > 150, "most images move: {moved} of 200");
    }

    #[test]
    fn the_same_seed_gives_the_same_shifts_and_zero_none() {
        let base: Vec<u8> = (0..10).flat_map(|i| dot_at(5 + i, 20)).collect();
        let (mut a, mut b, mut c) = (base.clone(), base.clone(), base.clone());
        shift(&mut a, 2, 42);
        shift(&mut b, 2, 42);
        shift(&mut c, 0, 42);
        assert_eq!(a, b);
        assert_eq!(c, base);
        // Ink pushed past the border is gone, not wrapped.
        let mut edge = dot_at(0, 0);
        for seed in 0..50 {
            let mut e = edge.clone();
            shift(&mut e, 1, seed);
            assert!(e.iter().filter(|&&p| p != 0).count() <= 1);
        }
        edge.clear();
    }
}
