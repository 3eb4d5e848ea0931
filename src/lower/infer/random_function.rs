//! `@random_function(inducing = M, kernel = K)`: the random-function inference model of
//! Kim & Pavlovic 2021 ("Reducing the Amortization Gap in Variational Autoencoders: A
//! Bayesian Random Function Approach"). The guide's mean and log-scale functions are the
//! encoder's outputs plus an error drawn from a Gaussian process over the encoder's input
//! `u` (the network the checker resolved, `ir::Strategy::RandomFunction`):
//!
//! `q(z | x, f) = Normal(loc(u) + f_loc(u), scale(u) · exp(f_scale(u)))`, `f ~ GP(0, k)`,
//!
//! one independent GP per element of `z` for each of the two functions (`O = 2 · |z|`
//! outputs sharing one kernel). The GP's posterior is the sparse variational one of
//! Hensman, Fusi & Lawrence 2013 in its whitened form (Hensman, Matthews & Ghahramani
//! 2015): inducing inputs `U` `[M, |u|]` and, per output, `v ~ Normal(m, S = L Lᵀ)` with
//! `f(U) = Lu v` and `Lu Luᵀ = k(U, U)`; its KL against the GP prior is
//! `Σ_o KL(Normal(m_o, S_o) ‖ Normal(0, I))`, in closed form, once per dataset (as a
//! global latent's). The marginal of `f` at an input, with `a = Lu⁻¹ k(U, u)`, is
//! `Normal(mᵀa, k(u, u) − aᵀa + aᵀ S a)` (`predictive`).
//!
//! Training maximizes `E_f[ELBO(x; q(· | x, f))] − KL(q(v) ‖ p(v)) / N`, drawing each row's
//! `f` from its marginal by reparameterization: the examples of a batch need only their own
//! marginals. Evaluation and `vic encode` stay one forward pass: the loc error is
//! integrated out (`Normal(loc + E f_loc, sqrt(scale'² + Var f_loc))`, exact for the loc)
//! and the log-scale error taken at its mean. The per-row predictive variance, averaged
//! over the outputs, is the model's measure of how hard the example's posterior is to
//! amortize: it is kept on the site's record ([`Draw::Replaced`]) for `vic eval`.
//!
//! Where the paper's text is not reachable its choices are ours (docs/inference.md): the
//! kernel `σ² c(u, u')` with one length scale for all input dimensions (rbf, matern32 or
//! matern52), `k(U, U)` factored as `σ² (C + 10⁻⁴ I)`, inducing inputs drawn uniformly in
//! [0, 1) (the range of image data), the length scale started at `sqrt(|u| / 4)`, the error
//! variance `σ²` at 0.1 and `S` at `I` (the prior: the KL starts at 0).
//!
//! The parameters are the guide's, checkpointed as `@gp.NAME.inducing`,
//! `@gp.NAME.log_lengthscale`, `@gp.NAME.log_variance`, `@gp.NAME.mean` `[O, M]` and
//! `@gp.NAME.scale_tril` `[O, M, M]` (strictly lower part as it is, diagonal as its log),
//! trained by the spec's optimizer with the guide's networks.

use super::{fused_gp, Draw, SiteEstimator};
use crate::ir::{DistKind, DistParam, Expr, Kernel, Program, Site, Strategy};
use crate::lower::dist::DistValue;
use crate::lower::eval::{materialize, value_shape, Frame};
use crate::lower::linalg;
use crate::lower::params::ParamStore;
use crate::plan::SitePlan;
use crate::rng::Rng;
use candle_core::{bail, DType, Result, Tensor, D};

/// The checkpoint prefix of a random-function site's parameters (`@gp.z.`). `@` cannot
/// start a spec name, so no network or param can collide with it.
pub const GP_PREFIX: &str = "@gp.";

/// The jitter added to the inducing points' correlation matrix, relative to σ².
const JITTER: f64 = 1e-4;

/// Initial error variance σ² and initial scale of the whitened posterior's `S`.
const INIT_VARIANCE: f64 = 0.1;
const INIT_POSTERIOR_SCALE: f64 = 1.0;

