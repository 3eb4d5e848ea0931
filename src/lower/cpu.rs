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

/// [`contiguous_f32`], or an error naming the operand (`what`) of the hand-written op `op`.
pub(crate) fn f32_operand<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    contiguous_f32(s, l).ok_or_else(|| {
        candle_core::Error::Msg(format!("{op}: {what} is not a contiguous f32 CPU buffer"))
    })
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
    // A view repeating each value along its last axis (the gradient of a sum over that
    // axis): the values once, then each repeated, instead of candle's element-by-element
    // strided copy.
    let dims = t.dims();
    if let (Some(&last), Some(&0)) = (dims.last(), t.stride().last()) {
        let once = t
            .narrow(dims.len() - 1, 0, 1.min(last))?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut v = Vec::with_capacity(once.len() * last);
        for x in once {
            v.extend(std::iter::repeat_n(x, last));
        }
        return f(&v);
    }
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    f(&v)
}

/// Runs `f` with the thread-local flag `flag` set, restoring its value after (also when
/// `f` panics): the scopes of [`unfused`] and `nets::fused::without_weight_gradients`.
pub(crate) fn with_flag<R>(
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore(&'static std::thread::LocalKey<std::cell::Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(true)));
    f()
}

thread_local! {
    /// Set inside [`unfused`].
    static UNFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the hand-written CPU ops may take a tensor on `t`'s device: it is on the CPU,
/// and this thread is not inside [`unfused`]. Each op checks its dtypes and shapes beside.
pub(crate) fn fused_cpu(t: &candle_core::Tensor) -> bool {
    t.device().is_cpu() && !UNFUSED.with(|u| u.get())
}

/// Runs `f` with every hand-written op of the lowering declining (on this thread), so that
/// the graph is built from candle's own ops as on a GPU: the tests hold the two paths to
/// each other on every spec.
pub fn unfused<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&UNFUSED, f)
}

/// Eight lanes from a slice of at most eight values (the rest zero). A full slice is one
/// load: a copy of a length the compiler cannot see would be a `memcpy` call per lane
/// group.
#[inline(always)]
pub(crate) fn lanes(v: &[f32]) -> f32x8 {
    if let Ok(a) = <[f32; 8]>::try_from(v) {
        return f32x8::new(a);
    }
    let mut a = [0f32; 8];
    a[..v.len()].copy_from_slice(v);
    f32x8::new(a)
}

/// The first `out.len()` (at most eight) lanes of `r` into `out`; a full slice is one
/// store (see [`lanes`]).
#[inline(always)]
pub(crate) fn store_lanes(out: &mut [f32], r: f32x8) {
    match <&mut [f32; 8]>::try_from(&mut *out) {
        Ok(o) => *o = r.to_array(),
        Err(_) => {
            let n = out.len();
            out.copy_from_slice(&r.as_array()[..n]);
        }
    }
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
    store_lanes(o, r);
}

/// Asserts that `a` is within `rel` of `b`, relative to `b`'s largest magnitude (at
/// least 1): the fused ops' tests against candle's compositions.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn assert_close(a: &candle_core::Tensor, b: &candle_core::Tensor, rel: f32, what: &str) {
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let d = max_diff(a, b);
    assert!(
        d <= rel * scale.max(1.0),
        "{what}: differs by {d} (scale {scale})"
    );
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{Device, Tensor};

    /// Contiguous tensors are read in place, views (a row broadcast, a transpose, an
    /// empty axis) as their row-major values.
    #[test]
    fn with_f32_reads_every_layout_in_row_major_order() {
        let dev = Device::Cpu;
        let read = |t: &Tensor| with_f32(t, |v| Ok(v.to_vec())).unwrap();
        let plain = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let col = Tensor::new(&[[1f32], [2.0], [3.0]], &dev).unwrap();
        let m = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
        let cases = [
            col.broadcast_as((3, 4)).unwrap(),
            col.broadcast_as((2, 3, 4)).unwrap(),
            col.broadcast_as((3, 0)).unwrap(),
            m.t().unwrap(),
            m.clone(),
            m.narrow(1, 1, 2).unwrap(),
        ];
        for t in &cases {
            assert_eq!(read(t), plain(t), "{:?} {:?}", t.dims(), t.stride());
        }
        assert_eq!(read(&cases[0])[..5], [1.0, 1.0, 1.0, 1.0, 2.0]);
    }
}
