//! The exact posterior and marginal likelihood of a linear-Gaussian state-space model
//! (`plan::statespace`): a Kalman filter forward over the steps (log p(x) as the sum of
//! each step's predictive density), then a Rauch-Tung-Striebel smoother backward for the
//! posterior means, batched over examples and built from tensor operations, so training
//! maximizes the exact log p(x) with gradients to every parameter.
//!
//! Nothing here knows the model's networks: the affine maps are read off the model by
//! *probing* it, as `exact` does, but with `1 + L0 + 2L` probe rows per example (L0 the
//! size of the initial latents, L of one step's state) instead of one per latent scalar:
//! row 0 sets every latent to 0; rows `1..=L0` set the initial state to each unit vector;
//! the next L rows set the state to the unit vectors at the odd steps (0 at the even
//! ones), the last L at the even steps. Because the chain is first order, the mean of
//! `z[t]` (which reads only step t-1) and of `x[t]` (only step t) each see exactly one
//! unit vector in the rows of the right parity: their differences from row 0 are the
//! columns of the transition `A_t` and the emission `C_t`.
//!
//! Per step, with the prediction `z_t ~ N(m, P)`, `P = Lp Lp^T` (Cholesky) and the
//! observation `x_t ~ N(c + C z_t, R)`, `R` diagonal: `W = C Lp`, `M = I + W^T R^-1 W =
//! K K^T`; the predictive density of `x_t` by the determinant lemma and Woodbury (as in
//! `exact`); the filtered state `m + Lp M^-1 W^T R^-1 r` with covariance `G G^T`,
//! `G = Lp K^-T`; the next prediction `a + A m_f`, `A G G^T A^T + Q`. The cost per example
//! is O(T (D L^2 + L^3)) instead of the dense O((T L)^3).

use super::eval::{Frame, Pass, Val};
use super::exact::{backward_solve, cholesky_columns, diagonal, forward_solve, Exact};
use super::objective::Batch;
use super::LoweredModel;
use crate::ir::{DistKind, DistParam, SiteVar};
use crate::plan::statespace::state_space;
use crate::rng::Rng;
use candle_core::{bail, DType, Device, Result, Tensor, D};

/// Rows `[B * P, n]` (example-major) as `[B, P, n]`.
fn per_probe(t: &Tensor, b: usize, probes: usize) -> Result<Tensor> {
    let n = t.elem_count() / (b * probes).max(1);
    t.contiguous()?.reshape((b, probes, n))
}

/// A lower-triangular matrix `[B, L, L]` from its columns.
fn from_columns(cols: &[Tensor]) -> Result<Tensor> {
    Tensor::stack(cols, 2)
}

/// `[B, n]` -> `[B, n, n]` diagonal matrices.
fn diag(v: &Tensor) -> Result<Tensor> {
    let n = v.dim(1)?;
    let eye = Tensor::eye(n, v.dtype(), v.device())?.unsqueeze(0)?;
    eye.broadcast_mul(&v.unsqueeze(1)?)
}

/// `P^-1 v` for `P = L L^T` given by the columns of `L`.
fn chol_solve(cols: &[Tensor], v: &Tensor) -> Result<Tensor> {
    backward_solve(cols, &forward_solve(cols, v)?)
}

/// `x [B, n] · M [B, n, m]` -> `[B, m]` (a row vector times a batch of matrices).
fn vec_mat(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    x.unsqueeze(1)?.matmul(m)?.squeeze(1)
}

/// `M [B, n, m] · x [B, m]` -> `[B, n]`.
fn mat_vec(m: &Tensor, x: &Tensor) -> Result<Tensor> {
    m.matmul(&x.unsqueeze(2)?)?.squeeze(2)
}

/// One step's probed quantities.
struct StepModel {
    /// The state prior's mean at zero `[B, L]`, its transition `A^T` `[B, Lprev, L]`
    /// (`None` at step 1 with no initial state) and its scale `[B, L]`.
    a: Tensor,
    at: Option<Tensor>,
    q: Tensor,
    /// The observations' mean at zero `[B, D]`, emission `C^T` `[B, L, D]`, scale and
    /// values `[B, D]`; `None` for a step that observes nothing.
    obs: Option<(Tensor, Tensor, Tensor, Tensor)>,
}