pub struct RandomFunction {
    prefix: String,
    kernel: Kernel,
    inputs: Vec<Expr>,
    /// The site's value shape and its element count `|z|`.
    event: Vec<usize>,
    size: usize,
    inducing: Tensor,
    log_lengthscale: Tensor,
    log_variance: Tensor,
    mean: Tensor,
    scale_tril: Tensor,
    /// `[M, M]`: 1 strictly below the diagonal, and the identity.
    strict_lower: Tensor,
    eye: Tensor,
}

/// The GP error's marginals at a batch of inputs: means and variances `[O, R]`.
pub struct Predictive {
    pub mean: Tensor,
    pub variance: Tensor,
}

impl RandomFunction {
    /// The estimator of a planned `@random_function` site, its parameters created in
    /// `store` (or loaded from it).
    pub fn new(program: &Program, plan: &SitePlan, store: &ParamStore) -> Result<RandomFunction> {
        let crate::plan::Estimator::RandomFunction { inducing, kernel } = plan.estimator else {
            bail!("internal error: a random-function estimator for another strategy")
        };
        let site = super::guide_site(program, plan.var)?;
        let Some(Strategy::RandomFunction { inputs, net, .. }) = &site.strategy else {
            bail!("internal error: the plan's random-function site has another strategy")
        };
        if net.is_none() || inputs.is_empty() {
            bail!(
                "internal error: the checker did not resolve the network of `{}`'s random function",
                plan.name
            )
        }
        if site.dist.kind != DistKind::Normal {
            bail!("`@random_function` applies to a Normal site")
        }
        let name = super::var_name(program, plan.var);
        let prefix = format!("{GP_PREFIX}{name}.");
        let event = site.ty.shape.clone();
        let outputs = 2 * site.ty.numel().max(1);
        let din: usize = inputs
            .iter()
            .map(|e| value_shape(&e.ty).iter().product::<usize>().max(1))
            .sum();
        let m = inducing;
        let inducing = store.custom(&format!("{prefix}inducing"), &[m, din], |rng| {
            rng.uniform_vec(m * din)
        })?;
        let l0 = (0.5 * (din as f64 / 4.0).max(1e-2).ln()) as f32;
        let log_lengthscale =
            store.custom(&format!("{prefix}log_lengthscale"), &[1], |_| vec![l0])?;
        let log_variance = store.custom(&format!("{prefix}log_variance"), &[1], |_| {
            vec![INIT_VARIANCE.ln() as f32]
        })?;
        let mean = store.custom(&format!("{prefix}mean"), &[outputs, m], |_| {
            vec![0.0; outputs * m]
        })?;
        let scale_tril = store.custom(&format!("{prefix}scale_tril"), &[outputs, m, m], |_| {
            let mut v = vec![0f32; outputs * m * m];
            for o in 0..outputs {
                for i in 0..m {
                    v[o * m * m + i * m + i] = INIT_POSTERIOR_SCALE.ln() as f32;
                }
            }
            v
        })?;
        RandomFunction::from_parts(
            prefix,
            kernel,
            inputs.clone(),
            event,
            [inducing, log_lengthscale, log_variance, mean, scale_tril],
        )
    }

    /// The estimator from its parameters: inducing inputs `[M, |u|]`, log length scale
    /// and log variance `[1]`, the whitened posterior's mean `[O, M]` and factor
    /// `[O, M, M]` (see the module documentation).
    pub fn from_parts(
        prefix: String,
        kernel: Kernel,
        inputs: Vec<Expr>,
        event: Vec<usize>,
        [inducing, log_lengthscale, log_variance, mean, scale_tril]: [Tensor; 5],
    ) -> Result<RandomFunction> {
        let m = inducing.dim(0)?;
        let size = event.iter().product::<usize>().max(1);
        if mean.dims() != [2 * size, m] || scale_tril.dims() != [2 * size, m, m] {
            bail!("internal error: a random function's parameters have the wrong shapes")
        }
        let dev = inducing.device().clone();
        let mask: Vec<f32> = (0..m * m)
            .map(|k| if k % m < k / m { 1.0 } else { 0.0 })
            .collect();
        Ok(RandomFunction {
            prefix,
            kernel,
            inputs,
            event,
            size,
            inducing,
            log_lengthscale,
            log_variance,
            mean,
            scale_tril,
            strict_lower: Tensor::from_vec(mask, (m, m), &dev)?,
            eye: Tensor::eye(m, DType::F32, &dev)?,
        })
    }

