//! The distributions of LANGUAGE.md section 7 as candle computations: log-densities,
//! samplers (reparameterized, detached, relaxed), enumeration, means and analytic KLs.
//!
//! Everything is built from candle tensor ops, so it differentiates and runs on any device;
//! all noise comes from vic's seeded [`Rng`](crate::rng::Rng). Samplers with no
//! reparameterization (Poisson, Gamma, Beta, Dirichlet) draw on the host from the
//! parameter values and return detached tensors.
//!
//! # Shapes
//!
//! A [`DistValue`] is one distribution per row: `rows` R is the rows axis of
//! `lower`'s value conventions, the *event shape* is the variable's shape (its `Type::shape`).
//!
//! - A value is `[R, ...event_shape]`; a `Categorical` value is one-hot (or relaxed) along
//!   a further trailing axis: `[R, ...event_shape, K]` (its event shape is the `Cat(K)`
//!   variable's shape, without `K`); a `Dirichlet`'s event shape is the `Simplex[K]` shape,
//!   `K` included.
//! - Parameters are broadcast to `[R, ...event_shape]` (`Categorical`: `[R, ...shape, K]`).
//!   A rank-0 tensor is a constant for every element. A tensor of rank >= 1 has the rows
//!   axis first, of size R or 1, and its other axes are right-aligned against the event
//!   shape and broadcast: a `[R]` scale for a `Real[D]` variable is one scale per row,
//!   a `[1]` constant is one value for all. R is the largest rows axis among them.
//! - `Mixture(logits = w, component = C)`: `w` is `[R, K]`; the component is a
//!   [`DistValue`] built with event shape `[K, ...event_shape]` (its parameters
//!   `[R, K, ...event_shape]`); [`DistValue::mixture`] builds both in one call.
//! - Log-densities and KLs sum every event axis and return `[R]`. A distribution with one
//!   row broadcasts against a value (or the other side of a KL) with R rows.
//!
//! All parameters take the dtype and device of the first parameter of rank >= 1
//! (f32 in training; the tests also use f64).
//!
//! # API
//!
//! - [`DistValue::new`]`(kind, params, component, event_shape)`, [`DistValue::mixture`];
//!   [`DistValue::with_rows`] broadcasts a one-row distribution to R rows.
//! - [`DistValue::log_prob`]`(value) -> [R]`: Bernoulli takes 0/1 (or relaxed) values and
//!   uses `x l - softplus(l)` with logits, clamped probs otherwise; Categorical takes
//!   one-hot (or relaxed) values and returns `Σ value · log_softmax(logits)`;
//!   ContinuousBernoulli includes its normalizer (series near logit 0); Mixture is
//!   `logsumexp_k(log w_k + log p_k(value))`. Outside the support: `-inf`.
//! - [`DistValue::rsample`]`(rng)`: Normal, LogNormal, Laplace, StudentT, Uniform,
//!   Exponential, ContinuousBernoulli (inverse CDF); an error for the others.
//! - [`DistValue::sample`]`(rng)`: every family, detached.
//! - [`DistValue::relaxed_sample`]`(temperature, rng)`: Gumbel-softmax (Categorical),
//!   binary Concrete (Bernoulli).
//! - [`DistValue::enumerate_support`]: a Categorical of event shape `[]` (K one-hots
//!   `[R, K]`) or a Bernoulli of one element (0 and 1); an error otherwise.
//! - [`DistValue::mean`]; [`kl`]`(q, p) -> [R]` for the pairs of
//!   [`has_analytic_kl`](crate::ir::has_analytic_kl).
//! - [`special`]: `lgamma`, `digamma`, `softplus`, `logsumexp`, ... on tensors.

mod fused;
mod kl;
mod sample;
pub mod special;
#[cfg(test)]
mod tests;

pub use kl::kl;

