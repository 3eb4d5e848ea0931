//! Semi-amortized refinement (Kim, Wiseman, Miller, Sontag & Rush 2018, "Semi-Amortized
//! Variational Autoencoders"): a Normal guide site's parameters start from the encoder's
//! output `λ0 = (loc, log σ²)` and take K gradient steps on the batch's objective, with
//! momentum and each parameter's gradient clipped to a norm per step, as SA-VAE's
//! reference implementation does (harvardnlp/sa-vae, `optim_n2n.py`):
//! `p_k = μ p_{k−1} − clip(∇_λ L(λ_k))`, `λ_{k+1} = λ_k + η p_k`, where L is the loss the
//! trainer minimizes (the negative bound, KL weighted): the batch's mean, as in the
//! reference, so each example's step is `η / batch` times its own ELBO's gradient. The
//! batch is the training batch whatever the batch at hand (an evaluation chunk takes its
//! examples' training steps, each training-sized block clipped on its own:
//! [`as_in_training`]), so a refined bound does not depend on how it is chunked. Every step
//! is one call of the composable objective with the site's parameters substituted
//! ([`LoweredModel::bound_with`]), each with its own noise, kept for the way back.
//!
//! The model's parameters are trained on the loss at `λ_K`. The encoder:
//! - `through = false` (VAE + SVI): on the loss at `λ0`, its gradient `∇_λ L(λ0)` pushed
//!   through the encoder alone;
//! - `through = true` (SA-VAE): on the loss at `λ_K` through the K steps, by reverse-mode
//!   over the unrolled updates with the Hessian-vector products by finite differences of
//!   gradients (`H v ≈ (∇L(λ + r v) − ∇L(λ)) / r`, the same noise at both points), as the
//!   reference does; the model's parameters also get the steps' `−H_θλ v` terms.
//!
//! Gradients reach the networks through value-neutral surrogates added to the loss (their
//! value 0, their gradient the chain rule's), so the trainer's one backward pass and
//! optimizer step stay as they are. With `through = true` the model's parameters' share
//! comes from the backward passes the steps take anyway: each point's one backward pass
//! gives λ's gradient and keeps the parameters' (the fused dense layers' as the operands
//! of their weight gradients, summed over all points at the end in one product per weight,
//! `nets::fused::deferring_weight_gradients`), so no graph is kept for a second pass.
//! The guide's `let`s that only the refined site reads (its encoder) are not evaluated at
//! the steps (`Frame::skip_dead_lets`).

use super::eval::Overrides;
use super::nets::fused;
use super::objective::{Batch, Outcome, Settings};
use super::LoweredModel;
use crate::ir::{DistParam, SiteVar};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor, Var};

/// How a site is refined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefineConfig {
    pub steps: usize,
    pub lr: f64,
    pub momentum: f64,
    /// Each parameter's gradient is clipped to this norm per step.
    pub clip: f64,
    /// Gradients for the encoder through the refinement (SA-VAE) or at its start.
    pub through: bool,
}

/// The finite-difference step of the Hessian-vector products, relative to the vector's
/// largest entry (f32 gradients: a smaller step drowns in rounding).
const HVP_STEP: f64 = 1e-3;

/// Draws per example of the bounds an amortization gap compares.
pub const GAP_SAMPLES: usize = 64;

/// Draws per example of each refinement step's gradient when measuring the gap.
pub const STEP_SAMPLES: usize = 16;

/// Refined parameters of the sites, each `(loc, log σ²)` `[B, ...]`.
type Lambda = Vec<(Tensor, Tensor)>;

fn norm(t: &Tensor) -> Result<f64> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64)
}

/// `t` scaled to norm at most `max`.
fn clipped(t: &Tensor, max: f64) -> Result<Tensor> {
    let n = norm(t)?;
    if n > max && n.is_finite() {
        t.affine(max / (n + 1e-6), 0.0)
    } else {
        Ok(t.clone())
    }
}

fn max_abs(ts: &[(Tensor, Tensor)]) -> Result<f64> {
    let mut m = 0f64;
    for (a, b) in ts {
        for t in [a, b] {
            m = m.max(t.abs()?.max_all()?.to_scalar::<f32>()? as f64);
        }
    }
    Ok(m)
}

