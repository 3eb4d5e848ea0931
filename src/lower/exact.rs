//! The exact posterior and marginal likelihood of a linear-Gaussian model (`guide exact`,
//! LANGUAGE.md section 8), and the exact log p(x) of such a model whatever its guide (the
//! EM picture of `schedule = alternate(...)`).
//!
//! Every latent is Normal, and so is every observation of a latent, each with a mean
//! affine in the latents and a latent-free scale (the checker's
//! `ExactPosterior::LinearGaussian`), and the model has no loop (a chain over time steps
//! goes to `kalman`). Nothing here knows the model's networks:
//! the affine map is read off the model itself by *probing* it: one pass of the model's
//! score block over `B * (L + 1)` rows, where example `i`'s rows carry the latents
//! `u = 0` and `u = e_1 .. e_L` (`L` the total size of all latents). Because the mean is
//! affine, `mean(e_l) - mean(0)` is exactly column `l` of its loading matrix, with
//! gradients to every parameter that shapes it.
//!
//! A latent's prior mean may itself be affine in earlier latents (a Gaussian network):
//! `u = a + Bm u + diag(s) eps` with `Bm` strictly lower triangular in site order (read
//! off the same probes), so `u = mu0 + Tm eps` with `mu0 = (I - Bm)^-1 a` and
//! `Tm = (I - Bm)^-1 diag(s)`. The observations are then `x ~ N(b + W eps, diag(sigma^2))`
//! with `W = B Tm` (`[D, L]`) and `b = mean(0) + B mu0`, so `x ~ N(b, W W^T + Psi)`,
//! `Psi = diag(sigma^2)`. With the small
//! `L x L` matrix `M = I + W^T Psi^-1 W` = `C C^T` (Cholesky):
//! - the matrix determinant lemma: `log det(W W^T + Psi) = sum log sigma^2 + log det M`;
//! - Woodbury: `r^T (W W^T + Psi)^-1 r = r^T Psi^-1 r - |C^-1 W^T Psi^-1 r|^2`, `r = x - b`;
//! - the posterior `eps | x ~ N(M^-1 W^T Psi^-1 r, M^-1)`, so `E[u | x] = mu0 + Tm that`.
//!
//! The cost per example is O(D L^2) plus an O(L^3) factorization.

use super::eval::{Frame, Pass, Val};
use super::objective::Batch;
use super::LoweredModel;
use crate::ir::{DistKind, DistParam, SiteVar, Stmt};
use crate::rng::Rng;
use candle_core::{bail, DType, Result, Tensor, D};

/// What the exact computation gives per batch.
pub struct Exact {
    /// `log p(x)` per example `[B]` (every observed data variable).
    pub log_px: Tensor,
    /// The posterior mean of every latent, `(LatentId, [B, ...shape])`.
    pub means: Vec<(usize, Tensor)>,
}

/// The latents of the model's top-level sites, in order: `(id, numel, shape)`. Errors when
/// the model is outside what this module computes (loops, global latents), which the
/// checker's linear-Gaussian rule does not all rule out.
fn latent_layout(model: &LoweredModel) -> Result<Vec<(usize, usize, Vec<usize>)>> {
    let program = &model.program;
    let mut out = Vec::new();
    for st in &model.program.model.stmts {
        match st {
            Stmt::Loop { .. } => {
                bail!("the exact marginal likelihood of a model with a `for` loop is not lowered by this release")
            }
            Stmt::Sample(site) => {
                if let SiteVar::Latent(id) = site.var {
                    let def = &program.latents[id];
                    if def.global {
                        bail!(
                            "the exact marginal likelihood with the global latent `{}` is not lowered by this release",
                            def.name
                        );
                    }
                    let shape = def.ty.shape.clone();
                    out.push((id, def.ty.numel().max(1), shape));
                }
            }
            Stmt::Let { .. } => {}
        }
    }
    Ok(out)
}

/// Rows `[B * (L + 1), ...]` back to `[B, L + 1, n]` (the per-example probes).
fn per_probe(t: &Tensor, b: usize, probes: usize) -> Result<Tensor> {
    let n = t.elem_count() / (b * probes).max(1);
    t.reshape((b, probes, n))
}