use super::broadcast_to;
use crate::ir::{DistKind, DistParam};
use candle_core::{DType, Device, Result, Tensor, D};
use special::{
    and, clamp_probs, full_like, lgamma, log_sigmoid, log_softmax_last, logsumexp, sigmoid,
    softplus, sum_after_rows, HALF_LOG_2PI,
};

/// A candle error with vic's wording.
pub(crate) fn dist_error<T>(msg: impl std::fmt::Display) -> Result<T> {
    Err(candle_core::Error::Msg(msg.to_string()).bt())
}

/// One distribution of section 7 per row, with its parameters broadcast to full shape.
#[derive(Clone, Debug)]
pub struct DistValue {
    kind: DistKind,
    /// Each broadcast to [`DistValue::param_shape`] (a `Mixture`'s logits: `[R, K]`).
    params: Vec<(DistParam, Tensor)>,
    /// `Mixture` only: the component, event shape `[K, ...event_shape]`.
    component: Option<Box<DistValue>>,
    rows: usize,
    event_shape: Vec<usize>,
    /// `Categorical`: the number of classes; `Mixture`: the number of components.
    categories: Option<usize>,
}

/// The parameter sets each family accepts (one of them, in any order).
fn signatures(kind: DistKind) -> &'static [&'static [DistParam]] {
    use DistParam::*;
    match kind {
        DistKind::Normal | DistKind::LogNormal | DistKind::Laplace => &[&[Loc, Scale]],
        DistKind::StudentT => &[&[Df, Loc, Scale]],
        DistKind::Uniform => &[&[Low, High]],
        DistKind::Exponential | DistKind::Poisson => &[&[Rate]],
        DistKind::Gamma => &[&[Concentration, Rate]],
        DistKind::Beta => &[&[A, B]],
        DistKind::Bernoulli | DistKind::Categorical | DistKind::ContinuousBernoulli => {
            &[&[Logits], &[Probs]]
        }
        DistKind::Dirichlet => &[&[Concentration]],
        DistKind::Mixture => &[&[Logits]],
    }
}

fn param_name(p: DistParam) -> &'static str {
    match p {
        DistParam::Loc => "loc",
        DistParam::Scale => "scale",
        DistParam::Df => "df",
        DistParam::Low => "low",
        DistParam::High => "high",
        DistParam::Rate => "rate",
        DistParam::Concentration => "concentration",
        DistParam::A => "a",
        DistParam::B => "b",
        DistParam::Probs => "probs",
        DistParam::Logits => "logits",
    }
}

