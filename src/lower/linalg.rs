//! Dense linear algebra with gradients for small matrices: the Cholesky factor of a
//! symmetric positive-definite matrix and the solve of a lower-triangular system, each one
//! candle op with its own backward pass. The random-function guide (`infer::random_function`)
//! factors its `M x M` inducing-point kernel matrix every step.
//!
//! candle 0.11 has no linear algebra, and composing a Cholesky of tensor operations
//! (`exact::cholesky_columns`) costs O(M²) small ops each way: about 4,000 for M = 64, more
//! than the rest of a VAE's step. The factorization and the solves are nalgebra's, in f64;
//! what no crate gives us is their reverse-mode rules over candle tensors, written here
//! (Murray 2016, "Differentiation of the Cholesky decomposition"; the same rules as
//! PyTorch's `cholesky_backward` and `linalg_solve_triangular` backward).
//!
//! The ops run on the CPU; a tensor on another device is moved there and back (candle
//! carries gradients through `to_device`). They are meant for matrices of a few hundred
//! rows at most.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Tensor};
use nalgebra::DMatrix;

/// The lower-triangular `L` with `L Lᵀ = a`, for a symmetric positive-definite `a`
/// `[M, M]` (only its lower triangle is read). Not positive definite: an error.
pub fn cholesky(a: &Tensor) -> Result<Tensor> {
    on_cpu(a, |a| a.apply_op1(Cholesky))
}

/// `X = L⁻¹ B` for lower-triangular `l` `[M, M]` and `b` `[M, N]`.
pub fn solve_lower(l: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dev = l.device().clone();
    if dev.is_cpu() {
        l.apply_op2(b, SolveLower)
    } else {
        let l = l.to_device(&Device::Cpu)?;
        let b = b.to_device(&Device::Cpu)?;
        l.apply_op2(&b, SolveLower)?.to_device(&dev)
    }
}

fn on_cpu(t: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dev = t.device().clone();
    if dev.is_cpu() {
        f(t)
    } else {
        f(&t.to_device(&Device::Cpu)?)?.to_device(&dev)
    }
}

/// A 2-D tensor as an f64 matrix.
fn matrix(t: &Tensor) -> Result<DMatrix<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f64> = t
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    Ok(DMatrix::from_row_slice(r, c, &v))
}

/// A 2-D storage under its layout as an f64 matrix.
fn storage_matrix(s: &CpuStorage, l: &Layout) -> Result<DMatrix<f64>> {
    let dims = l.shape().dims();
    let &[r, c] = dims else {
        bail!("linear algebra on a tensor of shape {dims:?}: a matrix is needed")
    };
    let Some((lo, hi)) = l.contiguous_offsets() else {
        bail!("linear algebra on a non-contiguous tensor")
    };
    let v: Vec<f64> = match s {
        CpuStorage::F32(v) => v[lo..hi].iter().map(|&x| x as f64).collect(),
        CpuStorage::F64(v) => v[lo..hi].to_vec(),
        _ => bail!("linear algebra on a tensor that is neither f32 nor f64"),
    };
    Ok(DMatrix::from_row_slice(r, c, &v))
}

/// An f64 matrix as a storage of `like`'s dtype, row-major.
fn to_storage(m: &DMatrix<f64>, like: &CpuStorage) -> (CpuStorage, Shape) {
    let (r, c) = m.shape();
    let rows = (0..r).flat_map(|i| (0..c).map(move |j| (i, j)));
    let s = match like {
        CpuStorage::F64(_) => CpuStorage::F64(rows.map(|(i, j)| m[(i, j)]).collect()),
        _ => CpuStorage::F32(rows.map(|(i, j)| m[(i, j)] as f32).collect()),
    };
    (s, Shape::from((r, c)))
}

/// An f64 matrix as a tensor of `like`'s dtype and device.
fn to_tensor(m: &DMatrix<f64>, like: &Tensor) -> Result<Tensor> {
    let (r, c) = m.shape();
    let v: Vec<f64> = (0..r)
        .flat_map(|i| (0..c).map(move |j| m[(i, j)]))
        .collect();
    Tensor::from_vec(v, (r, c), like.device())?.to_dtype(like.dtype())
}

/// `Uᵀ⁻¹ B` for lower-triangular `l` (a solve with its transpose, upper triangular).
fn solve_lower_transposed(l: &DMatrix<f64>, b: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    match l.transpose().solve_upper_triangular(b) {
        Some(x) => Ok(x),
        None => bail!("a triangular solve met a zero on the diagonal"),
    }
}

struct Cholesky;

impl CustomOp1 for Cholesky {
    fn name(&self) -> &'static str {
        "cholesky"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let a = storage_matrix(s, l)?;
        if !a.is_square() {
            bail!("the Cholesky factor of a {:?} matrix", a.shape());
        }
        // nalgebra reads the lower triangle.
        match a.cholesky() {
            Some(c) => Ok(to_storage(&c.l(), s)),
            None => bail!("a kernel matrix is not positive definite (its Cholesky factor failed)"),
        }
    }

    /// `Ā = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹)`, with `Φ` the lower triangle with its diagonal halved
    /// and `sym(S) = (S + Sᵀ)/2` (the input is symmetric, so its gradient is).
    fn bwd(&self, _a: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let l = matrix(res)?;
        let lbar = matrix(grad)?;
        let mut p = l.transpose() * lbar;
        let n = p.nrows();
        for i in 0..n {
            for j in i + 1..n {
                p[(i, j)] = 0.0;
            }
            p[(i, i)] *= 0.5;
        }
        // X = L⁻ᵀ P, then S = X L⁻¹ = (L⁻ᵀ Xᵀ)ᵀ.
        let x = solve_lower_transposed(&l, &p)?;
        let s = solve_lower_transposed(&l, &x.transpose())?.transpose();
        let sym = (&s + s.transpose()) * 0.5;
        Ok(Some(to_tensor(&sym, grad)?))
    }
}

