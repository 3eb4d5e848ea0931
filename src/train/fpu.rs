//! Floating-point environment for training: flush denormals to zero on the training thread
//! and on the threads candle's CPU kernels run on.
//!
//! Why: Adam's second moment decays towards ~1e-38 and below for parameters whose gradients
//! are small, and arithmetic on denormal f32 values is 10-100x slower on x86. PyTorch
//! flushes them (`torch.set_flush_denormal(True)`); so do we.
//!
//! Where candle 0.11 runs its CPU work (read from candle-core 0.11.1 and gemm 0.19):
//! - small ops run on the calling thread;
//! - elementwise/reduction kernels (`cpu/kernels.rs`: `rayon::scope`, `par_iter`) and the
//!   f32 matmul (`gemm` with `Parallelism::Rayon`, i.e. `into_par_iter` on the current
//!   pool) run on **rayon's global pool**, since candle never installs a pool of its own
//!   around them;
//! - `candle_core::utils::with_threadpool` has a private pool that candle itself does not
//!   use; elementwise ops of 64Ki values or more run on candle's `BarrierPool`, threads of
//!   its own that these flags do not reach: `vic` turns that pool off at start
//!   ([`crate::io::keep_candle_elementwise_on_caller`]), so those ops run on the calling
//!   thread.
//!
//! The flags are per thread (MXCSR on x86, FPCR on aarch64) and a new thread copies its
//! creator's, so the order of calls does not change the outcome but does change the cost:
//! call [`flush_denormals_everywhere`] once, from the training thread, **before the first
//! candle CPU op** — then it builds the global pool itself with a start handler that sets
//! the flags. If something already built the global pool, the flags are set on each of its
//! (long-lived) workers with `rayon::broadcast` instead; that is the path `vic` takes, since
//! it runs its commands on a worker of a pool built first ([`crate::io::run_on_pool`]). Any
//! other thread that runs candle ops (a data loader, say) must call [`flush_denormals`]
//! itself.
//!
//! Rust and LLVM assume the default floating-point environment; with these flags set,
//! a denormal result that the compiler folded at compile time can differ from the same
//! computation done at run time. Nothing in vic depends on denormal results.

/// MXCSR bit 15: flush-to-zero (denormal results become 0).
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "x86", target_feature = "sse")
))]
const MXCSR_FTZ: u32 = 1 << 15;
/// MXCSR bit 6: denormals-are-zero (denormal inputs are read as 0).
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "x86", target_feature = "sse")
))]
const MXCSR_DAZ: u32 = 1 << 6;
/// FPCR bit 24 (FZ): flush denormal inputs and outputs to zero.
#[cfg(target_arch = "aarch64")]
const FPCR_FZ: u64 = 1 << 24;

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "x86", target_feature = "sse")
))]
fn read_mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit MXCSR into the pointed-to, writable u32.
    unsafe {
        core::arch::asm!(
            "stmxcsr [{p}]",
            p = in(reg) &mut csr as *mut u32,
            options(nostack, preserves_flags)
        );
    }
    csr
}

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "x86", target_feature = "sse")
))]
fn write_mxcsr(csr: u32) {
    // SAFETY: ldmxcsr loads MXCSR from a valid u32; the value only adds the FTZ/DAZ bits
    // to the current one, which every SSE2 CPU supports (DAZ since the Pentium 4).
    unsafe {
        core::arch::asm!(
            "ldmxcsr [{p}]",
            p = in(reg) &csr as *const u32,
            options(nostack, preserves_flags, readonly)
        );
    }
}

/// Sets flush-to-zero and denormals-are-zero for the calling thread (x86: MXCSR FTZ and
/// DAZ; aarch64: FPCR FZ; elsewhere nothing).
pub fn flush_denormals() {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "x86", target_feature = "sse")
    ))]
    write_mxcsr(read_mxcsr() | MXCSR_FTZ | MXCSR_DAZ);

    #[cfg(target_arch = "aarch64")]
    {
        let mut fpcr: u64;
        // SAFETY: reading and writing FPCR is allowed at EL0; only the FZ bit changes.
        unsafe {
            core::arch::asm!("mrs {r}, fpcr", r = out(reg) fpcr, options(nomem, nostack, preserves_flags));
            fpcr |= FPCR_FZ;
            core::arch::asm!("msr fpcr, {r}", r = in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
    }
}

/// Whether the calling thread flushes denormals (always `false` where
/// [`flush_denormals`] is a no-op).
pub fn denormals_flushed() -> bool {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "x86", target_feature = "sse")
    ))]
    {
        read_mxcsr() & (MXCSR_FTZ | MXCSR_DAZ) == MXCSR_FTZ | MXCSR_DAZ
    }

    #[cfg(target_arch = "aarch64")]
    {
        let fpcr: u64;
        // SAFETY: reading FPCR is allowed at EL0.
        unsafe {
            core::arch::asm!("mrs {r}, fpcr", r = out(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
        fpcr & FPCR_FZ != 0
    }

    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "x86", target_feature = "sse"),
        target_arch = "aarch64"
    )))]
    {
        false
    }
}

/// Stack size of rayon's workers: `vic` runs whole commands on one of them
/// ([`crate::io::run_on_pool`]), so they get a main thread's 8 MiB, not rayon's 2 MiB.
const WORKER_STACK: usize = 8 << 20;

/// A rayon pool builder like candle's `init_global_threadpool` (same thread count, same
/// affinity handling), with [`WORKER_STACK`].
pub fn pool_builder() -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new()
        .num_threads(candle_core::utils::get_num_threads())
        .stack_size(WORKER_STACK)
        .start_handler(|_| candle_core::utils::set_thread_affinity())
}

/// [`pool_builder`] whose threads also flush denormals from their start.
pub fn flushing_pool_builder() -> rayon::ThreadPoolBuilder {
    pool_builder().start_handler(|_| {
        candle_core::utils::set_thread_affinity();
        flush_denormals();
    })
}

/// How [`flush_denormals_everywhere`] reached rayon's global pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalPool {
    /// The global pool was built here, with a start handler that flushes denormals.
    Built,
    /// The global pool existed already; each of its workers was told by a broadcast.
    Broadcast,
}

/// Flushes denormals on the calling thread and on every thread of rayon's global pool,
/// where candle's CPU kernels and its matmul run. See the module docs for the ordering:
/// call it before the first candle op.
pub fn flush_denormals_everywhere() -> GlobalPool {
    flush_denormals();
    let how = match flushing_pool_builder().build_global() {
        Ok(()) => GlobalPool::Built,
        Err(_) => GlobalPool::Broadcast,
    };
    // Also after building: cheap, and it makes sure every worker has started and run the
    // handler before the first timed step.
    rayon::broadcast(|_| flush_denormals());
    how
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    fn denormal_product() -> f32 {
        black_box(1e-30f32) * black_box(1e-10f32)
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn pool_threads_flush_from_their_start() {
        // Built from a test thread without the flags, so the workers get them only from
        // the start handler (not by inheriting them).
        assert!(!denormals_flushed());
        let pool = flushing_pool_builder().num_threads(2).build().unwrap();
        let seen: Vec<(f32, bool)> = pool.broadcast(|_| (denormal_product(), denormals_flushed()));
        assert!(seen.iter().all(|&(x, f)| x == 0.0 && f), "{seen:?}");
        // And a plain pool built the same way does not flush: the test can fail.
        let plain = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert!(plain.install(denormal_product) > 0.0);
    }
}