/// Unit-vector probes: `[P, n]` with rows `first..first + n` the identity, others 0.
fn probe_block(p: usize, n: usize, first: usize, dev: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; p * n];
    for j in 0..n {
        v[(first + j) * n + j] = 1.0;
    }
    Tensor::from_vec(v, (p, n), dev)
}

impl LoweredModel {
    /// The exact `log p(x)` per example and the smoothed posterior means of a
    /// linear-Gaussian state-space model, on one batch.
    pub fn exact_kalman(&self, batch: &Batch, rng: &mut Rng) -> Result<Exact> {
        let Some(ss) = state_space(&self.program) else {
            bail!("internal error: the Kalman filter on a model that is not a state-space model")
        };
        let program = &self.program;
        let numel = |l: usize| program.latents[l].ty.numel();
        let step_numel = |l: usize| {
            let ty = &program.latents[l].ty;
            ty.shape[1..].iter().product::<usize>()
        };
        let l0: usize = ss.initial.iter().map(|&l| numel(l)).sum();
        let l: usize = ss.state.iter().map(|&s| step_numel(s)).sum();
        let probes = 1 + l0 + 2 * l;
        let b = batch.rows;
        let rows = b * probes;
        let dev = self.device();
        let spread = |block: &Tensor| -> Result<Tensor> {
            // [P, n] -> [B * P, n], example-major.
            let (p, n) = block.dims2()?;
            block
                .unsqueeze(0)?
                .broadcast_as((b, p, n))?
                .contiguous()?
                .reshape((b * p, n))
        };
        let mut frame = Frame::new(
            self,
            Pass::Score,
            program.model.locals.len(),
            program.model.loops.len(),
            b,
            rows,
            false,
            &batch.data,
        );
        // The initial latents: unit vectors in rows 1..=L0.
        let init = spread(&probe_block(probes, l0, 1, dev)?)?;
        let mut offset = 0;
        for &id in &ss.initial {
            let n = numel(id);
            let mut dims = vec![rows];
            dims.extend_from_slice(&program.latents[id].ty.shape);
            frame.latents[id] = Some(Val::Rows(init.narrow(1, offset, n)?.reshape(dims)?));
            offset += n;
        }
        // The state: unit vectors at odd steps in the first block, at even in the second.
        let odd = spread(&probe_block(probes, l, 1 + l0, dev)?)?;
        let even = spread(&probe_block(probes, l, 1 + l0 + l, dev)?)?;
        for t in 1..=ss.steps {
            let block = if t % 2 == 1 { &odd } else { &even };
            let mut offset = 0;
            for &id in &ss.state {
                let n = step_numel(id);
                let mut dims = vec![rows];
                dims.extend_from_slice(&program.latents[id].ty.shape[1..]);
                let v = block.narrow(1, offset, n)?.reshape(dims)?;
                let steps = &mut frame.latent_steps[id];
                if steps.len() < t {
                    steps.resize(t, None);
                }
                steps[t - 1] = Some(Val::Rows(v));
                offset += n;
            }
        }
        frame.run(&program.model.stmts, rng)?;

        // Read the affine maps off the records.
        let normal_param = |rec: &super::SiteRecord, p: DistParam| -> Result<Tensor> {
            if rec.dist.kind() != DistKind::Normal {
                bail!("internal error: the Kalman filter needs Normal sites");
            }
            match rec.dist.param(p) {
                Some(t) => per_probe(t, b, probes),
                None => bail!("internal error: a Normal without its `{p:?}`"),
            }
        };
        let at0 = |t: &Tensor| -> Result<Tensor> { t.narrow(1, 0, 1)?.squeeze(1) };
        let (mut a0, mut s0) = (Vec::new(), Vec::new());
        let mut per_step: Vec<(Vec<Tensor>, Vec<Tensor>, Vec<Tensor>)> = (0..ss.steps)
            .map(|_| (Vec::new(), Vec::new(), Vec::new()))
            .collect();
        // Per step: the observations' means (all probes), scales and values.
        type Obs = (Vec<Tensor>, Vec<Tensor>, Vec<Tensor>);
        let mut obs_step: Vec<Obs> = (0..ss.steps).map(|_| Default::default()).collect();
        let mut other = Tensor::zeros(b, DType::F32, dev)?;
        for rec in &frame.records {
            match (rec.var, rec.step) {
                (SiteVar::Latent(_), None) => {
                    a0.push(at0(&normal_param(rec, DistParam::Loc)?)?);
                    s0.push(at0(&normal_param(rec, DistParam::Scale)?)?);
                }
                (SiteVar::Latent(_), Some(t)) => {
                    let slot = &mut per_step[(t - 1) as usize];
                    let loc = normal_param(rec, DistParam::Loc)?; // [B, P, n]
                    slot.0.push(at0(&loc)?);
                    slot.1.push(loc);
                    slot.2.push(at0(&normal_param(rec, DistParam::Scale)?)?);
                }
                (SiteVar::Data(_), Some(t)) if rec.dist.kind() == DistKind::Normal => {
                    let slot = &mut obs_step[(t - 1) as usize];
                    slot.0.push(normal_param(rec, DistParam::Loc)?);
                    slot.1.push(at0(&normal_param(rec, DistParam::Scale)?)?);
                    slot.2.push(at0(&per_probe(&rec.value, b, probes)?)?);
                }
                (SiteVar::Data(_), _) => {
                    // An observation free of latents: its density at any probe.
                    let lp = rec.dist.log_prob(&rec.value)?.reshape((b, probes))?;
                    other = (other + lp.narrow(1, 0, 1)?.squeeze(1)?)?;
                }
            }
        }
        let cat = |v: &[Tensor], dim: usize| -> Result<Tensor> { Tensor::cat(v, dim) };
        let parity = |t: usize, loc: &Tensor| -> Result<Tensor> {
            // The rows whose state is a unit vector at step t.
            let first = if t % 2 == 1 { 1 + l0 } else { 1 + l0 + l };
            loc.narrow(1, first, l)
        };
        let mut model: Vec<StepModel> = Vec::with_capacity(ss.steps);
        for t in 1..=ss.steps {
            let (a, locs, q) = &per_step[t - 1];
            if a.is_empty() {
                bail!("internal error: step {t} samples no state");
            }
            let a = cat(a, 1)?; // [B, L]
            let loc = cat(locs, 2)?; // [B, P, L]
            let at = if t == 1 {
                (l0 > 0)
                    .then(|| loc.narrow(1, 1, l0)?.broadcast_sub(&a.unsqueeze(1)?))
                    .transpose()?
            } else {
                Some(parity(t - 1, &loc)?.broadcast_sub(&a.unsqueeze(1)?)?)
            };
            let q = cat(q, 1)?;
            let o = &obs_step[t - 1];
            let obs = if o.0.is_empty() {
                None
            } else {
                let loc = cat(&o.0, 2)?; // [B, P, D]
                let c = at0(&loc)?;
                let ct = parity(t, &loc)?.broadcast_sub(&c.unsqueeze(1)?)?; // [B, L, D]
                Some((c, ct, cat(&o.1, 1)?, cat(&o.2, 1)?))
            };
            model.push(StepModel { a, at, q, obs });
        }

        // Forward: filter, accumulating log p(x).
        let log_2pi = (2.0 * std::f64::consts::PI).ln();
        let eye = Tensor::eye(l, DType::F32, dev)?.unsqueeze(0)?;
        let initial = if l0 > 0 {
            let (m0, s0) = (cat(&a0, 1)?, cat(&s0, 1)?);
            Some((m0, diag(&s0)?))
        } else {
            None
        };
        let mut log_px = other;
        // Per step: the prediction (mean, Cholesky columns) and the filtered (mean, factor).
        let mut predicted: Vec<(Tensor, Vec<Tensor>)> = Vec::with_capacity(ss.steps);
        let mut filtered: Vec<(Tensor, Tensor)> = Vec::with_capacity(ss.steps);
        for (i, st) in model.iter().enumerate() {
            let q2 = diag(&st.q.sqr()?)?;
            let prev = if i == 0 {
                initial.as_ref()
            } else {
                filtered.last()
            };
            let (m, p) = match (prev, &st.at) {
                (Some((mf, g)), Some(at)) => {
                    let ag = at.transpose(1, 2)?.matmul(g)?; // A G: [B, L, Lprev]
                    let m = (&st.a + vec_mat(mf, at)?)?;
                    let p = (ag.matmul(&ag.transpose(1, 2)?)? + &q2)?;
                    (m, p)
                }
                _ => (st.a.clone(), q2),
            };
            let lp_cols = cholesky_columns(&p)?;
            let lp = from_columns(&lp_cols)?; // [B, L, L]
            let (mf, g) = match &st.obs {
                None => (m.clone(), lp.clone()),
                Some((c, ct, r, x)) => {
                    let d = x.dim(1)?;
                    let var = r.sqr()?;
                    let wt = lp.transpose(1, 2)?.matmul(ct)?; // W^T = Lp^T C^T: [B, L, D]
                    let a_ = wt.broadcast_div(&var.unsqueeze(1)?)?; // W^T R^-1
                    let mm = a_.matmul(&wt.transpose(1, 2)?)?.broadcast_add(&eye)?;
                    let k = cholesky_columns(&mm)?;
                    let res = ((x - c)? - vec_mat(&m, ct)?)?; // [B, D]
                    let v = mat_vec(&a_, &res)?; // [B, L]
                    let y = forward_solve(&k, &v)?;
                    let quad = ((res.sqr()? / &var)?.sum(1)? - y.sqr()?.sum(1)?)?;
                    let logdet = (var.log()?.sum(1)? + (diagonal(&k)?.log()?.sum(1)? * 2.0)?)?;
                    let ll = (((quad + logdet)? + d as f64 * log_2pi)? * -0.5)?;
                    log_px = (log_px + ll)?;
                    let eps = backward_solve(&k, &y)?;
                    let mf = (&m + mat_vec(&lp, &eps)?)?;
                    // G = Lp K^-T: row j of G solves K g = (row j of Lp).
                    let rows: Vec<Tensor> = (0..l)
                        .map(|j| forward_solve(&k, &lp.narrow(1, j, 1)?.squeeze(1)?))
                        .collect::<Result<_>>()?;
                    (mf, Tensor::stack(&rows, 1)?)
                }
            };
            predicted.push((m, lp_cols));
            filtered.push((mf, g));
        }

        // Backward: Rauch-Tung-Striebel means, E[z_t | x] = m_t + P_t A^T P_pred^-1 (E[z_t+1 | x] - m_pred).
        let mut smoothed: Vec<Tensor> = vec![filtered[ss.steps - 1].0.clone(); ss.steps];
        for t in (0..ss.steps - 1).rev() {
            let (mp, lp) = &predicted[t + 1];
            let w = chol_solve(lp, &(&smoothed[t + 1] - mp)?)?;
            let Some(at) = &model[t + 1].at else {
                bail!("internal error: a step without its transition")
            };
            let (mf, g) = &filtered[t];
            let u = mat_vec(at, &w)?; // A^T w
            let gu = mat_vec(&g.transpose(1, 2)?, &u)?;
            smoothed[t] = (mf + mat_vec(g, &gu)?)?;
        }
        let mut means = Vec::new();
        if let (Some((m0, g0)), Some(at)) = (&initial, &model[0].at) {
            let (mp, lp) = &predicted[0];
            let w = chol_solve(lp, &(&smoothed[0] - mp)?)?;
            let u = mat_vec(at, &w)?;
            let gu = mat_vec(&g0.transpose(1, 2)?, &u)?;
            let m0s = (m0 + mat_vec(g0, &gu)?)?;
            let mut offset = 0;
            for &id in &ss.initial {
                let n = numel(id);
                let mut dims = vec![b];
                dims.extend_from_slice(&program.latents[id].ty.shape);
                means.push((id, m0s.narrow(D::Minus1, offset, n)?.reshape(dims)?));
                offset += n;
            }
        }
        let stacked = Tensor::stack(&smoothed, 1)?; // [B, T, L]
        let mut offset = 0;
        for &id in &ss.state {
            let n = step_numel(id);
            let mut dims = vec![b];
            dims.extend_from_slice(&program.latents[id].ty.shape);
            means.push((
                id,
                stacked.narrow(2, offset, n)?.contiguous()?.reshape(dims)?,
            ));
            offset += n;
        }
        Ok(Exact { log_px, means })
    }
}
