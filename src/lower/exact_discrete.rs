//! `guide exact` over finite discrete latents (`ExactPosterior::Enumerate`): no guide
//! networks. The model runs once as [`Pass::Joint`], which enumerates every latent over
//! its support (rows multiply as `eval`'s module documentation says, so the rows of one
//! example list the joint support, in the order the latents are drawn) and scores the
//! data on each row. Then, per example,
//!
//! - `log p(x) = logsumexp_rows log p(x, c)`: the bound, exact (the ELBO and the IWAE
//!   bound both equal it), whose gradient trains the model's `param`s and networks;
//! - the posterior `p(c | x) = exp(log p(x, c) - log p(x))` over the rows, which weighs
//!   the reported terms: `log p(x_i)` terms are `E_post log p(x | c)` and the KL term
//!   (named after every enumerated latent, `KL(c)` or `KL(c, d)`) is
//!   `KL(p(c | x) || p(c)) = E_post log p(x | c) - log p(x)`;
//! - posterior means: `Σ_c p(c | x) c`, i.e. a `Cat(K)` latent's responsibilities.

use super::eval::{lift, Frame, Pass};
use super::objective::{
    add_by_key, push_by_step, weighted_sum_per_example, Batch, Outcome, Settings, Term,
};
use super::LoweredModel;
use crate::ir::SiteVar;
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};

/// The joint pass and its per-row log-densities.
struct Joint<'a> {
    frame: Frame<'a>,
    /// Rows: examples x joint support.
    rows: usize,
    /// `log p(x, c)` per row `[R]`.
    log_joint: Tensor,
    /// `log p(x_i | c)` per data variable, per row `[R]`.
    data: Vec<(usize, Tensor)>,
}

impl LoweredModel {
    fn joint_pass<'a>(&'a self, batch: &'a Batch, train: bool, rng: &mut Rng) -> Result<Joint<'a>> {
        let b = batch.rows;
        let mut frame = Frame::new(
            self,
            Pass::Joint,
            self.program.model.locals.len(),
            self.program.model.loops.len(),
            b,
            b,
            train,
            &batch.data,
        );
        frame.run(&self.program.model.stmts, rng)?;
        let rows = frame.sample_rows;
        let mut log_joint = Tensor::zeros(rows, candle_core::DType::F32, self.device())?;
        let mut data: Vec<(usize, Tensor)> = Vec::new();
        for rec in &frame.records {
            let lp = lift(&rec.dist.log_prob(&rec.value)?, rows)?;
            log_joint = (log_joint + &lp)?;
            match rec.var {
                SiteVar::Data(id) => add_by_key(&mut data, id, lp)?,
                SiteVar::Latent(id) if !rec.enumerated => bail!(
                    "internal error: `guide exact` did not enumerate `{}`",
                    self.program.latents[id].name
                ),
                SiteVar::Latent(_) => {}
            }
        }
        Ok(Joint {
            frame,
            rows,
            log_joint,
            data,
        })
    }

    /// The exact objective of `guide exact` over finite discrete latents (see the module
    /// documentation). `s.samples` and `s.iwae` do not matter: the bound is exact.
    pub(super) fn exact_discrete_objective(
        &self,
        batch: &Batch,
        s: &Settings,
        rng: &mut Rng,
    ) -> Result<Outcome> {
        let b = batch.rows;
        let joint = self.joint_pass(batch, s.train, rng)?;
        let per = joint.rows / b.max(1);
        let lj = joint.log_joint.reshape((b, per))?;
        let max = lj.max_keepdim(1)?;
        let log_px = (lj.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + &max)?;
        // p(c | x) per row, [R].
        let post = lj.broadcast_sub(&log_px)?.exp()?.reshape(joint.rows)?;
        let log_px = log_px.squeeze(1)?;

        let mut terms = Vec::new();
        let mut loglik = Tensor::zeros(b, candle_core::DType::F32, self.device())?;
        for (id, lp) in &joint.data {
            let pe = weighted_sum_per_example(lp, &post, b)?;
            loglik = (loglik + &pe)?;
            terms.push(Term {
                // E_posterior log p(x | latents): the reconstruction term.
                name: self.loglik_term(&self.program.data[*id].name),
                value: pe.mean_all()?,
            });
        }
        let mut names: Vec<&str> = Vec::new();
        for rec in &joint.frame.records {
            if let SiteVar::Latent(id) = rec.var {
                let n = self.program.latents[id].name.as_str();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        if !names.is_empty() {
            terms.push(Term {
                name: format!("KL({})", names.join(", ")),
                value: (&loglik - &log_px)?.mean_all()?,
            });
        }
        Ok(Outcome {
            loss: log_px.mean_all()?.neg()?,
            bound: log_px,
            loglik,
            terms,
            estimator_targets: Vec::new(),
        })
    }

    /// Posterior means under `guide exact` over finite discrete latents: per latent,
    /// `Σ_c p(c | x) · value` (`[B, ...]`; a `Cat(K)` latent's responsibilities).
    pub(super) fn exact_discrete_posterior(
        &self,
        batch: &Batch,
        rng: &mut Rng,
    ) -> Result<Vec<(usize, Tensor)>> {
        let b = batch.rows;
        let joint = self.joint_pass(batch, false, rng)?;
        let per = joint.rows / b.max(1);
        let lj = joint.log_joint.reshape((b, per))?;
        let max = lj.max_keepdim(1)?;
        let log_px = (lj.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + &max)?;
        let post = lj.broadcast_sub(&log_px)?.exp()?.reshape(joint.rows)?;
        let mut out: Vec<(usize, Tensor)> = Vec::new();
        for rec in &joint.frame.records {
            if let SiteVar::Latent(id) = rec.var {
                let mean = weighted_sum_per_example(&rec.value, &post, b)?;
                push_by_step(&mut out, id, rec.step, mean)?;
            }
        }
        Ok(out)
    }
}