    /// The Cholesky factor `[O, M, M]` of each output's whitened posterior covariance.
    fn posterior_factor(&self) -> Result<Tensor> {
        let diag = self
            .scale_tril
            .broadcast_mul(&self.eye)?
            .sum_keepdim(D::Minus1)?; // [O, M, 1]
        self.scale_tril.broadcast_mul(&self.strict_lower)? + diag.exp()?.broadcast_mul(&self.eye)?
    }

    /// The kernel's correlation `c(a, b) = k(a, b) / σ²` between rows of `a` `[P, n]` and
    /// `b` `[Q, n]`, `[P, Q]`.
    fn correlation(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let a2 = a.sqr()?.sum_keepdim(1)?; // [P, 1]
        let b2 = b.sqr()?.sum_keepdim(1)?.t()?; // [1, Q]
        let d2 = (a2.broadcast_add(&b2)? - (a.matmul(&b.t()?)? * 2.0)?)?.relu()?;
        let inv_l2 = (self.log_lengthscale.affine(-2.0, 0.0)?).exp()?; // [1]
        let scaled = d2.broadcast_mul(&inv_l2)?; // r² / ℓ²
        match self.kernel {
            Kernel::Rbf => (scaled * -0.5)?.exp(),
            Kernel::Matern32 => {
                // (1 + √3 r) e^{−√3 r}; the offset keeps the square root's gradient finite
                // at r = 0, where dc/dr is 0 anyway.
                let r = ((scaled * 3.0)? + 1e-10)?.sqrt()?;
                (r.clone() + 1.0)? * r.neg()?.exp()?
            }
            Kernel::Matern52 => {
                let r = ((scaled.clone() * 5.0)? + 1e-10)?.sqrt()?;
                ((r.clone() + 1.0)? + (scaled * (5.0 / 3.0))?)? * r.neg()?.exp()?
            }
        }
    }

    /// The GP input of every row, `[rows, |u|]`: the resolved network's inputs, flattened
    /// and concatenated as a dense network takes them.
    fn input(&self, frame: &mut Frame<'_>, rows: usize, rng: &mut Rng) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(self.inputs.len());
        for e in &self.inputs {
            let v = frame.eval(e, rng)?;
            let t = materialize(&v, rows, &value_shape(&e.ty))?;
            parts.push(t.flatten_from(1)?.to_dtype(DType::F32)?);
        }
        Tensor::cat(&parts, 1)
    }

    /// `a = Lc⁻¹ c(U, u)` `[M, R]` at inputs `u` `[R, |u|]` (the whitened cross-covariance
    /// per σ, `Lc Lcᵀ = c(U, U)`) and σ² `[1]`.
    fn whitened(&self, u: &Tensor) -> Result<(Tensor, Tensor)> {
        let cuu = (self.correlation(&self.inducing, &self.inducing)? + (&self.eye * JITTER)?)?;
        let lc = linalg::cholesky(&cuu)?; // [M, M]
        let cux = self.correlation(&self.inducing, u)?; // [M, R]
        let a = linalg::solve_lower(&lc, &cux)?; // [M, R], Lu⁻¹ k(U, u) / σ
        Ok((a, self.log_variance.exp()?))
    }

    /// The first `outputs` posterior factors side by side, `[M, outputs · M]` (column
    /// block o is `L_o`): one GEMM then serves every output.
    fn factors_side_by_side(&self, outputs: usize) -> Result<Tensor> {
        if let Some(side) = fused_gp::factors(&self.scale_tril, outputs)? {
            return Ok(side);
        }
        let l = self.posterior_factor()?.narrow(0, 0, outputs)?; // [k, M, M]
        let m = l.dim(1)?;
        l.transpose(0, 1)?.contiguous()?.reshape((m, outputs * m))
    }

    /// The first `outputs` outputs' predictive variances `[outputs, R]`,
    /// `σ² (1 − aᵀa + aᵀ S_o a)`, `aᵀ S_o a = ‖aᵀ L_o‖²`: one GEMM of `aᵀ` with the factors
    /// side by side, each row's squares summed along its last (contiguous) axis.
    fn variances(&self, a: &Tensor, sigma2: &Tensor, outputs: usize) -> Result<Tensor> {
        self.variances_with(a, sigma2, &self.factors_side_by_side(outputs)?, outputs)
    }