struct SolveLower;

impl CustomOp2 for SolveLower {
    fn name(&self) -> &'static str {
        "solve-lower-triangular"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let l = storage_matrix(s1, l1)?;
        let b = storage_matrix(s2, l2)?;
        if !l.is_square() || l.nrows() != b.nrows() {
            bail!(
                "a triangular solve of a {:?} system with a {:?} right-hand side",
                l.shape(),
                b.shape()
            );
        }
        match l.solve_lower_triangular(&b) {
            Some(x) => Ok(to_storage(&x, s2)),
            None => bail!("a triangular solve met a zero on the diagonal"),
        }
    }

    /// With `X = L⁻¹ B`: `B̄ = L⁻ᵀ X̄` and `L̄ = −tril(B̄ Xᵀ)`.
    fn bwd(
        &self,
        l: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let lm = matrix(l)?;
        let x = matrix(res)?;
        let bbar = solve_lower_transposed(&lm, &matrix(grad)?)?;
        let mut lbar = -(&bbar * x.transpose());
        let n = lbar.nrows();
        for i in 0..n {
            for j in i + 1..n {
                lbar[(i, j)] = 0.0;
            }
        }
        Ok((Some(to_tensor(&lbar, l)?), Some(to_tensor(&bbar, b)?)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Var};

    fn spd(n: usize, seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::seed(seed);
        let g = rng
            .normal(&[n, n], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let eye = Tensor::eye(n, DType::F64, &Device::Cpu).unwrap();
        (g.matmul(&g.t().unwrap()).unwrap() + (eye * n as f64).unwrap()).unwrap()
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// `L Lᵀ` gives the matrix back and `L` is lower triangular; the solve inverts `L`.
    #[test]
    fn the_factor_and_the_solve_invert_what_they_should() {
        let a = spd(7, 1);
        let l = cholesky(&a).unwrap();
        let back = l.matmul(&l.t().unwrap()).unwrap();
        assert!(max_abs(&(back - &a).unwrap()) < 1e-10);
        let v = l.to_vec2::<f64>().unwrap();
        for (i, row) in v.iter().enumerate() {
            assert!(row[i] > 0.0);
            assert!(row[i + 1..].iter().all(|&x| x == 0.0));
        }
        let mut rng = crate::rng::Rng::seed(2);
        let b = rng
            .normal(&[7, 3], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let x = solve_lower(&l, &b).unwrap();
        assert!(max_abs(&(l.matmul(&x).unwrap() - &b).unwrap()) < 1e-10);
        // Not positive definite: an error, not a panic.
        let bad = (a.neg()).unwrap();
        assert!(cholesky(&bad).is_err());
    }

    /// Both backward rules against central finite differences of a scalar function of
    /// the inputs, in f64: `f(A, B) = Σ W ⊙ solve(chol(A), B)` with A symmetric (the
    /// perturbation is symmetric, as A's gradient is).
    #[test]
    fn gradients_match_finite_differences() {
        let n = 5;
        let a0 = spd(n, 3);
        let mut rng = crate::rng::Rng::seed(4);
        let b0 = rng
            .normal(&[n, 2], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let w = rng
            .normal(&[n, 2], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let wl = rng
            .normal(&[n, n], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let f = |a: &Tensor, b: &Tensor| -> Tensor {
            let l = cholesky(a).unwrap();
            let x = solve_lower(&l, b).unwrap();
            // Both the solve's value and the factor itself enter the function.
            ((x * &w).unwrap().sum_all().unwrap() + (l * &wl).unwrap().sum_all().unwrap()).unwrap()
        };
        let av = Var::from_tensor(&a0).unwrap();
        let bv = Var::from_tensor(&b0).unwrap();
        let g = f(av.as_tensor(), bv.as_tensor()).backward().unwrap();
        let ga = g.get(av.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let gb = g.get(bv.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let h = 1e-6;
        let a = a0.to_vec2::<f64>().unwrap();
        for i in 0..n {
            for j in 0..=i {
                let mut plus = a.clone();
                let mut minus = a.clone();
                plus[i][j] += h;
                minus[i][j] -= h;
                if i != j {
                    plus[j][i] += h;
                    minus[j][i] -= h;
                }
                let t = |m: Vec<Vec<f64>>| Tensor::new(m, &Device::Cpu).unwrap();
                let fd = (f(&t(plus), &b0).to_scalar::<f64>().unwrap()
                    - f(&t(minus), &b0).to_scalar::<f64>().unwrap())
                    / (2.0 * h);
                // A symmetric perturbation moves both (i, j) and (j, i).
                let an = if i == j {
                    ga[i][i]
                } else {
                    ga[i][j] + ga[j][i]
                };
                assert!(
                    (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
                    "A[{i},{j}] {fd} {an}"
                );
            }
        }
        let b = b0.to_vec2::<f64>().unwrap();
        for i in 0..n {
            for j in 0..2 {
                let mut plus = b.clone();
                let mut minus = b.clone();
                plus[i][j] += h;
                minus[i][j] -= h;
                let t = |m: Vec<Vec<f64>>| Tensor::new(m, &Device::Cpu).unwrap();
                let fd = (f(&a0, &t(plus)).to_scalar::<f64>().unwrap()
                    - f(&a0, &t(minus)).to_scalar::<f64>().unwrap())
                    / (2.0 * h);
                assert!(
                    (fd - gb[i][j]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "B[{i},{j}]"
                );
            }
        }
    }
}