/// The gradient `g` of a batch's mean loss as the step of a training batch sees it: each
/// example's gradient over `block` (the training batch, whatever the batch at hand), and
/// each parameter's gradient clipped to norm `clip` per `block` consecutive examples. A
/// batch of the training size is unchanged; any other batch (evaluation's, the last one of
/// an epoch) takes the steps its examples would take in a training batch, so the
/// refinement does not depend on how evaluation chunks a split.
fn as_in_training(g: &Lambda, clip: f64, block: usize) -> Result<Lambda> {
    g.iter()
        .map(|(a, b)| Ok((per_block(a, clip, block)?, per_block(b, clip, block)?)))
        .collect()
}

/// The factor that turns the gradient of a mean over `rows` examples into the gradient of
/// a mean over `block` (the training batch): each example's share of a training batch.
fn training_scale(rows: usize, block: usize) -> f64 {
    rows as f64 / block.max(1) as f64
}

/// `t` `[B, ...]`, the gradient of a mean over B rows, rescaled to a mean over `block` rows
/// and clipped to norm `max` per `block` consecutive rows (a batch of at most `block` rows
/// is one block, clipped as a whole).
fn per_block(t: &Tensor, max: f64, block: usize) -> Result<Tensor> {
    let rows = t.dim(0)?;
    let block = block.max(1);
    let t = t.affine(training_scale(rows, block), 0.0)?;
    // Each row's squared norm, summed per block on the host (a handful of numbers).
    let sq: Vec<f32> = t
        .sqr()?
        .reshape((rows, ()))?
        .sum(1)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    let factor: Vec<f32> = sq
        .chunks(block)
        .map(|c| {
            let n = c.iter().map(|&v| v as f64).sum::<f64>().sqrt();
            // As `clipped`: scaled to `max / (n + 1e-6)` when over it; a non-finite norm
            // left alone.
            if n > max && n.is_finite() {
                (max / (n + 1e-6)) as f32
            } else {
                1.0
            }
        })
        .collect();
    let per_row: Vec<f32> = (0..rows).map(|i| factor[i / block]).collect();
    let mut shape = vec![rows];
    shape.resize(t.rank(), 1);
    Tensor::from_vec(per_row, shape, t.device())?
        .to_dtype(t.dtype())?
        .broadcast_mul(&t)
}

/// One momentum step from the gradient `g` at λ_k (of the batch's mean loss): the clipped
/// gradient, as a training batch of `block` examples has it ([`as_in_training`]), and
/// `p_k = μ p_{k−1} − clip(g)` (`−clip(g)` at the first step).
fn momentum_step(
    g: &Lambda,
    p: Option<&Lambda>,
    cfg: RefineConfig,
    block: usize,
) -> Result<(Lambda, Lambda)> {
    let gc = as_in_training(g, cfg.clip, block)?;
    let step = match p {
        None => gc
            .iter()
            .map(|(a, b)| Ok((a.neg()?, b.neg()?)))
            .collect::<Result<Lambda>>()?,
        Some(p) => p
            .iter()
            .zip(&gc)
            .map(|((p0, p1), (g0, g1))| {
                Ok((
                    (p0.affine(cfg.momentum, 0.0)? - g0)?,
                    (p1.affine(cfg.momentum, 0.0)? - g1)?,
                ))
            })
            .collect::<Result<Lambda>>()?,
    };
    Ok((gc, step))
}

/// `a + c · b`, entrywise over a λ.
fn axpy(a: &Lambda, c: f64, b: &Lambda) -> Result<Lambda> {
    a.iter()
        .zip(b)
        .map(|((a0, a1), (b0, b1))| Ok(((a0 + b0.affine(c, 0.0)?)?, (a1 + b1.affine(c, 0.0)?)?)))
        .collect()
}

impl LoweredModel {
    /// The batch whose mean loss the refinement's steps follow: the training batch.
    pub fn refine_block(&self) -> usize {
        self.program.train.batch.max(1)
    }

    /// The refined sites of the plan and their configuration (`@refine`).
    pub fn refined_sites(&self) -> Vec<(SiteVar, RefineConfig)> {
        self.plan
            .sites
            .iter()
            .filter_map(|s| match s.estimator {
                crate::plan::Estimator::Refine {
                    steps,
                    lr,
                    through,
                    momentum,
                    clip,
                } => Some((
                    s.var,
                    RefineConfig {
                        steps,
                        lr,
                        momentum,
                        clip,
                        through,
                    },
                )),
                _ => None,
            })
            .collect()
    }

