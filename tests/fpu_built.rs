//! `flush_denormals_everywhere` called before anything used rayon: it builds the global
//! pool itself, and the pool's workers flush from their start. (Its own process: the
//! global pool can be built once.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use vic::train::fpu::{denormals_flushed, flush_denormals_everywhere, GlobalPool};

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn builds_the_global_pool_with_flushing_workers() {
    let product = || black_box(1e-30f32) * black_box(1e-10f32);
    assert!(product() > 0.0, "the check itself must be able to fail");
    assert_eq!(flush_denormals_everywhere(), GlobalPool::Built);
    assert_eq!(product(), 0.0);
    let seen: Vec<(f32, bool)> = rayon::broadcast(|_| (product(), denormals_flushed()));
    assert_eq!(seen.len(), candle_core::utils::get_num_threads());
    assert!(seen.iter().all(|&(x, f)| x == 0.0 && f), "{seen:?}");
    // candle's matmul runs on this pool: a product of denormal-sized terms is 0.
    let a = candle_core::Tensor::full(1e-20f32, (64, 64), &candle_core::Device::Cpu).unwrap();
    let c = a
        .matmul(&a)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(c, 0.0);
}