    /// [`RandomFunction::variances`] with the factors side by side given (at least the
    /// first `outputs`).
    fn variances_with(
        &self,
        a: &Tensor,
        sigma2: &Tensor,
        side: &Tensor,
        outputs: usize,
    ) -> Result<Tensor> {
        let (m, rows) = a.dims2()?;
        let side = side.narrow(1, 0, outputs * m)?.contiguous()?;
        let at_l = a.t()?.matmul(&side)?; // [R, k·M]
        let posterior = match fused_gp::group_sumsq(&at_l, m)? {
            Some(p) => p,
            None => at_l.reshape((rows, outputs, m))?.sqr()?.sum(D::Minus1)?,
        }; // [R, k]
        let explained = a.sqr()?.sum_keepdim(0)?.t()?; // [R, 1]
        posterior
            .broadcast_sub(&explained)?
            .affine(1.0, 1.0)?
            .broadcast_mul(sigma2)?
            .maximum(1e-10)?
            .t()?
            .contiguous()
    }

    /// The outputs' mean predictive variance `[R]`, `σ² (1 − aᵀa + aᵀ S̄ a)` with
    /// `S̄ = mean_o L_o L_oᵀ` (one GEMM of the factors side by side with themselves): `M²`
    /// per row instead of `O · M²`.
    #[cfg(test)]
    fn mean_variance(&self, a: &Tensor, sigma2: &Tensor) -> Result<Tensor> {
        let outputs = self.mean.dim(0)?;
        self.mean_variance_with(a, sigma2, &self.factors_side_by_side(outputs)?)
    }

    /// [`RandomFunction::mean_variance`] with every output's factor side by side given.
    fn mean_variance_with(&self, a: &Tensor, sigma2: &Tensor, l: &Tensor) -> Result<Tensor> {
        let outputs = self.mean.dim(0)?;
        let s_bar = (l.matmul(&l.t()?)? / outputs as f64)?; // [M, M]
        let quad = (s_bar.matmul(a)? * a)?.sum(0)?; // [R]
        let explained = a.sqr()?.sum(0)?;
        (quad - explained)?
            .affine(1.0, 1.0)?
            .broadcast_mul(sigma2)?
            .maximum(1e-10)
    }

    /// Every output's predictive mean `[O, R]`, `σ mᵀa`.
    fn means(&self, a: &Tensor, sigma2: &Tensor) -> Result<Tensor> {
        self.mean.matmul(a)?.broadcast_mul(&sigma2.sqrt()?)
    }

    /// The marginals of the GP error at inputs `u` `[R, |u|]`.
    pub fn predictive(&self, u: &Tensor) -> Result<Predictive> {
        let (a, sigma2) = self.whitened(u)?;
        let mean = self.means(&a, &sigma2)?;
        let variance = self.variances(&a, &sigma2, self.mean.dim(0)?)?;
        Ok(Predictive { mean, variance })
    }

    /// `[O, R]` as the two functions' errors at the site's shape, `[R, ...z]` each.
    fn split(&self, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let rows = t.dim(1)?;
        let mut shape = vec![rows];
        shape.extend_from_slice(&self.event);
        let t = t.t()?.contiguous()?; // [R, O]
        Ok((
            t.narrow(1, 0, self.size)?.reshape(shape.as_slice())?,
            t.narrow(1, self.size, self.size)?
                .reshape(shape.as_slice())?,
        ))
    }
}

