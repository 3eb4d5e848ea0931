//! The one generic objective: run the guide, score its draws and the data under the
//! model, and combine the terms into the ELBO or the IWAE bound, per example. Also the
//! two other passes over a lowered model: ancestral sampling (`vic sample`) and
//! posterior means (`vic encode`).

use super::dist::kl;
use super::eval::{lift, value_shape, Frame, Overrides, Pass};
use super::infer::TermsCx;
use super::{LoweredModel, SiteRecord, Used};
use crate::ir::{walk, Body, ExprKind, Guide, Ref, SiteVar};
use crate::plan::{ExactMethod, Inference, KlMethod, KlSubject};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};

/// Visit every network and param `body` uses (flow networks included).
pub fn visit_refs(body: &Body, f: &mut dyn FnMut(Used)) {
    walk::for_each_expr(body, |e| match &e.kind {
        ExprKind::Ref(Ref::Param(p)) => f(Used::Param(*p)),
        ExprKind::NetCall { net, .. } => f(Used::Net(*net)),
        _ => {}
    });
    walk::for_each_site(body, |site, _| {
        for (net, _, _) in walk::flow_nets(site) {
            f(Used::Net(net));
        }
    });
}

/// One minibatch: data tensors per `DataId` (`None` for unbound variables), with
/// `rows` examples.
pub struct Batch {
    pub data: Vec<Option<Tensor>>,
    pub rows: usize,
    /// Per `DataId`, the `[rows]` mask of a `partial` variable (1 observed, 0 hidden);
    /// `None` or absent: observed.
    pub observed: Vec<Option<Tensor>>,
    /// Per-example weights `[rows]` of the loss, summing to 1 (`None`: uniform). A batch
    /// that mixes labelled and unlabelled examples in other proportions than the
    /// training set weights them so that the loss stays an unbiased estimate of the
    /// per-example objective of the whole set.
    pub weights: Option<Tensor>,
    /// The member distribution every example comes from (`meta`): picks the copy of
    /// each `@per_member` network.
    pub member: Option<usize>,
    /// Per `SetId`, each example's context set `[rows, N, ...]` (`meta`).
    pub sets: Vec<Option<Tensor>>,
}

impl Batch {
    /// A batch with every value observed and uniform weights.
    pub fn new(data: Vec<Option<Tensor>>, rows: usize) -> Batch {
        Batch {
            data,
            rows,
            observed: Vec::new(),
            weights: None,
            member: None,
            sets: Vec::new(),
        }
    }
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
    /// In training, each estimator's target for its own state (a `@reinforce`
    /// baseline's: the mean objective its rows saw), for [`LoweredModel::after_step`].
    pub estimator_targets: Vec<(SiteVar, f64)>,
}

impl LoweredModel {
    /// The name of an observation's term in metrics: the reconstruction term
    /// E_q log p(x | latents), not the marginal log p(x), so it says what it is
    /// conditioned on (`log p(x | z)`; `log p(y)` in a model without latents).
    pub fn loglik_term(&self, name: &str) -> String {
        let given: Vec<&str> = self
            .program
            .latents
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        if given.is_empty() {
            format!("log p({name})")
        } else {
            format!("log p({name} | {})", given.join(", "))
        }
    }

    pub(crate) fn guide_pass<'a>(
        &'a self,
        batch: &'a Batch,
        sample_rows: usize,
        train: bool,
        overrides: &Overrides,
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
        frame.observed = batch.observed.clone();
        frame.overrides = overrides.clone();
        frame.member = batch.member;
        frame.sets = &batch.sets;
        match &self.program.guide {
            Guide::Amortized(g) => {
                // What the model pass adopts stays; the rest only if something reads it.
                let keep: Vec<_> = self.plan.shared.iter().map(|s| s.guide).collect();
                frame.skip_dead_lets(&g.stmts, &keep);
                frame.run(&g.stmts, rng)?
            }
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
        let exact = self.exact_gaussian(batch, rng)?;
        let mean = exact.log_px.mean_all()?;
        Ok(Outcome {
            loss: mean.neg()?,
            bound: exact.log_px.clone(),
            loglik: exact.log_px,
            terms: vec![Term {
                name: "log p(x)".into(),
                value: mean,
            }],
            estimator_targets: Vec::new(),
        })
    }