    /// The encoder's parameters `λ0 = (loc, log σ²)` `[B, ...]` of Normal guide sites, from
    /// one guide pass, with their gradients to the networks.
    pub fn site_parameters(
        &self,
        batch: &Batch,
        vars: &[SiteVar],
        train: bool,
        rng: &mut Rng,
    ) -> Result<Lambda> {
        let guide = self.guide_pass(batch, batch.rows, train, &Overrides::default(), rng)?;
        let mut out = Vec::with_capacity(vars.len());
        for var in vars {
            let Some(rec) = guide.records.iter().find(|r| r.var == *var) else {
                bail!("internal error: the refined site was not drawn by the guide")
            };
            if rec.step.is_some() || rec.dist.kind() != crate::ir::DistKind::Normal {
                bail!("refinement applies to a Normal site outside loops")
            }
            let (Some(loc), Some(scale)) = (
                rec.dist.param(DistParam::Loc),
                rec.dist.param(DistParam::Scale),
            ) else {
                bail!("internal error: a Normal without its parameters")
            };
            if loc.dim(0)? != batch.rows {
                bail!(
                    "a refined site must be drawn once per example (not after an enumerated site)"
                )
            }
            out.push((loc.clone(), (scale.log()? * 2.0)?));
        }
        Ok(out)
    }

    /// The objective with each of `vars` given the parameters `lambda`.
    fn at(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        vars: &[SiteVar],
        lambda: &Lambda,
        rng: &mut Rng,
    ) -> Result<Outcome> {
        let mut o = overrides.clone();
        for (var, (loc, logvar)) in vars.iter().zip(lambda) {
            o.set(
                *var,
                None,
                vec![
                    (DistParam::Loc, loc.clone()),
                    (DistParam::Scale, (logvar * 0.5)?.exp()?),
                ],
            );
        }
        self.bound_with(batch, s, &o, rng)
    }

    /// The loss at `lambda` and its gradient in λ (as fresh variables), with the noise of
    /// `rng` (left unchanged, so the point can be revisited with the same noise); with
    /// `params`, also its gradient in the model's parameters from the same backward pass
    /// (else empty).
    #[allow(clippy::too_many_arguments)]
    fn loss_and_grad(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        vars: &[SiteVar],
        lambda: &Lambda,
        rng: &Rng,
        params: bool,
    ) -> Result<(Outcome, Lambda, ParamGrads)> {
        let live: Vec<(Var, Var)> = lambda
            .iter()
            .map(|(a, b)| {
                Ok((
                    Var::from_tensor(&a.detach())?,
                    Var::from_tensor(&b.detach())?,
                ))
            })
            .collect::<Result<_>>()?;
        let at: Lambda = live
            .iter()
            .map(|(a, b)| (a.as_tensor().clone(), b.as_tensor().clone()))
            .collect();
        let out = self.at(batch, s, overrides, vars, &at, &mut rng.clone())?;
        let (grads, kept) = if params {
            // The fused dense layers' weight gradients are deferred, to be summed over
            // every point in one product per weight (`param_surrogate`).
            let (grads, dense) = fused::deferring_weight_gradients(|| out.loss.backward());
            let grads = grads?;
            let vars = self
                .store
                .named()
                .into_iter()
                .filter_map(|(_, v)| grads.get(v.as_tensor()).cloned().map(|g| (v, g)))
                .collect();
            (grads, ParamGrads { dense, vars })
        } else {
            // Only λ's gradient: the networks' weight gradients are skipped.
            let grads = fused::without_weight_gradients(|| out.loss.backward())?;
            (grads, ParamGrads::default())
        };
        let g = live
            .iter()
            .map(|(a, b)| {
                let get = |v: &Var| match grads.get(v.as_tensor()) {
                    Some(g) => Ok(g.clone()),
                    None => v.as_tensor().zeros_like(),
                };
                Ok((get(a)?, get(b)?))
            })
            .collect::<Result<_>>()?;
        Ok((out, g, kept))
    }