impl SiteEstimator for RandomFunction {
    fn strategy(&self) -> &'static str {
        "random_function"
    }

    fn draw(
        &self,
        frame: &mut Frame<'_>,
        site: &Site,
        q: &DistValue,
        rng: &mut Rng,
    ) -> Result<Draw> {
        let step = None;
        // Parameters given from outside (refinement): the site's q is as given.
        if site.step.is_some() || frame.overrides.get(site.var, step).is_some() {
            return Ok(Draw::Sampled {
                value: q.rsample(rng)?,
                log_q: None,
            });
        }
        let (Some(loc), Some(scale)) = (q.param(DistParam::Loc), q.param(DistParam::Scale)) else {
            bail!("internal error: a random-function site without its Normal parameters")
        };
        let rows = loc.dim(0)?;
        let u = self.input(frame, rows, rng)?;
        let (loc, scale, uncertainty) = if frame.train {
            let p = self.predictive(&u)?;
            let noise = rng.normal(p.mean.dims(), p.mean.device())?;
            let f = (&p.mean + (p.variance.sqrt()? * noise)?)?;
            let (f_loc, f_scale) = self.split(&f)?;
            (
                (loc + f_loc)?,
                (scale * f_scale.exp()?)?,
                p.variance.mean(0)?,
            )
        } else {
            // One pass: the means, the loc outputs' variances (the log-scale's are not
            // needed) and the outputs' mean variance through `S̄`.
            let (a, sigma2) = self.whitened(&u)?;
            let mean = self.means(&a, &sigma2)?;
            let (m_loc, m_scale) = self.split(&mean)?;
            let mut shape = vec![rows];
            shape.extend_from_slice(&self.event);
            // Every output's factor, side by side, built once for both.
            let side = self.factors_side_by_side(mean.dim(0)?)?;
            let v_loc = self
                .variances_with(&a, &sigma2, &side, self.size)?
                .t()?
                .contiguous()?
                .reshape(shape.as_slice())?;
            let s = (scale * m_scale.exp()?)?;
            (
                (loc + m_loc)?,
                (s.sqr()? + v_loc)?.sqrt()?,
                self.mean_variance_with(&a, &sigma2, &side)?,
            )
        };
        let dist = DistValue::new(
            DistKind::Normal,
            vec![(DistParam::Loc, loc), (DistParam::Scale, scale)],
            None,
            &self.event,
        )?;
        let value = dist.rsample(rng)?;
        Ok(Draw::Replaced {
            value,
            dist,
            uncertainty,
        })
    }

    fn dataset_kl(&self) -> Result<Option<Tensor>> {
        // Σ_o ½ (tr S_o + ‖m_o‖² − M − log |S_o|), with tr S = ‖L‖²_F and
        // log |S| = 2 Σ log diag L (the stored diagonal).
        let m = self.mean.dim(1)? as f64;
        let outputs = self.mean.dim(0)? as f64;
        if let Some(part) = fused_gp::factor_kl_part(&self.scale_tril)? {
            let kl = (part + self.mean.sqr()?.sum_all()?)?.affine(0.5, -0.5 * m * outputs)?;
            return Ok(Some(kl));
        }
        let l = self.posterior_factor()?;
        let log_diag = self.scale_tril.broadcast_mul(&self.eye)?.sum_all()?;
        let kl = ((l.sqr()?.sum_all()? + self.mean.sqr()?.sum_all()?)? - (log_diag * 2.0)?)?
            .affine(0.5, -0.5 * m * outputs)?;
        Ok(Some(kl))
    }

    fn trained_prefix(&self) -> Option<String> {
        Some(self.prefix.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;
    use nalgebra::{DMatrix, DVector};

    fn rbf(a: &DMatrix<f64>, b: &DMatrix<f64>, l: f64, s2: f64) -> DMatrix<f64> {
        DMatrix::from_fn(a.nrows(), b.nrows(), |i, j| {
            let d2 = (a.row(i) - b.row(j)).norm_squared();
            s2 * (-0.5 * d2 / (l * l)).exp()
        })
    }

    /// Evaluation's one pass at inputs `xs`: the first `outputs` outputs' predictive
    /// variances `[outputs][rows]` and the outputs' mean variance `[rows]`.
    fn one_pass(
        est: &RandomFunction,
        xs: &DMatrix<f64>,
        outputs: usize,
    ) -> (Vec<Vec<f32>>, Vec<f32>) {
        let (a, sigma2) = est.whitened(&tensor(xs)).unwrap();
        let v = est.variances(&a, &sigma2, outputs).unwrap();
        let mean = est.mean_variance(&a, &sigma2).unwrap();
        (v.to_vec2().unwrap(), mean.to_vec1().unwrap())
    }

    fn tensor(m: &DMatrix<f64>) -> Tensor {
        let v: Vec<f32> = (0..m.nrows())
            .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)] as f32))
            .collect();
        Tensor::from_vec(v, (m.nrows(), m.ncols()), &Device::Cpu).unwrap()
    }

    /// The whitened posterior's stored factor: strictly lower part as it is, the diagonal
    /// as its log.
    fn stored_factor(l: &DMatrix<f64>) -> Vec<f32> {
        let m = l.nrows();
        (0..m * m)
            .map(|k| {
                let (i, j) = (k / m, k % m);
                match i.cmp(&j) {
                    std::cmp::Ordering::Greater => l[(i, j)] as f32,
                    std::cmp::Ordering::Equal => l[(i, i)].ln() as f32,
                    std::cmp::Ordering::Less => 0.0,
                }
            })
            .collect()
    }

    const L: f64 = 0.9;
    const S2: f64 = 1.3;

    /// Inducing inputs at the training inputs of a GP regression and the variational
    /// posterior set to the optimal one (the exact posterior of f(U), whitened): the
    /// predictive mean and variance at new inputs equal the exact GP's, computed densely
    /// in f64 from the textbook formulas.
    #[test]
    fn the_predictive_equals_an_exact_gp_with_the_inducing_points_at_the_data() {
        let (n, noise) = (6, 0.1);
        let x = DMatrix::from_fn(n, 2, |i, j| {
            (i as f64) * 0.7 - 1.5 + 0.3 * j as f64 * (i % 2) as f64
        });
        let xs = DMatrix::from_fn(4, 2, |i, j| 0.5 * i as f64 - 1.0 + 0.2 * j as f64);
        // Two outputs (a loc and a log-scale function of a scalar latent), two targets.
        let ys = [
            DVector::from_fn(n, |i, _| (i as f64).sin()),
            DVector::from_fn(n, |i, _| 0.3 * i as f64 - 0.5),
        ];
        // The prior covariance of f(U) as the estimator forms it, jitter included.
        let kuu = rbf(&x, &x, L, S2) + DMatrix::identity(n, n) * (S2 * JITTER);
        let ksu = rbf(&xs, &x, L, S2);
        let kss = S2;
        let inv = (&kuu + DMatrix::identity(n, n) * noise)
            .try_inverse()
            .unwrap();
        let lu = kuu.clone().cholesky().unwrap().l();
        let lu_inv = lu.clone().try_inverse().unwrap();
        let mut means = Vec::new();
        let mut factors = Vec::new();
        for y in &ys {
            // q(f(U)) = the exact posterior at U; whitened: v = Lu⁻¹ f(U).
            let mu = &kuu * &inv * y;
            let sigma = &kuu - &kuu * &inv * &kuu;
            let m = &lu_inv * mu;
            let s = &lu_inv * sigma * lu_inv.transpose();
            let s = (&s + s.transpose()) * 0.5;
            means.extend(m.iter().map(|&v| v as f32));
            factors.extend(stored_factor(&s.cholesky().unwrap().l()));
        }
        let dev = Device::Cpu;
        let est = RandomFunction::from_parts(
            "@gp.z.".into(),
            Kernel::Rbf,
            Vec::new(),
            vec![1],
            [
                tensor(&x),
                Tensor::new(&[L.ln() as f32], &dev).unwrap(),
                Tensor::new(&[S2.ln() as f32], &dev).unwrap(),
                Tensor::from_vec(means, (2, n), &dev).unwrap(),
                Tensor::from_vec(factors, (2, n, n), &dev).unwrap(),
            ],
        )
        .unwrap();
        let p = est.predictive(&tensor(&xs)).unwrap();
        let mean = p.mean.to_vec2::<f32>().unwrap();
        let var = p.variance.to_vec2::<f32>().unwrap();
        for (o, y) in ys.iter().enumerate() {
            let exact_mean = &ksu * &inv * y;
            let exact_var = (&ksu * &inv * ksu.transpose()).map(|v| -v).add_scalar(kss);
            for j in 0..xs.nrows() {
                let (m, v) = (mean[o][j] as f64, var[o][j] as f64);
                assert!(
                    (m - exact_mean[j]).abs() < 2e-3,
                    "mean {o},{j}: {m} {}",
                    exact_mean[j]
                );
                let ev = exact_var[(j, j)];
                assert!(
                    (v - ev).abs() < 2e-3 * (1.0 + ev),
                    "variance {o},{j}: {v} {ev}"
                );
            }
        }
        // Evaluation's one pass: the first outputs' variances alone, and the outputs' mean
        // variance through the mean posterior covariance, against the same exact GP.
        let (first, mean_var) = one_pass(&est, &xs, 1);
        let exact_var = (&ksu * &inv * ksu.transpose()).map(|v| -v).add_scalar(kss);
        assert_eq!(first.len(), 1);
        for j in 0..xs.nrows() {
            let ev = exact_var[(j, j)];
            for v in [first[0][j] as f64, mean_var[j] as f64] {
                assert!((v - ev).abs() < 2e-3 * (1.0 + ev), "variance {j}: {v} {ev}");
            }
        }
    }

    /// The whitened KL equals KL(q(f(U)) ‖ p(f(U))) computed in the unwhitened space from
    /// the closed form of two Gaussians, with `q(f(U)) = N(Lu m, Lu S Luᵀ)` and
    /// `p = N(0, k(U, U))`: whitening does not change a KL. Each output's predictive
    /// variance at new inputs, and their mean, against the same unwhitened forms.
    #[test]
    fn the_kl_and_the_variances_equal_the_closed_forms_of_the_unwhitened_gaussians() {
        let (m, outputs) = (5, 2);
        let dev = Device::Cpu;
        let u = DMatrix::from_fn(m, 3, |i, j| ((i * 3 + j) as f64 * 0.37).sin());
        let mut rng = crate::rng::Rng::seed(9);
        let mean = rng.normal(&[outputs, m], &dev).unwrap();
        let raw = (rng.normal(&[outputs, m, m], &dev).unwrap() * 0.3).unwrap();
        let est = RandomFunction::from_parts(
            "@gp.z.".into(),
            Kernel::Rbf,
            Vec::new(),
            vec![1],
            [
                tensor(&u),
                Tensor::new(&[L.ln() as f32], &dev).unwrap(),
                Tensor::new(&[S2.ln() as f32], &dev).unwrap(),
                mean.clone(),
                raw.clone(),
            ],
        )
        .unwrap();
        let got = est
            .dataset_kl()
            .unwrap()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let kuu = rbf(&u, &u, L, S2) + DMatrix::identity(m, m) * (S2 * JITTER);
        let lu = kuu.clone().cholesky().unwrap().l();
        let kinv = kuu.clone().try_inverse().unwrap();
        let means = mean.to_vec2::<f32>().unwrap();
        let raws = raw.to_vec3::<f32>().unwrap();
        let mut want = 0.0;
        // The predictive variances of q(f(U)) at new inputs, unwhitened, per output and
        // their mean: k(x,x) − k_xU K⁻¹ k_Ux + k_xU K⁻¹ Σ_o K⁻¹ k_Ux.
        let xs = DMatrix::from_fn(4, 3, |i, j| ((i + 2 * j) as f64 * 0.53).cos());
        let kxu = rbf(&xs, &u, L, S2);
        let (per_output, mean_var) = one_pass(&est, &xs, outputs);
        let mut want_mean = vec![0.0; xs.nrows()];
        for o in 0..outputs {
            let ls = DMatrix::from_fn(m, m, |i, j| match i.cmp(&j) {
                std::cmp::Ordering::Greater => raws[o][i][j] as f64,
                std::cmp::Ordering::Equal => (raws[o][i][i] as f64).exp(),
                std::cmp::Ordering::Less => 0.0,
            });
            let sigma = &lu * &ls * ls.transpose() * lu.transpose();
            let v = (&kxu * &kinv * (&sigma - &kuu) * &kinv * kxu.transpose()).add_scalar(S2);
            for j in 0..xs.nrows() {
                let got = per_output[o][j] as f64;
                assert!(
                    (got - v[(j, j)]).abs() < 2e-3 * (1.0 + v[(j, j)]),
                    "{got} {}",
                    v[(j, j)]
                );
                want_mean[j] += v[(j, j)] / outputs as f64;
            }
        }
        for j in 0..xs.nrows() {
            let got = mean_var[j] as f64;
            assert!(
                (got - want_mean[j]).abs() < 2e-3 * (1.0 + want_mean[j]),
                "{got} {}",
                want_mean[j]
            );
        }
        for o in 0..outputs {
            let ls = DMatrix::from_fn(m, m, |i, j| match i.cmp(&j) {
                std::cmp::Ordering::Greater => raws[o][i][j] as f64,
                std::cmp::Ordering::Equal => (raws[o][i][i] as f64).exp(),
                std::cmp::Ordering::Less => 0.0,
            });
            let mu = &lu * DVector::from_fn(m, |i, _| means[o][i] as f64);
            let sigma = &lu * &ls * ls.transpose() * lu.transpose();
            want += 0.5
                * ((&kinv * &sigma).trace() + (mu.transpose() * &kinv * &mu)[(0, 0)] - m as f64
                    + kuu.determinant().ln()
                    - sigma.determinant().ln());
        }
        assert!(
            (got - want).abs() < 1e-3 * (1.0 + want.abs()),
            "{got} {want}"
        );
    }

    /// Training draws the GP error per row; evaluation integrates the loc error out and
    /// takes the log-scale error at its mean. Over many draws for one example the two
    /// agree: the training locs average to the evaluation loc, and the evaluation scale²
    /// is exp(2 E log scale′) + Var loc′ — which also checks that the loc and log-scale
    /// functions are split as documented.
    #[test]
    fn training_draws_average_to_the_one_pass_evaluation() {
        use crate::lower::eval::Overrides;
        use crate::lower::objective::Batch;
        let src = r#"
data x : Real[3]
latent z : Real[2]
net enc(x: Real[3]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [4], act = tanh)
net dec(z: Real[2]) -> Real[3] = linear()
model {
  z ~ Normal(0, 1)
  x ~ Normal(dec(z), 1)
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s) @random_function(inducing = 5, kernel = "matern52")
}
"#;
        let front = crate::driver::front_end(src, &Default::default());
        let program = front.program.unwrap();
        let store = crate::lower::params::ParamStore::seeded(3, &Device::Cpu);
        let model = crate::lower::LoweredModel::new(program, store).unwrap();
        // Move the posterior off its start, so that its mean and covariance matter.
        for (name, var) in model.store.named() {
            if name == "@gp.z.mean" || name == "@gp.z.scale_tril" {
                let t = var.as_tensor();
                let noise = crate::rng::Rng::seed(5)
                    .normal(t.dims(), &Device::Cpu)
                    .unwrap();
                var.set(&(t + (noise * 0.5).unwrap()).unwrap()).unwrap();
            }
        }
        let x = Tensor::new(&[[0.3f32, -0.2, 0.9]], &Device::Cpu).unwrap();
        let batch = Batch::new(vec![Some(x)], 1);
        let rows = 20_000;
        let none = Overrides::default();
        let mut rng = crate::rng::Rng::seed(1);
        let train = model
            .guide_pass(&batch, rows, true, &none, &mut rng)
            .unwrap();
        let eval = model.guide_pass(&batch, 1, false, &none, &mut rng).unwrap();
        let param = |f: &crate::lower::eval::Frame<'_>, p: DistParam| {
            f.records[0]
                .dist
                .param(p)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        let (tl, ts) = (
            param(&train, DistParam::Loc),
            param(&train, DistParam::Scale),
        );
        let (el, es) = (param(&eval, DistParam::Loc), param(&eval, DistParam::Scale));
        assert!(eval.records[0].uncertainty.is_some());
        for j in 0..2 {
            let n = rows as f64;
            let mean = tl.iter().map(|r| r[j] as f64).sum::<f64>() / n;
            let var = tl.iter().map(|r| (r[j] as f64 - mean).powi(2)).sum::<f64>() / n;
            let log_s = ts.iter().map(|r| (r[j] as f64).ln()).sum::<f64>() / n;
            assert!(var > 1e-3, "the loc error has no spread: {var}");
            let se = (var / n).sqrt();
            assert!(
                (mean - el[0][j] as f64).abs() < 5.0 * se,
                "loc {j}: {mean} {}",
                el[0][j]
            );
            let want = (2.0 * log_s).exp() + var;
            let got = (es[0][j] as f64).powi(2);
            assert!((got - want).abs() < 0.03 * want, "scale² {j}: {got} {want}");
        }
    }
}
