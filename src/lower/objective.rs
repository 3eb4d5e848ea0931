//! The one generic objective: run the guide, score its draws and the data under the
//! model, and combine the terms into the ELBO or the IWAE bound, per example. Also the
//! two other passes over a lowered model: ancestral sampling (`vic sample`) and
//! posterior means (`vic encode`).

use super::dist::kl;
use super::eval::{lift, value_shape, Frame, Pass};
use super::{LoweredModel, SiteRecord, Used};
use crate::ir::{Body, Expr, ExprKind, Guide, Ref, SiteVar, Stmt};
use crate::plan::{KlMethod, KlSubject};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};

/// Visit every network and param an expression of `body` uses.
pub fn visit_refs(body: &Body, f: &mut dyn FnMut(Used)) {
    fn expr(e: &Expr, f: &mut dyn FnMut(Used)) {
        match &e.kind {
            ExprKind::Ref(Ref::Param(p)) => f(Used::Param(*p)),
            ExprKind::NetCall { net, args, .. } => {
                f(Used::Net(*net));
                args.iter().for_each(|a| expr(a, f));
            }
            ExprKind::Step { base, .. } => expr(base, f),
            ExprKind::Select { base, index } => {
                expr(base, f);
                expr(index, f);
            }
            ExprKind::Unary { arg, .. } | ExprKind::Reduce { arg, .. } => expr(arg, f),
            ExprKind::Binary { lhs, rhs, .. } => {
                expr(lhs, f);
                expr(rhs, f);
            }
            ExprKind::Concat(parts) => parts.iter().for_each(|p| expr(p, f)),
            _ => {}
        }
    }
    fn dist(d: &crate::ir::Dist, f: &mut dyn FnMut(Used)) {
        d.args.iter().for_each(|(_, e)| expr(e, f));
        if let Some(c) = &d.component {
            dist(c, f);
        }
    }
    fn stmts(s: &[Stmt], f: &mut dyn FnMut(Used)) {
        for st in s {
            match st {
                Stmt::Let { value, .. } => expr(value, f),
                Stmt::Loop { body, .. } => stmts(body, f),
                Stmt::Sample(site) => {
                    dist(&site.dist, f);
                    for flow in &site.flows {
                        let crate::ir::FlowKind::Iaf { net, .. } = flow.kind;
                        f(Used::Net(net));
                        flow.context.iter().for_each(|c| expr(c, f));
                    }
                }
            }
        }
    }
    stmts(&body.stmts, f)
}

/// One minibatch: data tensors per `DataId` (`None` for unbound variables), with
/// `rows` examples.
pub struct Batch {
    pub data: Vec<Option<Tensor>>,
    pub rows: usize,
}

/// How to evaluate the objective.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Samples per example (ELBO average, or IWAE's K).
    pub samples: usize,
    /// IWAE bound instead of the ELBO.
    pub iwae: bool,
    /// Training mode: dropout on, KL weighted and free bits applied in the loss.
    pub train: bool,
    /// Weight of the KL terms in the loss (`beta` times the annealing factor).
    pub kl_weight: f64,
    /// Free bits: nats per latent variable below which its KL is not pushed down.
    pub free_bits: f64,
    /// Training-set size: per-dataset KL terms (global latents, weight posteriors) are
    /// divided by it, so a minibatch carries its share.
    pub dataset_size: usize,
}

impl Settings {
    /// Evaluation: no dropout, KL weight 1, no free bits; `samples` per example for the
    /// ELBO, or the IWAE bound's K.
    pub fn evaluation(samples: usize, iwae: bool, dataset_size: usize) -> Settings {
        Settings {
            samples,
            iwae,
            train: false,
            kl_weight: 1.0,
            free_bits: 0.0,
            dataset_size,
        }
    }
}

/// A named scalar term of the objective (mean per example), for metrics and for saying
/// which term went bad.
#[derive(Clone, Debug)]
pub struct Term {
    pub name: String,
    pub value: Tensor,
}

/// The result of one evaluation.
pub struct Outcome {
    /// What the optimizer minimizes (scalar).
    pub loss: Tensor,
    /// The bound per example `[B]` (ELBO or IWAE, KL weight 1, per-dataset terms
    /// included at their per-example share).
    pub bound: Tensor,
    /// `log p(x | ...)` per example, averaged over samples `[B]`.
    pub loglik: Tensor,
    /// The named terms (means per example), data log-likelihoods and KLs.
    pub terms: Vec<Term>,
}

