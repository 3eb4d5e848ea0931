//! Analytic KL(q || p) for exactly the pairs of [`has_analytic_kl`]: the same family on
//! both sides. Formulas as in torch.distributions.kl, written in logits / log space where
//! that keeps them finite.

use super::special::{digamma, full_like, lgamma, sum_after_rows};
use super::{dist_error, log_beta, DistValue};
use crate::ir::{has_analytic_kl, DistKind, DistParam};
use candle_core::{Result, Tensor, D};

/// KL(q || p) summed over the event axes: `[R]`. Either side may have one row and
/// broadcast against the other (a `Normal(0, 1)` prior built from scalars has one row).
/// Uniform gives `+inf` where q's support is not inside p's. An error for a pair without
/// a closed form, or for event shapes that differ.
pub fn kl(q: &DistValue, p: &DistValue) -> Result<Tensor> {
    if !has_analytic_kl(q.kind, p.kind) {
        return dist_error(format!(
            "no analytic KL between a {} guide and a {} model; use a Monte Carlo estimate",
            q.kind.name(),
            p.kind.name()
        ));
    }
    if q.value_shape()[1..] != p.value_shape()[1..] {
        return dist_error(format!(
            "KL between {} distributions of different shapes: {:?} and {:?}",
            q.kind.name(),
            &q.value_shape()[1..],
            &p.value_shape()[1..]
        ));
    }
    let rows = q.rows.max(p.rows);
    let (q, p) = (q.with_rows(rows)?, p.with_rows(rows)?);
    let p = DistValue {
        params: p
            .params
            .iter()
            .map(|(n, t)| Ok((*n, t.to_dtype(q.dtype())?)))
            .collect::<Result<Vec<_>>>()?,
        ..p
    };
    sum_after_rows(&kl_elementwise(&q, &p)?)
}

fn kl_elementwise(q: &DistValue, p: &DistValue) -> Result<Tensor> {
    use DistParam::*;
    match q.kind {
        DistKind::Normal | DistKind::LogNormal => {
            // log(sp/sq) + (sq² + (mq - mp)²) / (2 sp²) - 1/2
            let (mq, sq) = (q.get(Loc)?, q.get(Scale)?);
            let (mp, sp) = (p.get(Loc)?, p.get(Scale)?);
            let var_ratio = (sq / sp)?.sqr()?;
            let t1 = ((mq - mp)? / sp)?.sqr()?;
            ((var_ratio.clone() + t1)? - 1.0)?.affine(0.5, 0.0)?
                - var_ratio.log()?.affine(0.5, 0.0)?
        }
        DistKind::Laplace => {
            // -log(sq/sp) + |mq - mp| / sp + (sq/sp) exp(-|mq - mp| / sq) - 1
            let (mq, sq) = (q.get(Loc)?, q.get(Scale)?);
            let (mp, sp) = (p.get(Loc)?, p.get(Scale)?);
            let ratio = (sq / sp)?;
            let d = (mq - mp)?.abs()?;
            let t3 = (&ratio * (&d / sq)?.neg()?.exp()?)?;
            ((ratio.log()?.neg()? + (&d / sp)?)? + t3)? - 1.0
        }
        DistKind::Exponential => {
            // r - 1 - log r, r = rate_p / rate_q
            let r = (p.get(Rate)? / q.get(Rate)?)?;
            r.affine(1.0, -1.0)? - r.log()?
        }
        DistKind::Gamma => {
            let (aq, bq) = (q.get(Concentration)?, q.get(Rate)?);
            let (ap, bp) = (p.get(Concentration)?, p.get(Rate)?);
            let t1 = (ap * (bq / bp)?.log()?)?;
            let t2 = (lgamma(ap)? - lgamma(aq)?)?;
            let t3 = ((aq - ap)? * digamma(aq)?)?;
            let t4 = ((bp - bq)? * (aq / bq)?)?;
            ((t1 + t2)? + t3)? + t4
        }
        DistKind::Beta => {
            let (aq, bq) = (q.get(A)?, q.get(B)?);
            let (ap, bp) = (p.get(A)?, p.get(B)?);
            let sq = (aq + bq)?;
            let t = (log_beta(ap, bp)? - log_beta(aq, bq)?)?;
            let t = (t + ((aq - ap)? * digamma(aq)?)?)?;
            let t = (t + ((bq - bp)? * digamma(bq)?)?)?;
            let t = (t + (((ap - aq)? + (bp - bq)?)? * digamma(&sq)?)?)?;
            Ok(t)
        }
        DistKind::Bernoulli => {
            // Σ over {1, 0}: exp(log q) (log q - log p), in (log p, log(1-p)) pairs
            let (lq1, lq0) = q.bernoulli_logs()?;
            let (lp1, lp0) = p.bernoulli_logs()?;
            let one = (lq1.exp()? * (&lq1 - lp1)?)?;
            let zero = (lq0.exp()? * (&lq0 - lp0)?)?;
            one + zero
        }
        DistKind::Categorical => {
            let (lq, lp) = (q.log_probs()?, p.log_probs()?);
            (lq.exp()? * (&lq - lp)?)?.sum(D::Minus1)
        }
        DistKind::Poisson => {
            // rq (log rq - log rp) - rq + rp
            let (rq, rp) = (q.get(Rate)?, p.get(Rate)?);
            ((rq * (rq.log()? - rp.log()?)?)? - rq)? + rp
        }
        DistKind::Dirichlet => {
            let (aq, ap) = (q.get(Concentration)?, p.get(Concentration)?);
            let sq = aq.sum_keepdim(D::Minus1)?;
            let sp = ap.sum_keepdim(D::Minus1)?;
            let t1 = (lgamma(&sq)? - lgamma(&sp)?)?.squeeze(D::Minus1)?;
            let t2 = (lgamma(aq)? - lgamma(ap)?)?.sum(D::Minus1)?;
            let t3 = ((aq - ap)? * digamma(aq)?.broadcast_sub(&digamma(&sq)?)?)?.sum(D::Minus1)?;
            (t1 - t2)? + t3
        }
        DistKind::Uniform => {
            // log((hp - lp) / (hq - lq)) where [lq, hq] ⊆ [lp, hp], +inf elsewhere
            let (lq, hq) = (q.get(Low)?, q.get(High)?);
            let (lp, hp) = (p.get(Low)?, p.get(High)?);
            let inside = super::special::and(&lq.ge(lp)?, &hq.le(hp)?)?;
            let v = ((hp - lp)?.log()? - (hq - lq)?.log()?)?;
            inside.where_cond(&v, &full_like(&v, f64::INFINITY)?)
        }
        _ => dist_error(format!(
            "internal compiler error: no analytic KL for {}; please report this",
            q.kind.name()
        )),
    }
}
