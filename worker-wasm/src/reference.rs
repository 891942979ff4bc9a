//! A second, deliberately naive implementation of the architectures in
//! float64, used only by tests: finite differences taken here are precise
//! enough (no float32 noise, negligible kink crossings) to check the fast
//! float32 gradients of [`crate::Model`] on whole networks.

/// Mean cross-entropy of `labels` for `pixels` under `arch` with `params`.
pub fn mean_loss(arch: &str, params: &[f64], pixels: &[u8], labels: &[u8]) -> f64 {
    let mut total = 0.0;
    for (img, &label) in pixels.chunks_exact(784).zip(labels) {
        let x: Vec<f64> = img.iter().map(|&p| p as f64 / 255.0).collect();
        let logits = forward(arch, params, x);
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln() + max;
        total += lse - logits[label as usize];
    }
    total / labels.len() as f64
}

fn forward(arch: &str, p: &[f64], x: Vec<f64>) -> Vec<f64> {
    let mut at = 0;
    let mut take = |n: usize| {
        at += n;
        &p[at - n..at]
    };
    match arch {
        "lenet5" | "lenet5-tanh" => {
            let relu = arch == "lenet5";
            let a = |v: Vec<f64>| activate(v, relu);
            let y = a(conv(&x, 1, 28, take(150), take(6), 6, 5, 2));
            let y = pool(&y, 6, 28, relu);
            let y = a(conv(&y, 6, 14, take(2400), take(16), 16, 5, 0));
            let y = pool(&y, 16, 10, relu);
            let y = a(dense(&y, take(48000), take(120)));
            let y = a(dense(&y, take(10080), take(84)));
            dense(&y, take(840), take(10))
        }
        "lenet-mxnet" => {
            let a = |v: Vec<f64>| activate(v, false);
            let y = pool(
                &a(conv(&x, 1, 28, take(500), take(20), 20, 5, 0)),
                20,
                24,
                true,
            );
            let y = pool(
                &a(conv(&y, 20, 12, take(25000), take(50), 50, 5, 0)),
                50,
                8,
                true,
            );
            let y = a(dense(&y, take(400000), take(500)));
            dense(&y, take(5000), take(10))
        }
        _ => panic!("no reference for {arch}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f64],
    cin: usize,
    h: usize,
    w: &[f64],
    b: &[f64],
    cout: usize,
    k: usize,
    pad: usize,
) -> Vec<f64> {
    let o = h + 2 * pad + 1 - k;
    let mut y = vec![0.0; cout * o * o];
    for co in 0..cout {
        for oy in 0..o {
            for ox in 0..o {
                let mut s = b[co];
                for ci in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy + ky) as isize - pad as isize,
                                (ox + kx) as isize - pad as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < h {
                                s += w[((co * cin + ci) * k + ky) * k + kx]
                                    * x[(ci * h + iy as usize) * h + ix as usize];
                            }
                        }
                    }
                }
                y[(co * o + oy) * o + ox] = s;
            }
        }
    }
    y
}

fn pool(x: &[f64], c: usize, h: usize, max: bool) -> Vec<f64> {
    let o = h / 2;
    let mut y = vec![0.0; c * o * o];
    for ch in 0..c {
        for oy in 0..o {
            for ox in 0..o {
                let v = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(dy, dx)| x[(ch * h + 2 * oy + dy) * h + 2 * ox + dx]);
                y[(ch * o + oy) * o + ox] = if max {
                    v.iter().cloned().fold(f64::MIN, f64::max)
                } else {
                    v.iter().sum::<f64>() / 4.0
                };
            }
        }
    }
    y
}

fn dense(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    b.iter()
        .enumerate()
        .map(|(o, bo)| {
            bo + x
                .iter()
                .zip(&w[o * x.len()..])
                .map(|(a, c)| a * c)
                .sum::<f64>()
        })
        .collect()
}

fn activate(v: Vec<f64>, relu: bool) -> Vec<f64> {
    v.into_iter()
        .map(|z| if relu { z.max(0.0) } else { z.tanh() })
        .collect()
}
