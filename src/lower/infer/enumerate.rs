//! `@enumerate` (the default for finite supports): an exact sum over the site's values.
//! The site multiplies the rows by its support size K (see `eval`'s module
//! documentation); each row carries the log q of its value, which the objective turns
//! into the row's weight.

use super::{Draw, SiteEstimator};
use crate::ir::Site;
use crate::lower::dist::DistValue;
use crate::lower::eval::Frame;
use crate::rng::Rng;
use candle_core::{Result, Tensor};

pub struct Enumerate;

impl SiteEstimator for Enumerate {
    fn strategy(&self) -> &'static str {
        "enumerate"
    }

    fn draw(&self, frame: &mut Frame<'_>, _: &Site, q: &DistValue, _: &mut Rng) -> Result<Draw> {
        let (rows, value, dist) = support_rows(q, frame.sample_rows)?;
        let log_q = dist.log_prob(&value)?;
        Ok(Draw::Enumerated {
            rows,
            value,
            dist,
            log_q,
        })
    }
}

/// The K support values of `dist` (at `before` rows) laid out on `before * K` rows, the
/// k-th value innermost (`[R0, K, ...value] -> [R0 * K, ...value]`): the new row count,
/// the values, and `dist` lifted to those rows.
pub fn support_rows(dist: &DistValue, before: usize) -> Result<(usize, Tensor, DistValue)> {
    let support = dist.enumerate_support()?;
    let rows = before * support.len();
    let stacked = Tensor::stack(&support, 1)?;
    let mut dims = stacked.dims().to_vec();
    dims.remove(0);
    dims[0] = rows;
    Ok((rows, stacked.reshape(dims)?, dist.lift_rows(rows)?))
}
