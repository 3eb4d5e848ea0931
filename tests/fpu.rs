//! Denormal flushing on the training thread and on rayon's global pool (where candle's CPU
//! kernels and matmul run). One test per process state, so this file holds one test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use vic::train::fpu::{denormals_flushed, flush_denormals_everywhere, GlobalPool};

/// 1e-30 * 1e-10 = 1e-40, below f32's smallest normal (1.18e-38): a denormal, or 0 when
/// flushed. `black_box` keeps the compiler from folding it at compile time.
fn denormal_product() -> f32 {
    black_box(1e-30f32) * black_box(1e-10f32)
}

/// A denormal input: DAZ reads it as 0, so adding 0 gives 0.
fn denormal_input() -> f32 {
    black_box(f32::from_bits(1)) + black_box(0.0f32)
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn flushes_on_this_thread_and_on_an_existing_global_pool() {
    // As if candle had already used rayon: the global pool exists, without the flags.
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .unwrap();
    assert!(!denormals_flushed());
    assert!(
        denormal_product() > 0.0,
        "the check itself must be able to fail"
    );
    let before: Vec<f32> = rayon::broadcast(|_| denormal_product());
    assert!(before.iter().all(|&x| x > 0.0));

    assert_eq!(flush_denormals_everywhere(), GlobalPool::Broadcast);

    assert!(denormals_flushed());
    assert_eq!(denormal_product(), 0.0);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(denormal_input(), 0.0);
    let after: Vec<(f32, bool)> = rayon::broadcast(|_| (denormal_product(), denormals_flushed()));
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|&(x, flushed)| x == 0.0 && flushed),
        "{after:?}"
    );
    // Work that rayon schedules (as candle's kernels do) sees the flag too.
    use rayon::prelude::*;
    let sum: f32 = (0..10_000)
        .into_par_iter()
        .map(|_| denormal_product())
        .sum();
    assert_eq!(sum, 0.0);
    // A new thread inherits its creator's flags.
    assert_eq!(std::thread::spawn(denormal_product).join().unwrap(), 0.0);
}