fn shape_str(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Broadcast one parameter to `[rows, ...trailing]` under the module's rule: rank 0 is a
/// constant; otherwise axis 0 is the rows axis and the rest is right-aligned.
fn broadcast_param(
    kind: DistKind,
    name: DistParam,
    t: &Tensor,
    rows: usize,
    trailing: &[usize],
) -> Result<Tensor> {
    let mut full = vec![rows];
    full.extend_from_slice(trailing);
    let bad = || {
        dist_error(format!(
            "{}: parameter `{}` of shape {} does not broadcast to {} (rows first, then the event shape)",
            kind.name(),
            param_name(name),
            shape_str(t.dims()),
            shape_str(&full)
        ))
    };
    if t.rank() == 0 {
        return broadcast_to(t, &full);
    }
    let dims = t.dims();
    let rest = &dims[1..];
    if rest.len() > trailing.len() || (dims[0] != rows && dims[0] != 1) {
        return bad();
    }
    let mut padded = vec![dims[0]];
    padded.extend(std::iter::repeat_n(1, trailing.len() - rest.len()));
    padded.extend_from_slice(rest);
    for (have, want) in padded[1..].iter().zip(trailing) {
        if *have != 1 && have != want {
            return bad();
        }
    }
    if dims == full.as_slice() {
        return Ok(t.clone());
    }
    t.reshape(padded.as_slice())?.broadcast_as(full.as_slice())
}

impl DistValue {
    /// A distribution of family `kind` with the given parameters (named as in the IR),
    /// broadcast as the module documentation says. `component` is required for `Mixture`
    /// and refused otherwise. Errors name the family and the offending parameter.
    pub fn new(
        kind: DistKind,
        params: Vec<(DistParam, Tensor)>,
        component: Option<DistValue>,
        event_shape: &[usize],
    ) -> Result<DistValue> {
        // The parameter set.
        let mut names: Vec<DistParam> = params.iter().map(|(p, _)| *p).collect();
        names.sort_by_key(|p| *p as usize);
        let accepted = signatures(kind).iter().any(|sig| {
            let mut s: Vec<DistParam> = sig.to_vec();
            s.sort_by_key(|p| *p as usize);
            s == names
        });
        if !accepted {
            let want: Vec<String> = signatures(kind)
                .iter()
                .map(|sig| {
                    let n: Vec<&str> = sig.iter().map(|p| param_name(*p)).collect();
                    format!("({})", n.join(", "))
                })
                .collect();
            let got: Vec<&str> = params.iter().map(|(p, _)| param_name(*p)).collect();
            return dist_error(format!(
                "{} takes parameters {}, got ({})",
                kind.name(),
                want.join(" or "),
                got.join(", ")
            ));
        }
        let Some((_, first)) = params
            .iter()
            .find(|(_, t)| t.rank() > 0)
            .or_else(|| params.first())
        else {
            return dist_error(format!("{} needs parameters", kind.name()));
        };
        let (dtype, device) = (first.dtype(), first.device().clone());
        if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return dist_error(format!(
                "{}: parameters must be floating point, got {dtype:?}",
                kind.name()
            ));
        }

        // The component and the trailing (non-row) parameter shape.
        let (component, trailing, categories) = match (kind, component) {
            (DistKind::Mixture, None) => {
                return dist_error("Mixture needs a component distribution");
            }
            (DistKind::Mixture, Some(c)) => {
                if c.kind == DistKind::Mixture {
                    return dist_error("a Mixture's component cannot itself be a Mixture");
                }
                let Some((&k, rest)) = c.event_shape.split_first() else {
                    return dist_error(format!(
                        "Mixture: the component must be built with event shape [K, ...{}], got []",
                        shape_str(event_shape)
                    ));
                };
                if rest != event_shape {
                    return dist_error(format!(
                        "Mixture: the component's event shape {} is not [K, ...{}]",
                        shape_str(&c.event_shape),
                        shape_str(event_shape)
                    ));
                }
                (Some(Box::new(c)), vec![k], Some(k))
            }
            (_, Some(_)) => {
                return dist_error(format!("{} takes no component", kind.name()));
            }
            (DistKind::Categorical, None) => {
                let t = &params[0].1;
                if t.rank() < 2 {
                    return dist_error(format!(
                        "Categorical: `{}` must be [R, ..., K] (rows first, classes last), got {}",
                        param_name(params[0].0),
                        shape_str(t.dims())
                    ));
                }
                let k = t.dims()[t.rank() - 1];
                let mut tr = event_shape.to_vec();
                tr.push(k);
                (None, tr, Some(k))
            }
            (DistKind::Dirichlet, None) => {
                if event_shape.is_empty() {
                    return dist_error(
                        "Dirichlet: the event shape must end in the simplex axis K, got []",
                    );
                }
                (None, event_shape.to_vec(), event_shape.last().copied())
            }
            (_, None) => (None, event_shape.to_vec(), None),
        };

        // Rows: the leading axis of the parameters of rank >= 1 (and the component) that is
        // not 1; `broadcast_param` refuses a second, different one. (0 rows is allowed.)
        let rows = params
            .iter()
            .filter(|(_, t)| t.rank() > 0)
            .map(|(_, t)| t.dims()[0])
            .chain(component.iter().map(|c| c.rows))
            .find(|r| *r != 1)
            .unwrap_or(1);
        let component = match component {
            Some(c) => Some(Box::new(c.with_rows(rows)?)),
            None => None,
        };
        let mut broadcast = Vec::with_capacity(params.len());
        for (name, t) in &params {
            let t = t.to_dtype(dtype)?.to_device(&device)?;
            broadcast.push((*name, broadcast_param(kind, *name, &t, rows, &trailing)?));
        }
        if let Some(c) = &component {
            if c.dtype() != dtype {
                return dist_error(format!(
                    "Mixture: the component's dtype {:?} differs from the logits' {dtype:?}",
                    c.dtype()
                ));
            }
        }
        Ok(DistValue {
            kind,
            params: broadcast,
            component,
            rows,
            event_shape: event_shape.to_vec(),
            categories,
        })
    }

    /// `Mixture(logits, component = component_kind(component_params))`: `logits` `[R, K]`,
    /// component parameters broadcastable to `[R, K, ...event_shape]`.
    pub fn mixture(
        logits: Tensor,
        component_kind: DistKind,
        component_params: Vec<(DistParam, Tensor)>,
        event_shape: &[usize],
    ) -> Result<DistValue> {
        if logits.rank() < 1 {
            return dist_error("Mixture: logits must be [R, K]");
        }
        let k = logits.dims()[logits.rank() - 1];
        let mut comp_event = vec![k];
        comp_event.extend_from_slice(event_shape);
        let component = DistValue::new(component_kind, component_params, None, &comp_event)?;
        DistValue::new(
            DistKind::Mixture,
            vec![(DistParam::Logits, logits)],
            Some(component),
            event_shape,
        )
    }

    pub fn kind(&self) -> DistKind {
        self.kind
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The variable's shape (`Categorical`: without `K`).
    pub fn event_shape(&self) -> &[usize] {
        &self.event_shape
    }

    /// `Categorical`: K classes; `Mixture`: K components; `Dirichlet`: the simplex size.
    pub fn categories(&self) -> Option<usize> {
        self.categories
    }

    /// A parameter, broadcast to full shape.
    pub fn param(&self, name: DistParam) -> Option<&Tensor> {
        self.params.iter().find(|(p, _)| *p == name).map(|(_, t)| t)
    }

    pub fn params(&self) -> &[(DistParam, Tensor)] {
        &self.params
    }

    pub fn component(&self) -> Option<&DistValue> {
        self.component.as_deref()
    }

    pub fn dtype(&self) -> DType {
        self.params
            .first()
            .map(|(_, t)| t.dtype())
            .unwrap_or(DType::F32)
    }

    pub fn device(&self) -> Device {
        self.params
            .first()
            .map(|(_, t)| t.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// The shape of one value: `[R, ...event_shape]`, `Categorical` `[R, ...shape, K]`
    /// (and a `Mixture` of Categoricals likewise).
    pub fn value_shape(&self) -> Vec<usize> {
        let mut s = vec![self.rows];
        s.extend_from_slice(&self.event_shape);
        if let Some(k) = self.one_hot_classes() {
            s.push(k);
        }
        s
    }

    /// The trailing one-hot axis of a value: a Categorical's K, or its Mixture's.
    fn one_hot_classes(&self) -> Option<usize> {
        match (self.kind, &self.component) {
            (DistKind::Categorical, _) => self.categories,
            (DistKind::Mixture, Some(c)) => c.one_hot_classes(),
            _ => None,
        }
    }

    /// A required parameter (present by construction).
    fn get(&self, name: DistParam) -> Result<&Tensor> {
        match self.param(name) {
            Some(t) => Ok(t),
            None => dist_error(format!(
                "internal compiler error: {} lost its parameter `{}`; please report this",
                self.kind.name(),
                param_name(name)
            )),
        }
    }

    fn get_component(&self) -> Result<&DistValue> {
        match self.component.as_deref() {
            Some(c) => Ok(c),
            None => dist_error("internal compiler error: a Mixture lost its component"),
        }
    }

    /// The same distribution with `rows` rows: broadcast from one row, or unchanged.
    pub fn with_rows(&self, rows: usize) -> Result<DistValue> {
        if rows == self.rows {
            return Ok(self.clone());
        }
        if self.rows != 1 {
            return dist_error(format!(
                "{} has {} rows and cannot broadcast to {rows}",
                self.kind.name(),
                self.rows
            ));
        }
        let mut params = Vec::with_capacity(self.params.len());
        for (name, t) in &self.params {
            let mut dims = t.dims().to_vec();
            dims[0] = rows;
            params.push((*name, broadcast_to(t, &dims)?));
        }
        let component = match &self.component {
            Some(c) => Some(Box::new(c.with_rows(rows)?)),
            None => None,
        };
        Ok(DistValue {
            params,
            component,
            rows,
            ..self.clone()
        })
    }

    /// The distribution with each row repeated `rows / self.rows` times in order (row `r`
    /// of the result is row `r / factor` of `self`): the rows layout of
    /// [`lift`](crate::lower::eval::lift), used when enumeration multiplies the rows.
    pub fn lift_rows(&self, rows: usize) -> Result<DistValue> {
        if rows == self.rows {
            return Ok(self.clone());
        }
        if self.rows == 0 || !rows.is_multiple_of(self.rows) {
            return dist_error(format!(
                "{} has {} rows and cannot be lifted to {rows}",
                self.kind.name(),
                self.rows
            ));
        }
        // Every parameter has `self.rows` rows: each is lifted as a value is.
        let mut params = Vec::with_capacity(self.params.len());
        for (name, t) in &self.params {
            params.push((*name, crate::lower::eval::lift(t, rows)?));
        }
        let component = match &self.component {
            Some(c) => Some(Box::new(c.lift_rows(rows)?)),
            None => None,
        };
        Ok(DistValue {
            params,
            component,
            rows,
            ..self.clone()
        })
    }

    /// `(log p, log(1 - p))` of a Bernoulli / the natural parameter of a ContinuousBernoulli:
    /// from logits through `log_sigmoid`, from probs by clamping.
    fn bernoulli_logs(&self) -> Result<(Tensor, Tensor)> {
        if let Some(l) = self.param(DistParam::Logits) {
            Ok((log_sigmoid(l)?, log_sigmoid(&l.neg()?)?))
        } else {
            let p = clamp_probs(self.get(DistParam::Probs)?)?;
            Ok((p.log()?, p.neg()?.affine(1.0, 1.0)?.log()?))
        }
    }

    /// Logits of a Bernoulli / ContinuousBernoulli / Categorical (probs clamped; for
    /// Categorical, normalized log-probabilities).
    fn logits(&self) -> Result<Tensor> {
        match (self.kind, self.param(DistParam::Logits)) {
            (DistKind::Categorical, _) => self.log_probs(),
            (_, Some(l)) => Ok(l.clone()),
            (_, None) => {
                let (lp, lq) = self.bernoulli_logs()?;
                lp - lq
            }
        }
    }

    /// A Categorical's normalized log-probabilities `[R, ...shape, K]`.
    fn log_probs(&self) -> Result<Tensor> {
        match self.param(DistParam::Logits) {
            Some(l) => log_softmax_last(l),
            None => log_softmax_last(&clamp_probs(self.get(DistParam::Probs)?)?.log()?),
        }
    }

    /// Brings a value to this distribution's rows (one side broadcasts from 1 row).
    fn align(&self, value: &Tensor) -> Result<(DistValue, Tensor)> {
        let want = self.value_shape();
        let dims = value.dims();
        if dims.len() != want.len() || dims[1..] != want[1..] {
            return dist_error(format!(
                "{}: a value of shape {} where {} was expected (rows first)",
                self.kind.name(),
                shape_str(dims),
                shape_str(&want)
            ));
        }
        let value = value.to_dtype(self.dtype())?;
        let rows = dims[0];
        if rows == self.rows {
            Ok((self.clone(), value))
        } else if self.rows == 1 {
            Ok((self.with_rows(rows)?, value))
        } else if rows == 1 {
            Ok((self.clone(), broadcast_to(&value, &want)?))
        } else {
            dist_error(format!(
                "{}: a value with {rows} rows for a distribution with {}",
                self.kind.name(),
                self.rows
            ))
        }
    }

    /// `log p(value)` summed over the event axes: `[R]`. `value` is `[R or 1, ...event]`
    /// (`Categorical`: one-hot or relaxed `[R, ...shape, K]`); values outside the support
    /// give `-inf`.
    pub fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        let (d, value) = self.align(value)?;
        sum_after_rows(&d.log_density(&value)?)
    }

    /// Elementwise log-density of an aligned value: `[R, ...]`, to be summed over every
    /// axis but the first (the `Mixture` component: over every axis but the first two).
    fn log_density(&self, x: &Tensor) -> Result<Tensor> {
        use DistParam::*;
        match self.kind {
            DistKind::Normal => normal_log_density(x, self.get(Loc)?, self.get(Scale)?),
            DistKind::LogNormal => {
                let inside = x.gt(0.0)?;
                let xs = inside.where_cond(x, &x.ones_like()?)?;
                let lx = xs.log()?;
                let lp = (normal_log_density(&lx, self.get(Loc)?, self.get(Scale)?)? - lx)?;
                inside.where_cond(&lp, &full_like(&lp, f64::NEG_INFINITY)?)
            }
            DistKind::Laplace => {
                let scale = self.get(Scale)?;
                let z = ((x - self.get(Loc)?)?.abs()? / scale)?;
                z.neg()? - scale.log()?.affine(1.0, std::f64::consts::LN_2)?
            }
            DistKind::StudentT => {
                let df = self.get(Df)?;
                let scale = self.get(Scale)?;
                let z = ((x - self.get(Loc)?)? / scale)?;
                let half_df1 = df.affine(0.5, 0.5)?;
                let norm = ((lgamma(&half_df1)? - lgamma(&df.affine(0.5, 0.0)?)?)?
                    - df.affine(std::f64::consts::PI, 0.0)?
                        .log()?
                        .affine(0.5, 0.0)?)?;
                let tail = (half_df1 * (z.sqr()? / df)?.affine(1.0, 1.0)?.log()?)?;
                (norm - scale.log()?)? - tail
            }
            DistKind::Uniform => {
                let (low, high) = (self.get(Low)?, self.get(High)?);
                let inside = and(&x.ge(low)?, &x.lt(high)?)?;
                let lp = (high - low)?.log()?.neg()?;
                inside.where_cond(&lp, &full_like(&lp, f64::NEG_INFINITY)?)
            }
            DistKind::Exponential => {
                let rate = self.get(Rate)?;
                let inside = x.ge(0.0)?;
                let lp = (rate.log()? - (rate * x)?)?;
                inside.where_cond(&lp, &full_like(&lp, f64::NEG_INFINITY)?)
            }
            DistKind::Gamma => {
                let (a, b) = (self.get(Concentration)?, self.get(Rate)?);
                let inside = x.gt(0.0)?;
                let xs = inside.where_cond(x, &x.ones_like()?)?;
                let lp = ((((a * b.log()?)? + (a.affine(1.0, -1.0)? * xs.log()?)?)?
                    - (b * &xs)?)?
                    - lgamma(a)?)?;
                inside.where_cond(&lp, &full_like(&lp, f64::NEG_INFINITY)?)
            }
            DistKind::Beta => {
                let (a, b) = (self.get(A)?, self.get(B)?);
                let inside = and(&x.gt(0.0)?, &x.lt(1.0)?)?;
                let half = full_like(x, 0.5)?;
                let xs = inside.where_cond(x, &half)?;
                let lp = (((a.affine(1.0, -1.0)? * xs.log()?)?
                    + (b.affine(1.0, -1.0)? * xs.neg()?.affine(1.0, 1.0)?.log()?)?)?
                    - log_beta(a, b)?)?;
                inside.where_cond(&lp, &full_like(&lp, f64::NEG_INFINITY)?)
            }
            DistKind::Bernoulli => match self.param(Logits) {
                Some(l) => fused::bernoulli_logits_log_density(x, l),
                None => {
                    let (lp, lq) = self.bernoulli_logs()?;
                    (x * lp)? + (x.neg()?.affine(1.0, 1.0)? * lq)?
                }
            },
            DistKind::ContinuousBernoulli => {
                let l = self.logits()?;
                ((x * &l)? - softplus(&l)?)? + cb_log_norm(&l)?
            }
            DistKind::Categorical => (x * self.log_probs()?)?.sum(D::Minus1),
            DistKind::Poisson => {
                let rate = self.get(Rate)?;
                let inside = x.ge(0.0)?;
                let xs = inside.where_cond(x, &x.zeros_like()?)?;
                let lp = (((&xs * rate.log()?)? - rate)? - lgamma(&xs.affine(1.0, 1.0)?)?)?;
                inside.where_cond(&lp, &full_like(&lp, f64::NEG_INFINITY)?)
            }
            DistKind::Dirichlet => {
                let a = self.get(Concentration)?;
                let inside = x.gt(0.0)?;
                let xs = inside.where_cond(x, &x.ones_like()?)?;
                let terms = ((a.affine(1.0, -1.0)? * xs.log()?)? - lgamma(a)?)?;
                let terms = inside.where_cond(&terms, &full_like(&terms, f64::NEG_INFINITY)?)?;
                terms.sum(D::Minus1)? + lgamma(&a.sum(D::Minus1)?)?
            }
            DistKind::Mixture => {
                let c = self.get_component()?;
                // [R, 1, ...] against the component's [R, K, ...]
                let xk = x.unsqueeze(1)?.broadcast_as(c.value_shape().as_slice())?;
                let per_k = c.log_density(&xk)?; // [R, K, ...]
                let per_k = if per_k.rank() > 2 {
                    per_k.flatten_from(2)?.sum(2)?
                } else {
                    per_k
                }; // [R, K]
                let logw = log_softmax_last(self.get(Logits)?)?; // [R, K]
                logsumexp(&(logw + per_k)?, 1)
            }
        }
    }

    /// The mean, `[R, ...event_shape]` (`Categorical`: the class probabilities
    /// `[R, ...shape, K]`, the mean of the one-hot value). NaN where it does not exist
    /// (StudentT with `df <= 1`).
    pub fn mean(&self) -> Result<Tensor> {
        use DistParam::*;
        match self.kind {
            DistKind::Normal | DistKind::Laplace => Ok(self.get(Loc)?.clone()),
            DistKind::LogNormal => {
                (self.get(Loc)? + self.get(Scale)?.sqr()?.affine(0.5, 0.0)?)?.exp()
            }
            DistKind::StudentT => {
                let loc = self.get(Loc)?;
                self.get(Df)?
                    .gt(1.0)?
                    .where_cond(loc, &full_like(loc, f64::NAN)?)
            }
            DistKind::Uniform => (self.get(Low)? + self.get(High)?)?.affine(0.5, 0.0),
            DistKind::Exponential => self.get(Rate)?.recip(),
            DistKind::Gamma => self.get(Concentration)? / self.get(Rate)?,
            DistKind::Beta => {
                let a = self.get(A)?;
                a / (a + self.get(B)?)?
            }
            DistKind::Bernoulli => match self.param(Logits) {
                Some(l) => sigmoid(l),
                None => Ok(self.get(Probs)?.clone()),
            },
            DistKind::ContinuousBernoulli => cb_mean(&self.logits()?),
            DistKind::Categorical => self.log_probs()?.exp(),
            DistKind::Poisson => Ok(self.get(Rate)?.clone()),
            DistKind::Dirichlet => {
                let a = self.get(Concentration)?;
                a.broadcast_div(&a.sum_keepdim(D::Minus1)?)
            }
            DistKind::Mixture => {
                let c = self.get_component()?;
                let m = c.mean()?; // [R, K, ...]
                let w = log_softmax_last(self.get(Logits)?)?.exp()?; // [R, K]
                let mut wshape = w.dims().to_vec();
                wshape.extend(std::iter::repeat_n(1, m.rank() - 2));
                w.reshape(wshape.as_slice())?.broadcast_mul(&m)?.sum(1)
            }
        }
    }
}

/// `log N(x; loc, scale)`, elementwise.
fn normal_log_density(x: &Tensor, loc: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let z = ((x - loc)? / scale)?;
    z.sqr()?.affine(-0.5, -HALF_LOG_2PI)? - scale.log()?
}

/// `log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b)`.
fn log_beta(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (lgamma(a)? + lgamma(b)?)? - lgamma(&(a + b)?)?
}

/// Below this |logit|, the ContinuousBernoulli's normalizer, mean and inverse CDF use
/// their Taylor series: the closed forms cancel catastrophically near 0 (and are 0/0 at 0).
const CB_TAYLOR: f64 = 0.3;

/// Splits `l` into a copy safe for the closed form (|l| >= CB_TAYLOR, the small entries
/// replaced by CB_TAYLOR) and one safe for the series (the large entries replaced by 0),
/// with the mask choosing between them: the branch not chosen never sees an input where
/// its value or gradient is infinite, so no NaN leaks through `where_cond`'s backward.
fn cb_split(l: &Tensor, threshold: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let small = l.abs()?.lt(threshold)?;
    let large_l = small.where_cond(&full_like(l, threshold)?, l)?;
    let small_l = small.where_cond(l, &l.zeros_like()?)?;
    Ok((small, large_l, small_l))
}

/// `log C(l)` of the ContinuousBernoulli with logit `l`, where
/// `C = 2 artanh(1 - 2p) / (1 - 2p) = l / tanh(l / 2)` (even in `l`), and near 0
/// `log C = log 2 + l²/12 - 7 l⁴/1440 + 31 l⁶/90720 - 127 l⁸/4838400`.
fn cb_log_norm(l: &Tensor) -> Result<Tensor> {
    let (small, large_l, small_l) = cb_split(l, CB_TAYLOR)?;
    let al = large_l.abs()?;
    let closed = (al.log()? - al.affine(0.5, 0.0)?.tanh()?.log()?)?;
    let l2 = small_l.sqr()?;
    let series = (&l2
        * special_horner(
            &l2,
            &[
                1.0 / 12.0,
                -7.0 / 1440.0,
                31.0 / 90720.0,
                -127.0 / 4_838_400.0,
            ],
        )?)?
    .affine(1.0, std::f64::consts::LN_2)?;
    small.where_cond(&series, &closed)
}

/// The ContinuousBernoulli mean in logits: `1/2 + (coth(l/2) - 2/l) / 2`, near 0
/// `1/2 + l/12 - l³/720 + l⁵/30240`.
fn cb_mean(l: &Tensor) -> Result<Tensor> {
    let (small, large_l, small_l) = cb_split(l, CB_TAYLOR)?;
    let closed = (large_l
        .affine(0.5, 0.0)?
        .tanh()?
        .recip()?
        .affine(0.5, 0.5)?
        - large_l.recip()?)?;
    let l2 = small_l.sqr()?;
    let series = (&small_l * special_horner(&l2, &[1.0 / 12.0, -1.0 / 720.0, 1.0 / 30240.0])?)?
        .affine(1.0, 0.5)?;
    small.where_cond(&series, &closed)
}

fn special_horner(y: &Tensor, coeffs: &[f64]) -> Result<Tensor> {
    let mut acc = y.zeros_like()?;
    for &c in coeffs.iter().rev() {
        acc = (acc * y)?.affine(1.0, c)?;
    }
    Ok(acc)
}