    /// The objective of a batch whose `@refine` sites are refined first (see the module
    /// documentation).
    pub fn refined_objective(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        sites: &[(SiteVar, RefineConfig)],
        rng: &mut Rng,
    ) -> Result<Outcome> {
        let vars: Vec<SiteVar> = sites.iter().map(|(v, _)| *v).collect();
        let cfg = sites[0].1;
        let start = self.site_parameters(batch, &vars, s.train, rng)?;
        // The steps follow the ELBO whatever the final bound (IWAE in evaluation).
        let step_settings = Settings {
            samples: 1,
            iwae: false,
            ..*s
        };
        // The steps keep their gradients in the model's parameters for SA-VAE's Hessian
        // terms.
        let keep = s.train && cfg.through;
        let traj = self.refine(
            batch,
            &step_settings,
            overrides,
            &vars,
            &start,
            cfg,
            keep,
            rng,
        )?;
        let last = traj.points.last().cloned().unwrap_or_else(|| start.clone());
        if !s.train {
            // Evaluation: the bound at λ_K; no gradients.
            return self.at(batch, s, overrides, &vars, &last, rng);
        }
        let mut out = if cfg.through {
            let noise = rng.fork();
            let (out, bar_k, at_k) =
                self.loss_and_grad(batch, s, overrides, &vars, &last, &noise, true)?;
            let (bar0, moved) =
                self.unroll_back(batch, &step_settings, overrides, &vars, &traj, bar_k, cfg)?;
            // The model's parameters: the loss's own gradient at λ_K and the steps' terms,
            // from the backward passes already taken; the encoder: the chain rule's.
            let mut parts: Vec<(f64, &ParamGrads)> = vec![(1.0, &at_k)];
            for (k, c, grads) in &moved {
                parts.push((*c, &traj.params[*k]));
                parts.push((-*c, grads));
            }
            let mut out = out;
            out.loss = ((out.loss.detach() + param_surrogate(&parts, &out.loss)?)?
                + surrogate(&start, &bar0)?)?;
            out
        } else {
            let fixed: Lambda = last.iter().map(|(a, b)| (a.detach(), b.detach())).collect();
            let mut out = self.at(batch, s, overrides, &vars, &fixed, rng)?;
            // The encoder on the loss at λ0: its unclipped gradient there.
            let g0 = &traj.raw_grads[0];
            out.loss = (out.loss + surrogate(&start, g0)?)?;
            out
        };
        // The refinement's gain: the step loss at λ0 against at λ_K, the latter the final
        // loss where that is the steps' objective (one draw, no IWAE).
        let last_loss = if s.samples <= 1 && !s.iwae {
            out.loss.to_scalar::<f32>()? as f64
        } else {
            let at_k = self.at(
                batch,
                &step_settings,
                overrides,
                &vars,
                &last,
                &mut rng.fork(),
            )?;
            at_k.loss.to_scalar::<f32>()? as f64
        };
        let first_loss = traj.first_loss.unwrap_or(last_loss);
        out.terms.push(super::objective::Term {
            name: "refinement gain".into(),
            value: Tensor::new((first_loss - last_loss) as f32, self.device())?,
        });
        Ok(out)
    }

    /// K momentum steps of descent on the loss from `start`; with `params`, each step's
    /// gradient in the model's parameters kept.
    #[allow(clippy::too_many_arguments)]
    pub fn refine(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        vars: &[SiteVar],
        start: &Lambda,
        cfg: RefineConfig,
        params: bool,
        rng: &mut Rng,
    ) -> Result<Trajectory> {
        let mut x: Lambda = start
            .iter()
            .map(|(a, b)| (a.detach(), b.detach()))
            .collect();
        let mut p: Option<Lambda> = None;
        let mut traj = Trajectory::default();
        for k in 0..cfg.steps {
            let noise = rng.fork();
            let (out, g, grads) =
                self.loss_and_grad(batch, s, overrides, vars, &x, &noise, params)?;
            if k == 0 {
                traj.first_loss = Some(out.loss.to_scalar::<f32>()? as f64);
            }
            let (gc, step) = momentum_step(&g, p.as_ref(), cfg, self.refine_block())?;
            traj.starts.push(x.clone());
            traj.noises.push(noise);
            traj.grads.push(gc);
            traj.raw_grads.push(g);
            traj.params.push(grads);
            x = axpy(&x, cfg.lr, &step)?;
            traj.points.push(x.clone());
            p = Some(step);
        }
        Ok(traj)
    }

