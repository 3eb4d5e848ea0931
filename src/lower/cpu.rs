//! The f32 buffers of CPU tensors, as the hand-written candle ops (the fused Bernoulli
//! log-density in `dist::fused`, the fused dense layer in `nets::fused`) read them.

use candle_core::{CpuStorage, Layout, Storage};
use wide::f32x8;

/// The values of a CPU storage under a layout, when it holds f32 and the layout is
/// contiguous (and lies inside the buffer).
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((lo, hi))) => v.get(lo..hi),
        _ => None,
    }
}

/// As [`contiguous_f32`] for a storage on any device: `None` off the CPU.
pub(crate) fn contiguous_f32_cpu<'a>(s: &'a Storage, l: &Layout) -> Option<&'a [f32]> {
    match s {
        Storage::Cpu(s) => contiguous_f32(s, l),
        _ => None,
    }
}

/// Calls `f` with the values of a CPU tensor as `f32`, in row-major order: the tensor's own
/// buffer when it is contiguous `f32`, else a converted copy.
pub(crate) fn with_f32<R>(
    t: &candle_core::Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    {
        let (s, l) = t.storage_and_layout();
        if let Some(v) = contiguous_f32_cpu(&s, l) {
            return f(v);
        }
    }
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    f(&v)
}

/// Eight lanes from a slice of at most eight values (the rest zero).
#[inline(always)]
pub(crate) fn lanes(v: &[f32]) -> f32x8 {
    let mut a = [0f32; 8];
    a[..v.len()].copy_from_slice(v);
    f32x8::new(a)
}

/// `out[i] = f(a[i], b[i], c[i])`, eight at a time (`wide`'s vectors, which the hand-written
/// ops use for their exponentials and logarithms); equal lengths.
#[inline(always)]
pub(crate) fn map3(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32x8, f32x8, f32x8) -> f32x8,
) {
    let mut o = out.chunks_exact_mut(8);
    let (mut a8, mut b8, mut c8) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    for (((o, a), b), c) in (&mut o).zip(&mut a8).zip(&mut b8).zip(&mut c8) {
        o.copy_from_slice(f(lanes(a), lanes(b), lanes(c)).as_array());
    }
    let o = o.into_remainder();
    let r = f(
        lanes(a8.remainder()),
        lanes(b8.remainder()),
        lanes(c8.remainder()),
    );
    o.copy_from_slice(&r.as_array()[..o.len()]);
}

/// The largest absolute elementwise difference of two tensors of one shape (the fused ops'
/// tests compare them with candle's compositions).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
