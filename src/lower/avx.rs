//! Eight-lane AVX2/FMA kernels for the hand-written ops' transcendental passes: softplus
//! and its derivative (the fused dense layer and `add_lifted`) and the Bernoulli
//! log-density in logits with its gradient.
//!
//! The crate is built for baseline x86-64, so `wide`'s `f32x8` exponential and logarithm
//! run as two four-lane halves without fused multiply-adds. These kernels take the same
//! Cephes single-precision polynomials (as `wide` and sse_mathfun do) on 256-bit vectors,
//! compiled with `#[target_feature(enable = "avx2,fma")]` and taken when the CPU has
//! both ([`available`]); otherwise the callers keep their `wide` paths. Written by hand
//! because no crate offers runtime-dispatched vector exponentials for slices.
//!
//! Every kernel reads and writes slices of one length; the tail (under eight values) goes
//! through a zero-padded vector.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the CPU has AVX2 and FMA (a cached check): the condition of every kernel here
/// and of the other hand-written ops' copies compiled with
/// `#[target_feature(enable = "avx2,fma")]` (DRAW's attention loops).
#[inline(always)]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;

    /// `e^x`, Cephes' `expf`: `x = n ln 2 + r`, a degree-6 polynomial in `r`, times `2^n`.
    /// Clamped to ±88.376 (so `e^x` is 0 far below, and finite above).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-88.376_26)),
            _mm256_set1_ps(88.376_26),
        );
        let fx = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.0e-1,
        ] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_add_ps(_mm256_fmadd_ps(y, r2, r), _mm256_set1_ps(1.0));
        // 2^n from the exponent bits; n >= -127 here, and n = -127 gives 0.
        let n = _mm256_cvttps_epi32(fx);
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(n, _mm256_set1_epi32(127)),
            23,
        ));
        _mm256_mul_ps(y, pow2)
    }

    /// `ln x` for `x >= 1` (the only use here: `ln(1 + e^{−|l|})`), Cephes' `logf`:
    /// `x = m 2^e` with `m` in `[√½, √2)`, a degree-8 polynomial in `m − 1`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn ln(x: __m256) -> __m256 {
        let bits = _mm256_castps_si256(x);
        let mut e = _mm256_cvtepi32_ps(_mm256_sub_epi32(
            _mm256_srli_epi32(bits, 23),
            _mm256_set1_epi32(126),
        ));
        // The mantissa in [0.5, 1).
        let m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x807f_ffff_u32 as i32)),
            _mm256_set1_epi32(0x3f00_0000),
        ));
        let one = _mm256_set1_ps(1.0);
        // Below √½: m' = 2m − 1 and e − 1; else m' = m − 1.
        let small = _mm256_cmp_ps(
            m,
            _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
            _CMP_LT_OQ,
        );
        e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
        let m = _mm256_add_ps(_mm256_sub_ps(m, one), _mm256_and_ps(m, small));
        let z = _mm256_mul_ps(m, m);
        let mut y = _mm256_set1_ps(7.037_683_6e-2);
        for c in [
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ] {
            y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(c));
        }
        y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
        y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.121_944_4e-4), y);
        y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5), y);
        let x = _mm256_add_ps(m, y);
        _mm256_fmadd_ps(e, _mm256_set1_ps(0.693_359_4), x)
    }

    /// `softplus(z) = max(z, 0) + ln(1 + e^{−|z|})`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn softplus(z: __m256) -> __m256 {
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), abs));
        _mm256_add_ps(
            _mm256_max_ps(z, _mm256_setzero_ps()),
            ln(_mm256_add_ps(_mm256_set1_ps(1.0), e)),
        )
    }

    /// Eight values from `v` (at most eight), zero-padded.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn load(v: &[f32]) -> __m256 {
        if v.len() == 8 {
            _mm256_loadu_ps(v.as_ptr())
        } else {
            let mut a = [0f32; 8];
            a[..v.len()].copy_from_slice(v);
            _mm256_loadu_ps(a.as_ptr())
        }
    }

    /// Stores the first `out.len()` (at most eight) lanes of `y`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn store(out: &mut [f32], y: __m256) {
        if out.len() == 8 {
            _mm256_storeu_ps(out.as_mut_ptr(), y)
        } else {
            let mut a = [0f32; 8];
            _mm256_storeu_ps(a.as_mut_ptr(), y);
            let n = out.len();
            out.copy_from_slice(&a[..n]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softplus_add(row: &mut [f32], bias: &[f32]) {
        for (o, b) in row.chunks_mut(8).zip(bias.chunks(8)) {
            let z = _mm256_add_ps(load(o), load(b));
            store(o, softplus(z));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softplus_grad(d: &mut [f32], g: &[f32], y: &[f32]) {
        let one = _mm256_set1_ps(1.0);
        let neg = _mm256_set1_ps(-0.0);
        for ((d, g), y) in d.chunks_mut(8).zip(g.chunks(8)).zip(y.chunks(8)) {
            let y = load(y);
            // σ(z) = 1 − e^{−y}; for y below 1/64 the series y − y²/2 + y³/6 − y⁴/24,
            // which keeps its relative precision where 1 − e^{−y} cancels.
            let far = _mm256_sub_ps(one, exp(_mm256_xor_ps(y, neg)));
            let mut s = _mm256_set1_ps(-1.0 / 24.0);
            for c in [1.0 / 6.0, -0.5, 1.0] {
                s = _mm256_fmadd_ps(s, y, _mm256_set1_ps(c));
            }
            let near = _mm256_mul_ps(s, y);
            let small = _mm256_cmp_ps(y, _mm256_set1_ps(1.0 / 64.0), _CMP_LT_OQ);
            let sig = _mm256_blendv_ps(far, near, small);
            store(d, _mm256_mul_ps(load(g), sig));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn bernoulli_density(out: &mut [f32], x: &[f32], l: &[f32]) {
        for ((o, x), l) in out.chunks_mut(8).zip(x.chunks(8)).zip(l.chunks(8)) {
            let (x, l) = (load(x), load(l));
            store(o, _mm256_fmsub_ps(x, l, softplus(l)));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn bernoulli_dlogits(out: &mut [f32], g: &[f32], x: &[f32], l: &[f32]) {
        let one = _mm256_set1_ps(1.0);
        for (((o, g), x), l) in out
            .chunks_mut(8)
            .zip(g.chunks(8))
            .zip(x.chunks(8))
            .zip(l.chunks(8))
        {
            let l = load(l);
            // σ(l) without overflow: e = e^{−|l|}, 1/(1+e) at l >= 0 and e/(1+e) below.
            let e = exp(_mm256_sub_ps(
                _mm256_setzero_ps(),
                _mm256_andnot_ps(_mm256_set1_ps(-0.0), l),
            ));
            let r = _mm256_div_ps(one, _mm256_add_ps(one, e));
            let below = _mm256_cmp_ps(l, _mm256_setzero_ps(), _CMP_LT_OQ);
            let s = _mm256_blendv_ps(r, _mm256_mul_ps(e, r), below);
            store(o, _mm256_mul_ps(load(g), _mm256_sub_ps(load(x), s)));
        }
    }
}

/// `e^x` of a `wide` vector by the kernel here, for loops compiled with
/// `#[target_feature(enable = "avx2,fma")]` that inline it (the vdrop terms).
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn exp8(x: wide::f32x8) -> wide::f32x8 {
    from_m256(imp::exp(to_m256(x)))
}

/// `ln x` of a `wide` vector, as [`exp8`].
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn ln8(x: wide::f32x8) -> wide::f32x8 {
    from_m256(imp::ln(to_m256(x)))
}

/// A `wide` vector's lanes in a 256-bit register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn to_m256(x: wide::f32x8) -> __m256 {
    _mm256_loadu_ps(x.to_array().as_ptr())
}

/// A 256-bit register's lanes as a `wide` vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn from_m256(v: __m256) -> wide::f32x8 {
    let mut o = [0f32; 8];
    _mm256_storeu_ps(o.as_mut_ptr(), v);
    wide::f32x8::new(o)
}

/// `row[i] = softplus(row[i] + bias[i])`, when [`available`]; false (nothing written)
/// otherwise.
pub(crate) fn softplus_add(row: &mut [f32], bias: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() && row.len() == bias.len() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { imp::softplus_add(row, bias) };
        return true;
    }
    false
}

/// `d[i] = g[i] · σ(z_i)` from softplus's outputs `y = softplus(z)` (`σ(z) = 1 − e^{−y}`),
/// when [`available`]; false otherwise.
pub(crate) fn softplus_grad(d: &mut [f32], g: &[f32], y: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() && d.len() == g.len() && d.len() == y.len() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { imp::softplus_grad(d, g, y) };
        return true;
    }
    false
}

/// `out[i] = x[i]·l[i] − softplus(l[i])`, when [`available`]; false otherwise.
pub(crate) fn bernoulli_density(out: &mut [f32], x: &[f32], l: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() && out.len() == x.len() && out.len() == l.len() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { imp::bernoulli_density(out, x, l) };
        return true;
    }
    false
}

/// `out[i] = g[i]·(x[i] − σ(l[i]))`, when [`available`]; false otherwise.
pub(crate) fn bernoulli_dlogits(out: &mut [f32], g: &[f32], x: &[f32], l: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available() && out.len() == g.len() && out.len() == x.len() && out.len() == l.len() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { imp::bernoulli_dlogits(out, g, x, l) };
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    //! Each kernel against the same function in f64 from the standard library.
    use super::*;

    /// 4,003 values from −100 to 100, denser near 0 (not a multiple of eight).
    fn grid() -> Vec<f32> {
        (0..4003)
            .map(|i| {
                let t = i as f64 / 4002.0 * 2.0 - 1.0;
                (100.0 * t * t * t.signum()) as f32
            })
            .collect()
    }

    fn softplus64(z: f64) -> f64 {
        z.max(0.0) + (-z.abs()).exp().ln_1p()
    }

    fn sigmoid64(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    /// `|a − b| <= rel·|b| + abs` for every pair.
    fn check(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(err <= rel * w.abs() + abs, "{what} [{i}]: {g} against {w}");
        }
    }

    #[test]
    fn the_kernels_match_f64() {
        if !available() {
            return;
        }
        let z = grid();
        let n = z.len();
        let bias: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
        let mut row = z.clone();
        assert!(softplus_add(&mut row, &bias));
        let want: Vec<f64> = z
            .iter()
            .zip(&bias)
            .map(|(&z, &b)| softplus64(z as f64 + b as f64))
            .collect();
        check("softplus", &row, &want, 2e-6, 1e-7);

        // The derivative from softplus's own outputs, from tiny to large.
        let y: Vec<f32> = z.iter().map(|&z| softplus64(z as f64) as f32).collect();
        let g: Vec<f32> = (0..n).map(|i| 1.0 + (i % 3) as f32).collect();
        let mut d = vec![0f32; n];
        assert!(softplus_grad(&mut d, &g, &y));
        let want: Vec<f64> = y
            .iter()
            .zip(&g)
            .map(|(&y, &g)| g as f64 * -(-(y as f64)).exp_m1())
            .collect();
        check("softplus derivative", &d, &want, 1e-5, 1e-30);

        let x: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let mut out = vec![0f32; n];
        assert!(bernoulli_density(&mut out, &x, &z));
        let want: Vec<f64> = x
            .iter()
            .zip(&z)
            .map(|(&x, &l)| x as f64 * l as f64 - softplus64(l as f64))
            .collect();
        // x·l − softplus(l) cancels where x = 1 and l > 0: the error is relative to |l|.
        for (i, ((&g, &w), &l)) in out.iter().zip(&want).zip(&z).enumerate() {
            let err = (g as f64 - w).abs();
            let scale = w.abs().max(l.abs() as f64);
            assert!(
                err <= 2e-6 * scale + 1e-7,
                "Bernoulli density [{i}]: {g} against {w}"
            );
        }

        assert!(bernoulli_dlogits(&mut out, &g, &x, &z));
        let want: Vec<f64> = g
            .iter()
            .zip(&x)
            .zip(&z)
            .map(|((&g, &x), &l)| g as f64 * (x as f64 - sigmoid64(l as f64)))
            .collect();
        // x − σ(l) cancels where x = 1 and l > 0: an f32 σ is within 6e-8 of 1 there.
        check("Bernoulli gradient", &out, &want, 1e-5, 3.0 * 1.2e-7);
    }
}