    /// Reverse-mode through the momentum steps (SA-VAE's `backward_mom`): from the loss's
    /// gradient at λ_K to its gradient at λ0, and the model parameters' `−H_θλ p̄` terms:
    /// for each step k, `c (∇_θ L(λ_k) − ∇_θ L(λ_k + r p̄))` ([`StepTerm`]).
    #[allow(clippy::too_many_arguments)]
    fn unroll_back(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        vars: &[SiteVar],
        traj: &Trajectory,
        bar_k: Lambda,
        cfg: RefineConfig,
    ) -> Result<(Lambda, Vec<StepTerm>)> {
        let mut bar = bar_k;
        let mut pbar: Lambda = bar
            .iter()
            .map(|(a, b)| Ok((a.zeros_like()?, b.zeros_like()?)))
            .collect::<Result<_>>()?;
        let mut theta_terms = Vec::new();
        for k in (0..traj.starts.len()).rev() {
            pbar = axpy(&pbar, cfg.lr, &bar)?;
            let scale = max_abs(&pbar)?;
            if scale == 0.0 {
                pbar = pbar
                    .iter()
                    .map(|(a, b)| Ok((a.affine(cfg.momentum, 0.0)?, b.affine(cfg.momentum, 0.0)?)))
                    .collect::<Result<_>>()?;
                continue;
            }
            let r = HVP_STEP / scale;
            let moved = axpy(&traj.starts[k], r, &pbar)?;
            let (_, g_r, grads_r) =
                self.loss_and_grad(batch, s, overrides, vars, &moved, &traj.noises[k], true)?;
            let g_r = as_in_training(&g_r, cfg.clip, self.refine_block())?;
            // H_λλ p̄ ≈ (g(λ + r p̄) − g(λ)) / r; λ̄_k = λ̄_{k+1} − H p̄ (p_k = μ p − g).
            let hv = axpy(&g_r, -1.0, &traj.grads[k])?;
            bar = axpy(&bar, -1.0 / r, &hv)?;
            bar = bar
                .iter()
                .map(|(a, b)| Ok((clipped(a, cfg.clip)?, clipped(b, cfg.clip)?)))
                .collect::<Result<_>>()?;
            // θ̄ += −H_θλ p̄ ≈ −(∇_θ L(λ + r p̄) − ∇_θ L(λ)) / r, with the step's gradient
            // as a training batch has it (rescaled by rows / block: [`as_in_training`]).
            let c = training_scale(batch.rows, self.refine_block());
            theta_terms.push((k, c / r, grads_r));
            pbar = pbar
                .iter()
                .map(|(a, b)| Ok((a.affine(cfg.momentum, 0.0)?, b.affine(cfg.momentum, 0.0)?)))
                .collect::<Result<_>>()?;
        }
        Ok((bar, theta_terms))
    }

    /// Per example, the bound at the encoder's `λ0` and after `cfg.steps` refinement steps
    /// of every reparameterized Normal guide site outside loops (`vic eval --refine K`):
    /// `([B], [B])`, in evaluation mode, per-dataset terms shared by `dataset_size`
    /// examples.
    pub fn amortization_gap(
        &self,
        batch: &Batch,
        cfg: RefineConfig,
        dataset_size: usize,
        rng: &mut Rng,
    ) -> Result<(Tensor, Tensor)> {
        let vars = self.refinable_sites();
        if vars.is_empty() {
            bail!("the guide has no Normal site outside loops to refine")
        }
        // The steps' gradients averaged over STEP_SAMPLES draws: evaluation can afford the
        // less noisy steps training cannot.
        let s = Settings::evaluation(STEP_SAMPLES, false, dataset_size);
        let start = self.site_parameters(batch, &vars, false, rng)?;
        let none = Overrides::default();
        let last = self.refine_monotone(batch, &s, &vars, &start, cfg, rng)?;
        // Both bounds averaged over GAP_SAMPLES draws with the same noise, so the gap is
        // the refinement's and not the draws'.
        let many = Settings::evaluation(GAP_SAMPLES, false, dataset_size);
        let noise = rng.fork();
        let b0 = self
            .at(batch, &many, &none, &vars, &start, &mut noise.clone())?
            .bound;
        let bk = self
            .at(batch, &many, &none, &vars, &last, &mut noise.clone())?
            .bound;
        Ok((b0.detach(), bk.detach()))
    }