impl LoweredModel {
    fn guide_pass<'a>(
        &'a self,
        batch: &'a Batch,
        sample_rows: usize,
        train: bool,
        rng: &mut Rng,
    ) -> Result<Frame<'a>> {
        let (locals, loops) = match &self.program.guide {
            Guide::Amortized(g) => (g.locals.len(), g.loops.len()),
            _ => (0, 0),
        };
        let mut frame = Frame::new(
            self,
            Pass::Guide,
            locals,
            loops,
            batch.rows,
            sample_rows,
            train,
            &batch.data,
        );
        match &self.program.guide {
            Guide::Amortized(g) => frame.run(&g.stmts, rng)?,
            Guide::None => {}
            Guide::Exact { .. } => {
                bail!("`guide exact` draws no guide samples: its posterior is computed exactly")
            }
        }
        Ok(frame)
    }

    /// `guide exact` on a linear-Gaussian model: the bound is the exact log p(x), whatever
    /// the sample count or estimator asked for.
    fn exact_objective(&self, batch: &Batch, rng: &mut Rng) -> Result<Outcome> {
        let exact = self.exact_linear_gaussian(batch, rng)?;
        let mean = exact.log_px.mean_all()?;
        Ok(Outcome {
            loss: mean.neg()?,
            bound: exact.log_px.clone(),
            loglik: exact.log_px,
            terms: vec![Term {
                name: "log p(x)".into(),
                value: mean,
            }],
        })
    }

    /// Evaluate the objective on a batch.
    ///
    /// With enumerated guide sites (see `eval`'s module documentation) the rows of one
    /// example are `samples x E` (E: the enumerated joint values) and each row carries
    /// the weight `w = exp(log_weight)` (the `q` of its enumerated values). Every per-row
    /// term becomes a per-example value `(1/S) Σ_rows w · term`: the ELBO is
    /// `(1/S) Σ_s Σ_y q(y|x) [log p(x, y, z_sy) - log q(y|x) - log q(z_sy|x, y)]`, the
    /// enumerated site's KL exact, and gradients flow through `q`'s probabilities in `w`.
    /// The IWAE bound is `log (1/S) Σ_s Σ_y exp(log p(x, y, z_sy) - log q(z_sy|x, y))`
    /// (the inner sum estimates `p(x)` without bias).
    pub fn objective(&self, batch: &Batch, s: &Settings, rng: &mut Rng) -> Result<Outcome> {
        if self.exact_guide() {
            return self.exact_objective(batch, rng);
        }
        if let Guide::Exact {
            posterior: crate::ir::ExactPosterior::Enumerate,
            ..
        } = self.program.guide
        {
            return self.exact_discrete_objective(batch, s, rng);
        }
        let b = batch.rows;
        let samples = s.samples.max(1);
        let guide = self.guide_pass(batch, b * samples, s.train, rng)?;
        // Examples x samples x enumerated values.
        let rows = guide.sample_rows;
        let mut score = Frame::new(
            self,
            Pass::Score,
            self.program.model.locals.len(),
            self.program.model.loops.len(),
            b,
            rows,
            s.train,
            &batch.data,
        );
        score.latents = guide.latents.clone();
        score.latent_steps = guide.latent_steps.clone();
        score.run(&self.program.model.stmts, rng)?;

        let dev = self.device();
        let zeros = Tensor::zeros(rows, candle_core::DType::F32, dev)?;
        let mut loglik = zeros.clone();
        // Per-row KL-like terms of per-example latents: analytic KL or log q - log p.
        let mut local_kl = zeros.clone();
        let mut terms: Vec<Term> = Vec::new();
        // (name, per-example mean [B]) of each local latent's KL, for free bits.
        let mut kl_by_latent: Vec<(String, Tensor)> = Vec::new();
        // Per-dataset terms (scalars, whole-dataset KLs).
        let mut global_kl = Tensor::new(0f32, dev)?;

        let guide_record = |var: SiteVar, step: Option<i64>| -> Option<&SiteRecord> {
            guide
                .records
                .iter()
                .find(|r| r.var == var && r.step == step)
        };
        // The rows' weights (None: nothing enumerated, every weight 1).
        let weight = match &guide.log_weight {
            Some(lw) => Some(lift(lw, rows)?.exp()?),
            None => None,
        };
        let per_example = |t: &Tensor| -> Result<Tensor> {
            // [R] -> [B]: the weighted sum over each sample's enumerated rows, averaged
            // over the samples of each example.
            let t = lift(t, rows)?;
            match &weight {
                None => t.reshape((b, samples))?.mean(1),
                Some(w) => (t * w)?.reshape((b, rows / b))?.sum(1)? / samples as f64,
            }
        };

        for rec in &score.records {
            match rec.var {
                SiteVar::Data(id) => {
                    let lp = rec.dist.log_prob(&rec.value)?;
                    loglik = (loglik + &lp)?;
                    let name = format!("log p({})", self.program.data[id].name);
                    accumulate(&mut terms, name, per_example(&lp)?.mean_all()?)?;
                }
                SiteVar::Latent(id) => {
                    let def = &self.program.latents[id];
                    let Some(q) = guide_record(rec.var, rec.step) else {
                        bail!("internal error: `{}` was not drawn by the guide", def.name)
                    };
                    let analytic = !s.iwae
                        && !q.enumerated
                        && self
                            .plan
                            .kl_of(&KlSubject::Latent(id))
                            .is_some_and(|k| k.method == KlMethod::Analytic);
                    // A guide record may have fewer rows than the score (drawn before an
                    // enumerated site): lift it to the score's rows.
                    let term = match (analytic, def.global) {
                        (true, true) => kl(&q.dist, &rec.dist)?,
                        (true, false) => kl(&q.dist.lift_rows(rows)?, &rec.dist)?,
                        (false, true) => {
                            (q.dist.log_prob(&q.value)? - rec.dist.log_prob(&rec.value)?)?
                        }
                        (false, false) => {
                            (lift(&q.dist.log_prob(&q.value)?, rows)?
                                - rec.dist.log_prob(&rec.value)?)?
                        }
                    };
                    let name = format!("KL({})", def.name);
                    if def.global {
                        // One copy for the dataset: its KL is shared by all examples.
                        let t = term.sum_all()?;
                        global_kl = (global_kl + &t)?;
                        accumulate(&mut terms, name, (t / s.dataset_size.max(1) as f64)?)?;
                    } else {
                        local_kl = (local_kl + &term)?;
                        let pe = per_example(&term)?;
                        accumulate(&mut terms, name.clone(), pe.mean_all()?)?;
                        match kl_by_latent.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, acc)) => *acc = (acc.clone() + pe)?,
                            None => kl_by_latent.push((name, pe)),
                        }
                    }
                }
            }
        }
        for (id, def) in self.program.nets.iter().enumerate() {
            if let Some(w) = self.net(id)?.weight_kl()? {
                global_kl = (global_kl + &w)?;
                let name = format!("KL(weights of {})", def.name);
                accumulate(&mut terms, name, (w / s.dataset_size.max(1) as f64)?)?;
            }
        }

        let n = s.dataset_size.max(1) as f64;
        let global_share = (global_kl / n)?;
        let loglik_pe = per_example(&loglik)?;
        let bound = if s.iwae {
            // log (1/K) sum_k w_k, with log w = log p(x, z) - log q(z); enumerated values
            // are summed, not sampled: their log q is added back.
            let logw = match &guide.log_weight {
                None => (&loglik - &local_kl)?,
                Some(lw) => ((&loglik - &local_kl)? + lift(lw, rows)?)?,
            };
            let logw = logw.reshape((b, rows / b))?;
            let max = logw.max_keepdim(1)?;
            let lse = ((logw.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max)?
                - (samples as f64).ln())?;
            lse.squeeze(1)?
        } else {
            (&loglik_pe - per_example(&local_kl)?)?
        };
        let bound = bound.broadcast_sub(&global_share)?;

        let loss = if s.train && !s.iwae {
            let mut kl_total = Tensor::new(0f32, dev)?;
            for (_, pe) in &kl_by_latent {
                let m = pe.mean_all()?;
                let m = if s.free_bits > 0.0 {
                    m.maximum(s.free_bits)?
                } else {
                    m
                };
                kl_total = (kl_total + m)?;
            }
            let kl_part = ((kl_total + &global_share)? * s.kl_weight)?;
            (kl_part - loglik_pe.mean_all()?)?
        } else {
            bound.mean_all()?.neg()?
        };
        Ok(Outcome {
            loss,
            bound,
            loglik: loglik_pe,
            terms,
        })
    }

    /// Ancestral samples from the model: `n` rows. Returns the drawn value of every data
    /// variable (observed data: the distribution's mean where it has one, which is
    /// what an image grid should show), with `given` data taken from `given`.
    pub fn sample_prior(
        &self,
        n: usize,
        given: &[Option<Tensor>],
        rng: &mut Rng,
    ) -> Result<Vec<(usize, Tensor)>> {
        let mut frame = Frame::new(
            self,
            Pass::Prior,
            self.program.model.locals.len(),
            self.program.model.loops.len(),
            n,
            n,
            false,
            given,
        );
        frame.run(&self.program.model.stmts, rng)?;
        let mut out: Vec<(usize, Tensor)> = Vec::new();
        for rec in &frame.records {
            if let SiteVar::Data(id) = rec.var {
                let value = rec
                    .dist
                    .mean()
                    .or_else(|_| Ok::<_, candle_core::Error>(rec.value.clone()))?;
                match rec.step {
                    None => out.push((id, value)),
                    Some(_) => match out.iter_mut().find(|(d, _)| *d == id) {
                        Some((_, acc)) => {
                            *acc = Tensor::cat(&[acc.clone(), value.unsqueeze(1)?], 1)?
                        }
                        None => out.push((id, value.unsqueeze(1)?)),
                    },
                }
            }
        }
        Ok(out)
    }

    /// Posterior means of every per-example latent under the guide, `[B, ...]` each. An
    /// enumerated `Cat(K)` latent gives its probabilities `q(c = k | x)` (a `Binary` one
    /// `q(b = 1 | x)`), and latents drawn given enumerated values are averaged over them
    /// with their weights: `Σ_y q(y|x) E_q[z | x, y]`. Under `guide exact` the
    /// probabilities are the exact posterior's (the responsibilities).
    pub fn posterior_means(&self, batch: &Batch, rng: &mut Rng) -> Result<Vec<(usize, Tensor)>> {
        if self.exact_guide() {
            return Ok(self.exact_linear_gaussian(batch, rng)?.means);
        }
        if let Guide::Exact {
            posterior: crate::ir::ExactPosterior::Enumerate,
            ..
        } = self.program.guide
        {
            return self.exact_discrete_posterior(batch, rng);
        }
        let b = batch.rows;
        let guide = self.guide_pass(batch, b, false, rng)?;
        let rows = guide.sample_rows;
        let weight = match &guide.log_weight {
            Some(lw) => Some(lift(lw, rows)?.exp()?),
            None => None,
        };
        let mut out: Vec<(usize, Tensor)> = Vec::new();
        for rec in &guide.records {
            if let SiteVar::Latent(id) = rec.var {
                if self.program.latents[id].global {
                    continue;
                }
                let mean = rec.dist.mean()?;
                let mean = match &weight {
                    None => mean,
                    Some(w) => weighted_sum_per_example(&mean, w, b)?,
                };
                match rec.step {
                    None => out.push((id, mean)),
                    Some(_) => match out.iter_mut().find(|(d, _)| *d == id) {
                        Some((_, acc)) => {
                            *acc = Tensor::cat(&[acc.clone(), mean.unsqueeze(1)?], 1)?
                        }
                        None => out.push((id, mean.unsqueeze(1)?)),
                    },
                }
            }
        }
        Ok(out)
    }
}

/// `Σ_rows w_r · t_r` per example: `t` is `[R', ...]` (lifted to `w`'s `R` rows), `w` is
/// `[R]` with `R` a multiple of the `b` examples; the result is `[b, ...]`.
pub fn weighted_sum_per_example(t: &Tensor, w: &Tensor, b: usize) -> Result<Tensor> {
    let rows = w.dim(0)?;
    let t = lift(t, rows)?;
    let mut wdims = vec![rows];
    wdims.extend(std::iter::repeat_n(1, t.rank() - 1));
    let prod = t.broadcast_mul(&w.reshape(wdims)?)?;
    let mut dims = vec![b, rows / b.max(1)];
    dims.extend_from_slice(&t.dims()[1..]);
    prod.reshape(dims)?.sum(1)
}

fn accumulate(terms: &mut Vec<Term>, name: String, value: Tensor) -> Result<()> {
    match terms.iter_mut().find(|t| t.name == name) {
        Some(t) => t.value = (t.value.clone() + value)?,
        None => terms.push(Term { name, value }),
    }
    Ok(())
}

/// Shape helper re-exported for the trainer: the tensor shape of one example's value.
pub fn example_shape(ty: &crate::ir::Type) -> Vec<usize> {
    value_shape(ty)
}