    /// Evaluate the objective on a batch: [`LoweredModel::objective_with`] with no
    /// substitutions.
    pub fn objective(&self, batch: &Batch, s: &Settings, rng: &mut Rng) -> Result<Outcome> {
        self.objective_with(batch, s, &Overrides::default(), rng)
    }

    /// The objective of a batch with the guide sites of `overrides` given those
    /// distribution parameters instead of their own (the bound that semi-amortized
    /// refinement optimizes).
    ///
    /// Under `guide exact` the bound is the exact log p(x). Otherwise the guide runs, each
    /// site drawn by its estimator, then the model scores the draws and the data. With
    /// enumerated guide sites (see `eval`'s module documentation) the rows of one example
    /// are `samples x E` (E: the enumerated joint values) and each row carries the weight
    /// `w = exp(log_weight)` (the `q` of its enumerated values). Every per-row term
    /// becomes a per-example value `(1/S) Σ_rows w · term`: the ELBO is
    /// `(1/S) Σ_s Σ_y q(y|x) [log p(x, y, z_sy) - log q(y|x) - log q(z_sy|x, y)]`, the
    /// enumerated site's KL exact, and gradients flow through `q`'s probabilities in `w`.
    /// The IWAE bound is `log (1/S) Σ_s Σ_y exp(log p(x, y, z_sy) - log q(z_sy|x, y))`
    /// (the inner sum estimates `p(x)` without bias). Each KL is analytic where the plan
    /// says so (never inside an IWAE bound, which needs every sample's log-weight).
    pub fn objective_with(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        rng: &mut Rng,
    ) -> Result<Outcome> {
        // `@refine` sites take their refinement steps first (`refine`), each step one
        // call of the bound below.
        let refined: Vec<_> = self
            .refined_sites()
            .into_iter()
            .filter(|(v, _)| overrides.get(*v, None).is_none())
            .collect();
        if !refined.is_empty() {
            return self.refined_objective(batch, s, overrides, &refined, rng);
        }
        self.bound_with(batch, s, overrides, rng)
    }

