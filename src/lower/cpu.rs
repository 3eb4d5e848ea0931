//! The f32 buffers of CPU tensors, as the hand-written candle ops (the fused Bernoulli
//! log-density in `dist::fused`, the fused dense layer in `nets::fused`) read them.

use candle_core::{CpuStorage, Layout, Storage};

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