    /// Evaluation's refinement: the reference's momentum steps (as [`LoweredModel::refine`]
    /// takes them), each example's kept only where its own bound did not fall. The
    /// reference's step on the batch's mean is `η / B` times an example's gradient, which
    /// heavy-ball momentum keeps stable only while `η σ_post⁻² / B < 1 + μ` (twice that,
    /// for μ = 0.5, 3): on a trained Fashion-MNIST VAE 5% of the test images have a
    /// posterior that sharp, and their bound fell by 10 to 3,900 nats. Here an example
    /// whose bound falls goes back to its last point, with its momentum dropped and its
    /// step halved. Each step compares the two points on the same draws.
    fn refine_monotone(
        &self,
        batch: &Batch,
        s: &Settings,
        vars: &[SiteVar],
        start: &Lambda,
        cfg: RefineConfig,
        rng: &mut Rng,
    ) -> Result<Lambda> {
        let none = Overrides::default();
        let rows = batch.rows;
        // `mask` [B] as u8, shaped to select rows of `t` [B, ...].
        let pick = |mask: &Tensor, a: &Tensor, b: &Tensor| -> Result<Tensor> {
            let mut shape = vec![rows];
            shape.resize(a.rank(), 1);
            mask.reshape(shape)?
                .broadcast_as(a.shape())?
                .where_cond(a, b)
        };
        let per_row = |v: &Tensor, t: &Tensor| -> Result<Tensor> {
            let mut shape = vec![rows];
            shape.resize(t.rank(), 1);
            v.reshape(shape)?.broadcast_mul(t)
        };
        let mut x: Lambda = start
            .iter()
            .map(|(a, b)| (a.detach(), b.detach()))
            .collect();
        let (_, mut g, _) = self.loss_and_grad(batch, s, &none, vars, &x, &rng.fork(), false)?;
        let mut eta = Tensor::full(cfg.lr as f32, rows, x[0].0.device())?;
        let mut p: Option<Lambda> = None;
        for _ in 0..cfg.steps {
            let (_, step) = momentum_step(&g, p.as_ref(), cfg, self.refine_block())?;
            let next: Lambda = x
                .iter()
                .zip(&step)
                .map(|((a, b), (da, db))| {
                    Ok(((a + per_row(&eta, da)?)?, (b + per_row(&eta, db)?)?))
                })
                .collect::<Result<_>>()?;
            // Each step its own draws, the same at both points, so a comparison is the
            // step's and not the draws'.
            let noise = rng.fork();
            let (out, g_next, _) =
                self.loss_and_grad(batch, s, &none, vars, &next, &noise, false)?;
            let next_bound = out.bound.detach();
            let here = self
                .at(batch, s, &none, vars, &x, &mut noise.clone())?
                .bound
                .detach();
            // A non-finite bound is a fall.
            let kept = next_bound.ge(&here)?;
            x = x
                .iter()
                .zip(&next)
                .map(|((a, b), (na, nb))| Ok((pick(&kept, na, a)?, pick(&kept, nb, b)?)))
                .collect::<Result<_>>()?;
            g = g
                .iter()
                .zip(&g_next)
                .map(|((a, b), (na, nb))| Ok((pick(&kept, na, a)?, pick(&kept, nb, b)?)))
                .collect::<Result<_>>()?;
            p = Some(
                step.iter()
                    .map(|(a, b)| {
                        Ok((
                            pick(&kept, a, &a.zeros_like()?)?,
                            pick(&kept, b, &b.zeros_like()?)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            );
            eta = pick(&kept, &eta, &eta.affine(0.5, 0.0)?)?;
        }
        Ok(x)
    }

    /// The guide's Normal sites outside loops, drawn once per example: what refinement
    /// applies to.
    pub fn refinable_sites(&self) -> Vec<SiteVar> {
        let mut out = Vec::new();
        if let crate::ir::Guide::Amortized(body) = &self.program.guide {
            crate::ir::walk::for_each_site(body, |site, scope| {
                let latent =
                    matches!(site.var, SiteVar::Latent(id) if !self.program.latents[id].global);
                if latent
                    && scope.loops.is_empty()
                    && site.dist.kind == crate::ir::DistKind::Normal
                    && site.flows.is_empty()
                {
                    out.push(site.var);
                }
            });
        }
        out
    }
}

/// The steps of a refinement.
#[derive(Default)]
pub struct Trajectory {
    /// λ_k at the start of step k, and λ_{k+1} after it.
    pub starts: Vec<Lambda>,
    pub points: Vec<Lambda>,
    /// The clipped and the raw gradient of the loss at λ_k.
    pub grads: Vec<Lambda>,
    pub raw_grads: Vec<Lambda>,
    /// The gradient of the loss at λ_k in the model's parameters (kept or empty, see
    /// [`LoweredModel::refine`]) and the noise it drew.
    params: Vec<ParamGrads>,
    pub noises: Vec<Rng>,
    /// The loss at λ0 (none without steps).
    pub first_loss: Option<f64>,
}

/// Step k's `−H_θλ p̄` term `c (∇_θ L(λ_k) − ∇_θ L(λ_k + r p̄))`: `(k, c, ∇_θ L(λ_k + r p̄))`.
type StepTerm = (usize, f64, ParamGrads);

/// The gradient of the loss at one point in the model's parameters, kept for the
/// `−H_θλ p̄` terms: the fused dense layers' as their deferred operands (summed over the
/// points in one product per weight), every other parameter's as a tensor.
#[derive(Default)]
struct ParamGrads {
    dense: Vec<fused::DeferredDense>,
    vars: Vec<(Var, Tensor)>,
}

/// `Σ_i c_i ∇_θ L_i` over the points `(c_i, ∇_θ L_i)` as a value-neutral surrogate: its
/// value 0, its gradient in each parameter the sum (a plain 0 like `loss` when no
/// parameter of the model had a gradient, e.g. a likelihood without learned parts).
fn param_surrogate(parts: &[(f64, &ParamGrads)], loss: &Tensor) -> Result<Tensor> {
    let mut sums: Vec<(&Var, Tensor)> = Vec::new();
    for (c, p) in parts {
        for (v, g) in &p.vars {
            let g = g.affine(*c, 0.0)?;
            match sums.iter_mut().find(|(s, _)| s.id() == v.id()) {
                Some((_, s)) => *s = (&*s + g)?,
                None => sums.push((v, g)),
            }
        }
    }
    let dense: Vec<(f64, &[fused::DeferredDense])> = parts
        .iter()
        .map(|(c, p)| (*c, p.dense.as_slice()))
        .collect();
    let mut terms = Vec::new();
    for (v, g) in &sums {
        terms.push((v.as_tensor() * g)?.sum_all()?);
    }
    for d in fused::combine_deferred(&dense)? {
        terms.push((&d.w * &d.dw)?.sum_all()?);
        terms.push((&d.b * &d.db)?.sum_all()?);
    }
    let Some(first) = terms.first() else {
        return loss.detach().zeros_like();
    };
    let mut acc = first.clone();
    for t in &terms[1..] {
        acc = (acc + t)?;
    }
    &acc - acc.detach()
}

/// `Σ λ0 · g` minus its value: its gradient in the encoder is the chain rule's `J^T g`.
fn surrogate(start: &Lambda, g: &Lambda) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for ((l0, v0), (g0, g1)) in start.iter().zip(g) {
        let t = ((l0 * g0.detach())?.sum_all()? + (v0 * g1.detach())?.sum_all()?)?;
        acc = Some(match acc {
            Some(a) => (a + t)?,
            None => t,
        });
    }
    match acc {
        Some(a) => &a - a.detach(),
        None => bail!("internal error: nothing refined"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    /// With the refined site's parameters given, the guide's `let`s that only it reads are
    /// skipped (the encoder is not run again at every step), and those another site reads
    /// (directly or through another `let`) are not; the refined objective still runs.
    #[test]
    fn the_lets_only_a_given_site_reads_are_skipped() {
        let spec = |w_arg: &str| {
            format!(
                r#"
data x : Real[4]
latent z : Real[2]
latent w : Real[2]
net enc(x: Real[4]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [5])
net other(x: Real[4]) -> Real[2] = mlp(hidden = [3])
net dec(z: Real[2]) -> Real[4] = mlp(hidden = [5])
model {{
  z ~ Normal(0, 1)
  w ~ Normal(0, 1)
  x ~ Normal(dec(z), 1)
}}
guide {{
  let (m, s) = enc(x)
  let h = other(x)
  let u = m * 2
  z ~ Normal(u, s) @refine(steps = 2, lr = 0.5)
  w ~ Normal({w_arg}, 1)
}}
train {{ dataset = "unused.npz" }}
"#
            )
        };
        let dev = Device::Cpu;
        let x = Tensor::from_vec(Rng::seed(1).normal_vec(3 * 4), (3, 4), &dev).unwrap();
        let batch = Batch::new(vec![Some(x)], 3);
        for (w_arg, dead) in [("h", vec!["m", "s", "u"]), ("h + m", vec!["s", "u"])] {
            let front = crate::driver::front_end(&spec(w_arg), &Default::default());
            let program = front.program.unwrap();
            let model =
                LoweredModel::new(program, crate::lower::params::ParamStore::seeded(3, &dev))
                    .unwrap();
            let vars = model.refinable_sites();
            let start = model
                .site_parameters(&batch, &vars, true, &mut Rng::seed(2))
                .unwrap();
            let mut o = Overrides::default();
            o.set(
                vars[0],
                None,
                vec![
                    (DistParam::Loc, start[0].0.clone()),
                    (
                        DistParam::Scale,
                        (&start[0].1 * 0.5).unwrap().exp().unwrap(),
                    ),
                ],
            );
            let frame = model
                .guide_pass(&batch, 3, true, &o, &mut Rng::seed(2))
                .unwrap();
            let crate::ir::Guide::Amortized(g) = &model.program.guide else {
                panic!("an amortized guide")
            };
            let names: Vec<&str> = frame
                .skipped_locals()
                .into_iter()
                .map(|i| g.locals[i].name.as_str())
                .collect();
            assert_eq!(names, dead, "w ~ Normal({w_arg}, 1)");
            // Without substitutions nothing is skipped, and the refined objective runs.
            let plain = model
                .guide_pass(&batch, 3, true, &Overrides::default(), &mut Rng::seed(2))
                .unwrap();
            assert!(plain.skipped_locals().is_empty());
            let s = Settings {
                samples: 1,
                iwae: false,
                train: true,
                kl_weight: 1.0,
                free_bits: 0.0,
                dataset_size: 3,
            };
            let out = model.objective(&batch, &s, &mut Rng::seed(4)).unwrap();
            assert!(out.loss.to_scalar::<f32>().unwrap().is_finite());
        }
    }

    /// A batch of two training batches steps as the two would, each on its own: each
    /// half's rows of the 6-row mean's gradient are half its own batch's, and each half is
    /// clipped on its own norm.
    #[test]
    fn a_larger_batch_steps_as_its_training_sized_blocks_would() {
        let v: Vec<f32> = Rng::seed(3).normal_vec(6 * 4);
        // Rows 0-2 large (clipped), rows 3-5 small (not).
        let v: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(i, x)| if i < 12 { 10.0 * x } else { 0.01 * x })
            .collect();
        let g6 = Tensor::from_vec(v, (6, 4), &Device::Cpu).unwrap();
        // The 3-row batches' own mean gradients: twice the 6-row mean's rows.
        let half = |i: usize| (g6.narrow(0, 3 * i, 3).unwrap() * 2.0).unwrap();
        let whole = rows(&per_block(&g6, 5.0, 3).unwrap());
        let apart = [
            rows(&clipped(&half(0), 5.0).unwrap()),
            rows(&clipped(&half(1), 5.0).unwrap()),
        ]
        .concat();
        for (a, b) in whole.iter().flatten().zip(apart.iter().flatten()) {
            assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // The first block was clipped to norm 5, the second left as it was.
        assert!(
            (norm(&Tensor::new(apart[..3].concat(), &Device::Cpu).unwrap()).unwrap() - 5.0).abs()
                < 1e-3
        );
        // A smaller batch takes its examples' steps of the training batch: rescaled only.
        let small = g6.narrow(0, 3, 2).unwrap();
        let got = rows(&per_block(&small, 5.0, 3).unwrap());
        let want = rows(&(small * (2.0 / 3.0)).unwrap());
        assert_eq!(got, want);
    }
}
