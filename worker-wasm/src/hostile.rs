//! Misbehaving builds of the training component, for the hot-reload tests
//! only (features `hostile-loop`, `hostile-memory`, `hostile-nan`, which
//! `hearth-test-components` turns on; no product build has them).
//!
//! Each instance counts its `train-batch` calls. A device self-tests an
//! offered component with one call in an instance of its own, so the loop
//! and the memory bomb pass it and strike in the rounds after the swap;
//! NaN parameters are caught by the self-test itself.

use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};

/// `train-batch` calls of this instance so far.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Calls that behave before the component misbehaves.
const HONEST_CALLS: u32 = 1;

/// Called at the start of every `train-batch`.
pub fn misbehave() {
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    if calls < HONEST_CALLS {
        return;
    }
    #[cfg(feature = "hostile-loop")]
    loop {
        black_box(CALLS.load(Ordering::Relaxed));
    }
    #[cfg(feature = "hostile-memory")]
    {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(black_box(vec![1u8; 16 << 20]));
        }
    }
}

/// The parameters as this component returns them: NaN once it has trained.
#[cfg(feature = "hostile-nan")]
pub fn poison(mut params: Vec<f32>) -> Vec<f32> {
    if CALLS.load(Ordering::Relaxed) > 0 {
        params.fill(f32::NAN);
    }
    params
}