/// The lower-triangular Cholesky factor of a batch of symmetric positive-definite
/// matrices `m` (`[B, L, L]`), as its columns (`[B, L]` each, zero above the diagonal).
///
/// Written by hand from tensor operations because candle 0.11 has no linear algebra
/// (no Cholesky, solve or determinant) and every step here must carry gradients; `L` is
/// the (small) number of latent dimensions, so the O(L^2) small operations are cheap.
/// `M = I + W^T Psi^-1 W` has every eigenvalue >= 1, so no pivot is ever small.
pub fn cholesky_columns(m: &Tensor) -> Result<Vec<Tensor>> {
    let (_, l, l2) = m.dims3()?;
    if l != l2 {
        bail!(
            "internal error: Cholesky of a non-square matrix {:?}",
            m.dims()
        );
    }
    let dev = m.device();
    let mut cols: Vec<Tensor> = Vec::with_capacity(l);
    for j in 0..l {
        // v = M[:, j] - sum_{k<j} C[:, k] C[j, k]
        let mut v = m.narrow(2, j, 1)?.squeeze(2)?;
        for c in &cols {
            v = (v - c.broadcast_mul(&c.narrow(1, j, 1)?)?)?;
        }
        let pivot = v.narrow(1, j, 1)?.sqrt()?; // [B, 1]
        let mask: Vec<f32> = (0..l).map(|i| if i >= j { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (1, l), dev)?;
        cols.push(v.broadcast_div(&pivot)?.broadcast_mul(&mask)?);
    }
    Ok(cols)
}

/// The diagonal of a factor given by its columns, `[B, L]`.
pub(super) fn diagonal(cols: &[Tensor]) -> Result<Tensor> {
    let d: Vec<Tensor> = cols
        .iter()
        .enumerate()
        .map(|(j, c)| c.narrow(1, j, 1))
        .collect::<Result<_>>()?;
    Tensor::cat(&d, 1)
}

/// Solve `C y = v` for lower-triangular `C` given by columns (`v`: `[B, L]`).
pub(super) fn forward_solve(cols: &[Tensor], v: &Tensor) -> Result<Tensor> {
    let mut res = v.clone();
    let mut ys = Vec::with_capacity(cols.len());
    for (j, c) in cols.iter().enumerate() {
        let y = res.narrow(1, j, 1)?.div(&c.narrow(1, j, 1)?)?; // [B, 1]
        res = (res - c.broadcast_mul(&y)?)?;
        ys.push(y);
    }
    Tensor::cat(&ys, 1)
}

/// Solve `C^T m = y` for lower-triangular `C` given by columns (`y`: `[B, L]`).
pub(super) fn backward_solve(cols: &[Tensor], y: &Tensor) -> Result<Tensor> {
    let l = cols.len();
    let mut ms: Vec<Option<Tensor>> = vec![None; l];
    for j in (0..l).rev() {
        // m_j = (y_j - sum_{k>j} C[k, j] m_k) / C[j, j]
        let mut acc = y.narrow(1, j, 1)?;
        for (k, mk) in ms.iter().enumerate().skip(j + 1) {
            if let Some(mk) = mk {
                acc = (acc - cols[j].narrow(1, k, 1)?.mul(mk)?)?;
            }
        }
        ms[j] = Some(acc.div(&cols[j].narrow(1, j, 1)?)?);
    }
    let ms: Vec<Tensor> = ms.into_iter().flatten().collect();
    Tensor::cat(&ms, 1)
}

impl LoweredModel {
    /// The exact `log p(x)` per example and the exact posterior means of a linear-Gaussian
    /// model (the checker's rule; see the module documentation), on one batch.
    pub fn exact_linear_gaussian(&self, batch: &Batch, rng: &mut Rng) -> Result<Exact> {
        let layout = latent_layout(self)?;
        let total: usize = layout.iter().map(|(_, n, _)| n).sum();
        let b = batch.rows;
        let probes = total + 1;
        let rows = b * probes;
        let dev = self.device();

        // Probe rows: u = 0, then each unit vector, for every example.
        let eye = Tensor::eye(total, DType::F32, dev)?;
        let probe = Tensor::cat(&[Tensor::zeros((1, total), DType::F32, dev)?, eye], 0)?;
        let probe = probe
            .unsqueeze(0)?
            .broadcast_as((b, probes, total))?
            .contiguous()?
            .reshape((rows, total))?;
        let mut frame = Frame::new(
            self,
            Pass::Score,
            self.program.model.locals.len(),
            self.program.model.loops.len(),
            b,
            rows,
            false,
            &batch.data,
        );
        let mut offset = 0;
        for (id, n, shape) in &layout {
            let mut dims = vec![rows];
            dims.extend_from_slice(shape);
            let v = probe.narrow(1, offset, *n)?.contiguous()?.reshape(dims)?;
            frame.latents[*id] = Some(Val::Rows(v));
            offset += n;
        }
        frame.run(&self.program.model.stmts, rng)?;

        // Per latent site: its mean at u = 0 and at each probe, and its scale.
        let (mut a0, mut a_probed, mut s) = (Vec::new(), Vec::new(), Vec::new());
        let (mut loads, mut base, mut sigma, mut xs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut other = Tensor::zeros(b, DType::F32, dev)?;
        for rec in &frame.records {
            let normal = rec.dist.kind() == DistKind::Normal;
            let param = |p: DistParam| -> Result<Tensor> {
                match rec.dist.param(p) {
                    Some(t) => per_probe(&t.contiguous()?, b, probes),
                    None => bail!("internal error: a Normal without its `{p:?}`"),
                }
            };
            match rec.var {
                SiteVar::Latent(id) => {
                    if !normal {
                        bail!(
                            "the exact marginal likelihood needs the latent `{}` to be Normal",
                            self.program.latents[id].name
                        );
                    }
                    let loc = param(DistParam::Loc)?; // [B, P, n]
                    let at_zero = loc.narrow(1, 0, 1)?;
                    a_probed.push(loc.narrow(1, 1, total)?.broadcast_sub(&at_zero)?); // [B, L, n]
                    a0.push(at_zero.squeeze(1)?);
                    s.push(param(DistParam::Scale)?.narrow(1, 0, 1)?.squeeze(1)?);
                }
                SiteVar::Data(_) if normal => {
                    let loc = param(DistParam::Loc)?; // [B, P, D]
                    let at_zero = loc.narrow(1, 0, 1)?; // [B, 1, D]
                    loads.push(loc.narrow(1, 1, total)?.broadcast_sub(&at_zero)?); // [B, L, D]
                    base.push(at_zero.squeeze(1)?);
                    sigma.push(param(DistParam::Scale)?.narrow(1, 0, 1)?.squeeze(1)?);
                    xs.push(
                        per_probe(&rec.value.contiguous()?, b, probes)?
                            .narrow(1, 0, 1)?
                            .squeeze(1)?,
                    );
                }
                SiteVar::Data(_) => {
                    // An observation the checker found free of latents: its density at any
                    // probe is its density.
                    let lp = rec.dist.log_prob(&rec.value)?.reshape((b, probes))?;
                    other = (other + lp.narrow(1, 0, 1)?.squeeze(1)?)?;
                }
            }
        }
        if base.is_empty() {
            bail!("internal error: a linear-Gaussian model with no Normal observation");
        }
        let a = Tensor::cat(&a0, 1)?; // [B, L]
        let s = Tensor::cat(&s, 1)?; // [B, L]
                                     // The priors' dependence on earlier latents: u = a + Bm u + diag(s) eps, with Bm
                                     // strictly lower triangular in site order, so u = mu + Tm eps with
                                     // mu = (I - Bm)^-1 a, Tm = (I - Bm)^-1 diag(s); (I - Bm)^-1 = I + Bm + Bm^2 + ...
                                     // (Bm is nilpotent), summed by L steps of X <- I + Bm X.
        let bm = Tensor::cat(&a_probed, 2)?.transpose(1, 2)?.contiguous()?; // [B, L, L]
        let eye_l = Tensor::eye(total, DType::F32, dev)?.unsqueeze(0)?;
        let mut inv = eye_l.broadcast_as(bm.shape())?.contiguous()?;
        for _ in 1..total {
            inv = bm.matmul(&inv)?.broadcast_add(&eye_l)?;
        }
        let mu0 = inv.matmul(&a.unsqueeze(2)?)?.squeeze(2)?; // [B, L]
        let tm = inv.broadcast_mul(&s.unsqueeze(1)?)?; // [B, L, L]
        let loads = Tensor::cat(&loads, 2)?; // B^T: [B, L, D]
        let base = Tensor::cat(&base, 1)?; // [B, D]
        let sigma = Tensor::cat(&sigma, 1)?;
        let x = Tensor::cat(&xs, 1)?;
        let d = x.dim(1)?;

        // eps-space loadings W^T = Tm^T B^T and the marginal mean b = mean(0) + B mu.
        let wt = tm.transpose(1, 2)?.matmul(&loads)?; // [B, L, D]
        let mean = (base + mu0.unsqueeze(1)?.matmul(&loads)?.squeeze(1)?)?;
        let r = (x - mean)?;
        let var = sigma.sqr()?;
        let a = wt.broadcast_div(&var.unsqueeze(1)?)?; // W^T Psi^-1: [B, L, D]
        let m = a
            .matmul(&wt.transpose(1, 2)?.contiguous()?)?
            .broadcast_add(&eye_l)?;
        let v = a.matmul(&r.unsqueeze(2)?)?.squeeze(2)?; // [B, L]
        let chol = cholesky_columns(&m)?;
        let y = forward_solve(&chol, &v)?;
        let quad = ((r.sqr()? / &var)?.sum(1)? - y.sqr()?.sum(1)?)?;
        let logdet = (var.log()?.sum(1)? + (diagonal(&chol)?.log()?.sum(1)? * 2.0)?)?;
        let log_2pi = (2.0 * std::f64::consts::PI).ln();
        let log_px = (((quad + logdet)? + d as f64 * log_2pi)? * -0.5)?;
        let log_px = (log_px + other)?;

        let eps_mean = backward_solve(&chol, &y)?;
        let u_mean = (mu0 + tm.matmul(&eps_mean.unsqueeze(2)?)?.squeeze(2)?)?;
        let mut means = Vec::with_capacity(layout.len());
        let mut offset = 0;
        for (id, n, shape) in &layout {
            let mut dims = vec![b];
            dims.extend_from_slice(shape);
            means.push((
                *id,
                u_mean
                    .narrow(D::Minus1, offset, *n)?
                    .contiguous()?
                    .reshape(dims)?,
            ));
            offset += n;
        }
        Ok(Exact { log_px, means })
    }
}