    /// The bound of a batch with the substitutions of `overrides`: one pass of the guide
    /// and one of the model (see [`LoweredModel::objective_with`]).
    pub fn bound_with(
        &self,
        batch: &Batch,
        s: &Settings,
        overrides: &Overrides,
        rng: &mut Rng,
    ) -> Result<Outcome> {
        match self.plan.inference {
            Inference::Exact(ExactMethod::Enumerate) => {
                return self.exact_discrete_objective(batch, s, rng)
            }
            Inference::Exact(ExactMethod::LinearGaussian | ExactMethod::Kalman) => {
                return self.exact_objective(batch, rng)
            }
            Inference::Exact(m) => {
                bail!(
                    "`guide exact` by {} is not lowered by this release",
                    m.describe()
                )
            }
            Inference::Amortized | Inference::None => {}
        }
        let b = batch.rows;
        let samples = s.samples.max(1);
        let guide = self.guide_pass(batch, b * samples, s.train, overrides, rng)?;
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
        score.member = batch.member;
        score.sets = &batch.sets;
        score.latents = guide.latents.clone();
        score.latent_steps = guide.latent_steps.clone();
        // `partial` data: observed values where known, the guide's draws elsewhere.
        score.drawn_data = guide.drawn_data.clone();
        score.drawn_steps = guide.drawn_steps.clone();
        score.adopt(&guide, &self.plan.shared);
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
        // The plan's KL method of a subject is analytic (and the bound allows it).
        let analytic = |subject: KlSubject| {
            !s.iwae
                && self
                    .plan
                    .kl_of(&subject)
                    .is_some_and(|k| k.method == KlMethod::Analytic)
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
        // The loss's mean over examples: weighted when the batch says so.
        let average = |pe: &Tensor| -> Result<Tensor> {
            match &batch.weights {
                Some(w) => (pe * w)?.sum_all(),
                None => pe.mean_all(),
            }
        };
        // The supervised term of `partial` data: sum over labelled examples of
        // -log q(value | ...) per variable, and how many labelled examples there were.
        let mut supervised: Vec<(String, Tensor, f64)> = Vec::new();

        let loglik_name = |name: &str| self.loglik_term(name);
        for rec in &score.records {
            match rec.var {
                SiteVar::Data(id) => {
                    let lp = rec.dist.log_prob(&rec.value)?;
                    let name = &self.program.data[id].name;
                    let Some(q) = guide_record(rec.var, rec.step) else {
                        loglik = (loglik + &lp)?;
                        accumulate(&mut terms, loglik_name(name), per_example(&lp)?.mean_all()?)?;
                        continue;
                    };
                    // A `partial` variable: data where observed (mask 1), a latent drawn
                    // by the guide where hidden (mask 0).
                    let seen = match guide.observed_mask(id, rows)? {
                        Some(m) => m,
                        None => Tensor::ones(rows, candle_core::DType::F32, dev)?,
                    };
                    let hidden = seen.affine(-1.0, 1.0)?;
                    let lp_seen = (&lp * &seen)?;
                    loglik = (loglik + &lp_seen)?;
                    accumulate(
                        &mut terms,
                        loglik_name(name),
                        per_example(&lp_seen)?.mean_all()?,
                    )?;
                    // Hidden rows: log p(y) - log q(y) in the bound, as for a latent.
                    let log_q = lift(&q.log_q()?, rows)?;
                    let term = if analytic(KlSubject::Partial(id)) && !q.enumerated {
                        kl(&q.dist.lift_rows(rows)?, &rec.dist)?
                    } else {
                        (&log_q - &lp)?
                    };
                    let term = (term * &hidden)?;
                    local_kl = (local_kl + &term)?;
                    let kl_name = format!("KL({name})");
                    let pe = per_example(&term)?;
                    accumulate(&mut terms, kl_name.clone(), pe.mean_all()?)?;
                    add_by_key(&mut kl_by_latent, kl_name, pe)?;
                    // Observed rows: -log q(y | ...), the classifier's supervised term.
                    let nll = per_example(&(log_q.neg()? * &seen)?)?;
                    let count = per_example(&seen)?.sum_all()?.to_scalar::<f32>()? as f64;
                    supervised.push((name.clone(), nll.sum_all()?, count));
                }
                SiteVar::Latent(id) => {
                    let def = &self.program.latents[id];
                    let Some(q) = guide_record(rec.var, rec.step) else {
                        bail!("internal error: `{}` was not drawn by the guide", def.name)
                    };
                    // A guide record may have fewer rows than the score (drawn before an
                    // enumerated site): lift it to the score's rows.
                    let term = match (analytic(KlSubject::Latent(id)), def.global) {
                        (true, true) => kl(&q.dist, &rec.dist)?,
                        (true, false) => kl(&q.dist.lift_rows(rows)?, &rec.dist)?,
                        (false, true) => (q.log_q()? - rec.dist.log_prob(&rec.value)?)?,
                        (false, false) => {
                            (lift(&q.log_q()?, rows)? - rec.dist.log_prob(&rec.value)?)?
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
                        add_by_key(&mut kl_by_latent, name, pe)?;
                    }
                }
            }
        }
        // What estimators add once per dataset (a random function's GP posterior).
        for (var, est) in &self.estimators {
            if let Some(k) = est.dataset_kl()? {
                global_kl = (global_kl + &k)?;
                let name = format!("KL(GP of {})", super::infer::var_name(&self.program, *var));
                accumulate(&mut terms, name, (k / s.dataset_size.max(1) as f64)?)?;
            }
        }
        for (id, def) in self.program.nets.iter().enumerate() {
            if let Some(w) = self.net_copies(id)?.weight_kl()? {
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

        let mut loss = if s.train && !s.iwae {
            let mut kl_total = Tensor::new(0f32, dev)?;
            for (_, pe) in &kl_by_latent {
                let m = average(pe)?;
                let m = if s.free_bits > 0.0 {
                    m.maximum(s.free_bits)?
                } else {
                    m
                };
                kl_total = (kl_total + m)?;
            }
            let kl_part = ((kl_total + &global_share)? * s.kl_weight)?;
            (kl_part - average(&loglik_pe)?)?
        } else {
            average(&bound)?.neg()?
        };

        // Kingma et al.'s M2 adds alpha * N * E_labelled[-log q(y | x)] to the dataset's
        // summed objective; per example (our loss is a mean over the N examples) that is
        // alpha times the mean of -log q over the labelled examples of the batch.
        for (name, nll_sum, count) in &supervised {
            if *count <= 0.0 {
                continue;
            }
            let mean = (nll_sum / *count)?;
            if s.train {
                loss = (loss + (&mean * self.program.train.supervised_weight)?)?;
            }
            accumulate(&mut terms, format!("-log q({name}) labelled"), mean)?;
        }

        // The estimators' own terms (the score-function surrogate of `@reinforce`), in
        // training: each reads the rows' objective and their share of the loss.
        let mut estimator_targets = Vec::new();
        if s.train && self.estimators.iter().any(|(_, e)| e.has_surrogate()) {
            // Each row's objective, detached: the bound's integrand with the loss's KL
            // weight (the IWAE bound itself, lifted, under an IWAE objective).
            let f = if s.iwae {
                lift(&bound, rows)?
            } else {
                (&loglik - (&local_kl * s.kl_weight)?)?
            }
            .detach();
            // Each row's share of the loss's mean over examples: the example's weight, over
            // its samples, times the q of the row's enumerated values (detached: the
            // enumeration's own gradient is already in the pathwise terms).
            let row_weight = match &batch.weights {
                Some(w) => (lift(w, rows)? / samples as f64)?,
                None => Tensor::ones(rows, candle_core::DType::F32, dev)?
                    .affine(1.0 / b as f64 / samples as f64, 0.0)?,
            };
            let row_weight = match &weight {
                Some(w) => (row_weight * w.detach())?,
                None => row_weight,
            };
            for (var, est) in &self.estimators {
                if !est.has_surrogate() {
                    continue;
                }
                let Some(record) = guide.records.iter().find(|r| r.var == *var) else {
                    continue;
                };
                let mut w = row_weight.clone();
                if let SiteVar::Data(id) = var {
                    // Only hidden rows draw a `partial` variable.
                    if let Some(m) = guide.observed_mask(*id, rows)? {
                        w = (w * m.affine(-1.0, 1.0)?)?;
                    }
                }
                let cx = TermsCx {
                    record,
                    objective: &f,
                    row_weight: &w,
                };
                if let Some(extra) = est.extra_term(&cx)? {
                    loss = (loss + extra.loss)?;
                    if let Some(t) = extra.target {
                        estimator_targets.push((*var, t));
                    }
                }
            }
        }
        Ok(Outcome {
            loss,
            bound,
            loglik: loglik_pe,
            terms,
            estimator_targets,
        })
    }

    /// A frame for a draw from the model under the conditions of `cond` (see
    /// [`LoweredModel::sample_prior`]).
    fn prior_frame<'a>(&'a self, cond: &'a Batch) -> Frame<'a> {
        let mut frame = Frame::new(
            self,
            Pass::Prior,
            self.program.model.locals.len(),
            self.program.model.loops.len(),
            cond.rows,
            cond.rows,
            false,
            &cond.data,
        );
        frame.member = cond.member;
        frame.sets = &cond.sets;
        frame
    }

    /// Ancestral samples from the model: `cond.rows` rows. Returns the drawn value of
    /// every data variable (observed data: the distribution's mean where it has one,
    /// which is what an image grid should show). What the draws are conditioned on is a
    /// batch: its data holds the `given` variables, its member picks `@per_member`
    /// copies, and its sets are the context sets the model reads (one-shot exemplars).
    pub fn sample_prior(&self, cond: &Batch, rng: &mut Rng) -> Result<Vec<(usize, Tensor)>> {
        let mut frame = self.prior_frame(cond);
        frame.run(&self.program.model.stmts, rng)?;
        let mut out: Vec<(usize, Tensor)> = Vec::new();
        for rec in &frame.records {
            if let SiteVar::Data(id) = rec.var {
                let value = rec
                    .dist
                    .mean()
                    .or_else(|_| Ok::<_, candle_core::Error>(rec.value.clone()))?;
                push_by_step(&mut out, id, rec.step, value)?;
            }
        }
        Ok(out)
    }

    /// Ancestral samples as they build up, for models whose observation reads a sequence
    /// at a fixed step (DRAW's `x ~ Bernoulli(logits = c[T])`): the observation's mean
    /// with that sequence read at each step `t = 1..T` instead, stacked as
    /// `[n, T, ...value]` (the canvas after every step). `None` when no observation of
    /// `model` reads a sequence at a fixed step.
    pub fn sample_steps(&self, cond: &Batch, rng: &mut Rng) -> Result<Option<(usize, Tensor)>> {
        // The first top-level observation whose distribution reads `seq[K]`, K fixed.
        let mut found = None;
        for st in &self.program.model.stmts {
            let crate::ir::Stmt::Sample(site) = st else {
                continue;
            };
            let SiteVar::Data(id) = site.var else {
                continue;
            };
            for e in walk::site_exprs(site, &walk::Scope::of(&self.program.model)) {
                walk::for_each_subexpr(e, &mut |x| {
                    if let ExprKind::Step { base, step } = &x.kind {
                        if let (ExprKind::Ref(Ref::Local(l)), None) = (&base.kind, step.loop_id) {
                            found = found.or(Some((site, id, *l)));
                        }
                    }
                });
            }
            if found.is_some() {
                break;
            }
        }
        let Some((site, id, local)) = found else {
            return Ok(None);
        };
        let Some(steps) = self.program.model.locals.get(local).and_then(|l| l.steps) else {
            return Ok(None);
        };
        let n = cond.rows;
        let mut frame = self.prior_frame(cond);
        frame.run(&self.program.model.stmts, rng)?;
        let mut out = Vec::with_capacity(steps);
        for t in 1..=steps {
            let mut dist = site.dist.clone();
            let mut restep = |x: &mut crate::ir::Expr| {
                if let ExprKind::Step { base, step } = &mut x.kind {
                    if matches!(base.kind, ExprKind::Ref(Ref::Local(l)) if l == local)
                        && step.loop_id.is_none()
                    {
                        step.offset = t as i64;
                    }
                }
            };
            for (_, e) in &mut dist.args {
                walk::rewrite(e, &mut restep);
            }
            let d = frame.dist_of(&dist, &site.ty, n, rng)?;
            out.push(d.mean()?.unsqueeze(1)?);
        }
        Ok(Some((id, Tensor::cat(&out, 1)?)))
    }

    /// The model's class probabilities `p(y | given data)` `[B, K]` of every observed
    /// `Cat(K)` variable of a model with no latents (a classifier), in evaluation mode,
    /// `vdrop` weights of log α above `prune` set to 0 when given. Empty for a model with
    /// latents (its labels' prediction would need them marginalized).
    pub fn class_probs(
        &self,
        batch: &Batch,
        prune: Option<f64>,
        rng: &mut Rng,
    ) -> Result<Vec<(usize, Tensor)>> {
        if !self.program.latents.is_empty() {
            return Ok(Vec::new());
        }
        let mut frame = Frame::new(
            self,
            Pass::Score,
            self.program.model.locals.len(),
            self.program.model.loops.len(),
            batch.rows,
            batch.rows,
            false,
            &batch.data,
        );
        frame.member = batch.member;
        frame.prune = prune;
        frame.run(&self.program.model.stmts, rng)?;
        let mut out = Vec::new();
        for rec in &frame.records {
            if let (SiteVar::Data(id), None) = (rec.var, rec.step) {
                let def = &self.program.data[id];
                let categorical = rec.dist.kind() == crate::ir::DistKind::Categorical;
                if categorical
                    && def.ty.shape.is_empty()
                    && def.role == crate::ir::DataRole::Observed
                    && matches!(def.ty.domain, crate::ir::Domain::Cat(_))
                {
                    out.push((id, rec.dist.mean()?));
                }
            }
        }
        Ok(out)
    }

    /// The guide's class probabilities `q(y | ...)` `[B, K]` of every `partial` `Cat(K)`
    /// variable sampled by the guide. The batch's own values of these variables are
    /// replaced by class 0 first, so no label can reach the guide.
    pub fn partial_probs(&self, batch: &Batch, rng: &mut Rng) -> Result<Vec<(usize, Tensor)>> {
        use crate::ir::{DataRole, Domain};
        let mut data = batch.data.clone();
        let mut ids = Vec::new();
        for (id, def) in self.program.data.iter().enumerate() {
            if def.role != DataRole::Partial || !def.ty.shape.is_empty() {
                continue;
            }
            if let (Domain::Cat(_), Some(Some(t))) = (def.ty.domain, data.get_mut(id)) {
                let k = t.dim(candle_core::D::Minus1)?;
                let mut first = vec![0f32; k];
                first[0] = 1.0;
                *t = Tensor::new(first, t.device())?
                    .broadcast_as(t.dims())?
                    .contiguous()?;
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hidden = Batch {
            data,
            rows: batch.rows,
            observed: Vec::new(),
            weights: None,
            member: batch.member,
            sets: batch.sets.clone(),
        };
        let guide = self.guide_pass(&hidden, hidden.rows, false, &Overrides::default(), rng)?;
        let weight = match &guide.log_weight {
            Some(lw) => Some(lw.exp()?),
            None => None,
        };
        let mut out = Vec::new();
        for rec in &guide.records {
            if let SiteVar::Data(id) = rec.var {
                if ids.contains(&id) && rec.step.is_none() {
                    let probs = rec.dist.mean()?;
                    // Drawn after an enumerated latent: averaged over its values.
                    let probs = match &weight {
                        Some(w) if probs.dim(0)? != batch.rows => {
                            weighted_sum_per_example(&probs, w, batch.rows)?
                        }
                        _ => probs,
                    };
                    out.push((id, probs));
                }
            }
        }
        Ok(out)
    }

    /// Per example, the uncertainty the guide's estimators report about their sites (a
    /// random function's predictive variance, averaged over its outputs; summed over such
    /// sites), `[B]`, in evaluation mode; `None` when no estimator reports one.
    pub fn guide_uncertainty(&self, batch: &Batch, rng: &mut Rng) -> Result<Option<Tensor>> {
        if !matches!(self.plan.inference, Inference::Amortized) {
            return Ok(None);
        }
        let guide = self.guide_pass(batch, batch.rows, false, &Overrides::default(), rng)?;
        let mut total: Option<Tensor> = None;
        for u in guide.records.iter().filter_map(|r| r.uncertainty.as_ref()) {
            total = Some(match total {
                Some(t) => (t + u)?,
                None => u.clone(),
            });
        }
        Ok(total)
    }

    /// Posterior means of every per-example latent under the guide, `[B, ...]` each. An
    /// enumerated `Cat(K)` latent gives its probabilities `q(c = k | x)` (a `Binary` one
    /// `q(b = 1 | x)`), and latents drawn given enumerated values are averaged over them
    /// with their weights: `Σ_y q(y|x) E_q[z | x, y]`. Under `guide exact` the
    /// probabilities are the exact posterior's (the responsibilities).
    pub fn posterior_means(&self, batch: &Batch, rng: &mut Rng) -> Result<Vec<(usize, Tensor)>> {
        match self.plan.inference {
            Inference::Exact(ExactMethod::LinearGaussian | ExactMethod::Kalman) => {
                return Ok(self.exact_gaussian(batch, rng)?.means)
            }
            Inference::Exact(ExactMethod::Enumerate) => {
                return self.exact_discrete_posterior(batch, rng)
            }
            Inference::Exact(m) => {
                bail!(
                    "`guide exact` by {} is not lowered by this release",
                    m.describe()
                )
            }
            Inference::Amortized | Inference::None => {}
        }
        let b = batch.rows;
        // A flowed site's mean has no closed form: average FLOW_MEAN_SAMPLES draws.
        let flowed = self.plan.sites.iter().any(|s| !s.flows.is_empty());
        let samples = if flowed { FLOW_MEAN_SAMPLES } else { 1 };
        let guide = self.guide_pass(batch, b * samples, false, &Overrides::default(), rng)?;
        let rows = guide.sample_rows;
        // Each row's weight in its example's mean: its enumerated values' q, over samples.
        let weight = match &guide.log_weight {
            Some(lw) => Some((lift(lw, rows)?.exp()? / samples as f64)?),
            None if samples > 1 => Some(Tensor::full(1.0 / samples as f32, rows, self.device())?),
            None => None,
        };
        let mut out: Vec<(usize, Tensor)> = Vec::new();
        for rec in &guide.records {
            if let SiteVar::Latent(id) = rec.var {
                if self.program.latents[id].global {
                    continue;
                }
                let mean = if rec.log_q.is_some() {
                    rec.value.clone()
                } else {
                    rec.dist.mean()?
                };
                let mean = match &weight {
                    None => mean,
                    Some(w) => weighted_sum_per_example(&mean, w, b)?,
                };
                push_by_step(&mut out, id, rec.step, mean)?;
            }
        }
        Ok(out)
    }
}

/// Draws averaged for the posterior mean of a site with flows (`vic encode`).
pub const FLOW_MEAN_SAMPLES: usize = 64;

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

/// Adds one site's value to `out`: an unstepped site's value as it is, a stepped site's
/// values stacked along a new axis 1 in the order of its steps.
pub(super) fn push_by_step(
    out: &mut Vec<(usize, Tensor)>,
    id: usize,
    step: Option<i64>,
    value: Tensor,
) -> Result<()> {
    match step {
        None => out.push((id, value)),
        Some(_) => match out.iter_mut().find(|(d, _)| *d == id) {
            Some((_, acc)) => *acc = Tensor::cat(&[acc.clone(), value.unsqueeze(1)?], 1)?,
            None => out.push((id, value.unsqueeze(1)?)),
        },
    }
    Ok(())
}

/// Adds `value` to the entry of `out` keyed `key`, or appends it as a new entry.
pub(super) fn add_by_key<K: PartialEq>(
    out: &mut Vec<(K, Tensor)>,
    key: K,
    value: Tensor,
) -> Result<()> {
    match out.iter_mut().find(|(k, _)| *k == key) {
        Some((_, acc)) => *acc = (acc.clone() + value)?,
        None => out.push((key, value)),
    }
    Ok(())
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
