//! How a training split is cut into steps: one interface ([`Batcher`]) for every kind of
//! data, so the training loop has no modes of its own. Each step is one or more
//! [`Part`]s, each a set of examples carrying a share of the loss; the loop turns each
//! part into a minibatch, evaluates the objective on it and adds the parts' losses.
//!
//! - [`Uniform`]: a reshuffled pass over every example, `batch` at a time.
//! - [`Pools`]: `partial` data with some examples labelled and some not: each step is a
//!   batch of unlabelled examples (an epoch is one pass over them) plus a batch of
//!   labelled ones, cycled through a reshuffled order of their own, as in Kingma et al.
//!   (2014): with 1,000 labels among 60,000 examples a uniform batch would seldom hold
//!   one. The parts are weighted (`n_l / (n B_l)` and `n_u / (n B_u)` per example) so the
//!   loss stays an unbiased estimate of the per-example objective of the whole set.
//! - [`Members`]: the member distributions of a `meta` family: each step holds a batch
//!   of every training member, each weighted `1 / members`, so the loss is the mean over
//!   the members, as MetaVAE's reference (mhw32/meta-inference-public) trains. Each
//!   member runs through its own reshuffled cycle of examples, across epochs; an epoch is
//!   as many examples as the training members have distinct ones, spread over the
//!   members (`distinct / (batch · members)` steps), so it costs about what an epoch of
//!   the pooled data costs a model without `meta`.
//!
//! A batcher's draws come from the run's generator, so a resumed run draws the same
//! batches; what it keeps across epochs is in [`BatcherState`], saved with the
//! checkpoint.

use crate::data::meta::MetaData;
use crate::data::{DataSet, Split};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Examples of the split that make one part of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub indices: Vec<usize>,
    /// The share of the per-example objective these examples carry (the parts of a step
    /// sum to 1).
    pub share: f64,
    /// Whether each example is weighted `share / len` in the loss (otherwise the part's
    /// loss is its plain mean and `share` is 1).
    pub weighted: bool,
    /// Whether these examples are the epoch's pass (counted in examples per second and in
    /// the epoch's means); the labelled examples cycled beside them are not.
    pub counted: bool,
    /// The `meta` member they come from (their indices are the member's examples of the
    /// training split).
    pub member: Option<usize>,
}

/// What a batcher keeps across epochs (saved for `--resume`). Its fields keep the names
/// earlier checkpoints used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatcherState {
    /// The labelled examples' current order and position in it ([`Pools`]).
    #[serde(default)]
    pub labelled_order: Vec<usize>,
    #[serde(default)]
    pub labelled_next: usize,
    /// Each training member's cycle and position in it ([`Members`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_orders: Vec<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_next: Vec<usize>,
}

/// Cuts a training split into steps.
pub trait Batcher {
    /// Steps in one epoch.
    fn steps_per_epoch(&self) -> u64;
    /// Start an epoch: draw its order.
    fn start_epoch(&mut self, rng: &mut Rng);
    /// The next step's parts, `None` once the epoch is done.
    fn next_step(&mut self, rng: &mut Rng) -> Option<Vec<Part>>;
    /// Whether this is the epoch's last step (after [`Batcher::next_step`] gave it).
    fn epoch_done(&self) -> bool;
    fn state(&self) -> BatcherState;
    fn restore(&mut self, state: BatcherState);
}

/// The batcher for a dataset's training split: [`Members`] for a `meta` family,
/// [`Pools`] when the split has both labelled and unlabelled examples of its `partial`
/// variables, [`Uniform`] otherwise.
pub fn for_data(data: &DataSet, batch: usize) -> Box<dyn Batcher> {
    if let Some(meta) = &data.meta {
        return Box::new(Members::new(meta, batch));
    }
    for_split(&data.train, batch)
}

/// The batcher of a split without `meta` members: [`Pools`] or [`Uniform`].
pub fn for_split(split: &Split, batch: usize) -> Box<dyn Batcher> {
    let batch = batch.max(1);
    match Pools::of(split, batch) {
        Some(p) => Box::new(p),
        None => Box::new(Uniform::new(split.n, batch)),
    }
}

/// Every example once per epoch, reshuffled, `batch` at a time.
pub struct Uniform {
    n: usize,
    batch: usize,
    order: Vec<usize>,
    next: usize,
}

impl Uniform {
    pub fn new(n: usize, batch: usize) -> Uniform {
        Uniform {
            n,
            batch: batch.max(1),
            order: Vec::new(),
            next: 0,
        }
    }
}

/// The next `batch` positions of `order` from `next`.
fn take(order: &[usize], next: &mut usize, batch: usize) -> Option<Vec<usize>> {
    if *next >= order.len() {
        return None;
    }
    let end = (*next + batch).min(order.len());
    let out = order[*next..end].to_vec();
    *next = end;
    Some(out)
}

impl Batcher for Uniform {
    fn steps_per_epoch(&self) -> u64 {
        self.n.div_ceil(self.batch) as u64
    }

    fn start_epoch(&mut self, rng: &mut Rng) {
        self.order = rng.permutation(self.n);
        self.next = 0;
    }

    fn next_step(&mut self, _: &mut Rng) -> Option<Vec<Part>> {
        let indices = take(&self.order, &mut self.next, self.batch)?;
        Some(vec![Part {
            indices,
            share: 1.0,
            weighted: false,
            counted: true,
            member: None,
        }])
    }

    fn epoch_done(&self) -> bool {
        self.next >= self.order.len()
    }

    fn state(&self) -> BatcherState {
        BatcherState::default()
    }

    fn restore(&mut self, _: BatcherState) {}
}

/// Labelled and unlabelled examples of `partial` data, drawn side by side (see the module
/// documentation).
pub struct Pools {
    n: usize,
    batch: usize,
    labelled: Vec<usize>,
    unlabelled: Vec<usize>,
    /// This epoch's order of the unlabelled examples, and the position in it.
    order: Vec<usize>,
    next: usize,
    /// The labelled examples' cycle, which runs across epochs.
    cycle: BatcherState,
}

impl Pools {
    /// `None` unless the split has both labelled examples (every `partial` value
    /// observed) and unlabelled ones.
    pub fn of(split: &Split, batch: usize) -> Option<Pools> {
        if split.observed.is_empty() {
            return None;
        }
        let (labelled, unlabelled): (Vec<usize>, Vec<usize>) = (0..split.n)
            .partition(|&i| split.observed.iter().all(|(_, m)| m.get(i) == Some(&true)));
        if labelled.is_empty() || unlabelled.is_empty() {
            return None;
        }
        Some(Pools {
            n: split.n,
            batch: batch.max(1),
            labelled,
            unlabelled,
            order: Vec::new(),
            next: 0,
            cycle: BatcherState::default(),
        })
    }

    /// The next `count` labelled examples of the cycle, reshuffled each time it ends.
    fn next_labelled(&mut self, count: usize, rng: &mut Rng) -> Vec<usize> {
        let c = &mut self.cycle;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            if c.labelled_next >= c.labelled_order.len() {
                c.labelled_order = rng
                    .permutation(self.labelled.len())
                    .into_iter()
                    .map(|i| self.labelled[i])
                    .collect();
                c.labelled_next = 0;
            }
            match c.labelled_order.get(c.labelled_next) {
                Some(&i) => out.push(i),
                None => break,
            }
            c.labelled_next += 1;
        }
        out
    }
}

impl Batcher for Pools {
    fn steps_per_epoch(&self) -> u64 {
        self.unlabelled.len().div_ceil(self.batch) as u64
    }

    fn start_epoch(&mut self, rng: &mut Rng) {
        self.order = rng
            .permutation(self.unlabelled.len())
            .into_iter()
            .map(|i| self.unlabelled[i])
            .collect();
        self.next = 0;
    }

    fn next_step(&mut self, rng: &mut Rng) -> Option<Vec<Part>> {
        let unlabelled = take(&self.order, &mut self.next, self.batch)?;
        let labelled = self.next_labelled(self.labelled.len().min(self.batch), rng);
        let share = |pool: usize| pool as f64 / self.n as f64;
        Some(vec![
            Part {
                indices: labelled,
                share: share(self.labelled.len()),
                weighted: true,
                counted: false,
                member: None,
            },
            Part {
                indices: unlabelled,
                share: share(self.unlabelled.len()),
                weighted: true,
                counted: true,
                member: None,
            },
        ])
    }

    fn epoch_done(&self) -> bool {
        self.next >= self.order.len()
    }

    fn state(&self) -> BatcherState {
        self.cycle.clone()
    }

    fn restore(&mut self, state: BatcherState) {
        self.cycle = state;
    }
}

/// The training members of a `meta` family, every one in each step (see the module
/// documentation).
pub struct Members {
    batch: usize,
    /// Member indices and each one's training examples.
    members: Vec<usize>,
    pools: Vec<Vec<usize>>,
    steps: u64,
    taken: u64,
    cycles: BatcherState,
}

impl Members {
    pub fn new(meta: &MetaData, batch: usize) -> Members {
        let batch = batch.max(1);
        let members = meta.train_members.clone();
        let pools: Vec<Vec<usize>> = members
            .iter()
            .map(|&k| meta.members[k].train.clone())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for p in &pools {
            seen.extend(p.iter().copied());
        }
        let per_step = (batch * members.len()).max(1);
        Members {
            batch,
            steps: seen.len().div_ceil(per_step).max(1) as u64,
            taken: 0,
            cycles: BatcherState {
                member_orders: vec![Vec::new(); members.len()],
                member_next: vec![0; members.len()],
                ..BatcherState::default()
            },
            members,
            pools,
        }
    }

    /// The next `batch` examples of member slot `j`'s cycle, reshuffled when it ends.
    fn next_of(&mut self, j: usize, rng: &mut Rng) -> Vec<usize> {
        let pool = &self.pools[j];
        let c = &mut self.cycles;
        let mut out = Vec::with_capacity(self.batch);
        while out.len() < self.batch.min(pool.len()) {
            if c.member_next[j] >= c.member_orders[j].len() {
                c.member_orders[j] = rng
                    .permutation(pool.len())
                    .into_iter()
                    .map(|i| pool[i])
                    .collect();
                c.member_next[j] = 0;
            }
            out.push(c.member_orders[j][c.member_next[j]]);
            c.member_next[j] += 1;
        }
        out
    }
}

impl Batcher for Members {
    fn steps_per_epoch(&self) -> u64 {
        self.steps
    }

    fn start_epoch(&mut self, _: &mut Rng) {
        self.taken = 0;
    }

    fn next_step(&mut self, rng: &mut Rng) -> Option<Vec<Part>> {
        if self.taken >= self.steps {
            return None;
        }
        self.taken += 1;
        let share = 1.0 / self.members.len().max(1) as f64;
        Some(
            (0..self.members.len())
                .map(|j| Part {
                    indices: self.next_of(j, rng),
                    share,
                    weighted: true,
                    counted: true,
                    member: Some(self.members[j]),
                })
                .collect(),
        )
    }

    fn epoch_done(&self) -> bool {
        self.taken >= self.steps
    }

    fn state(&self) -> BatcherState {
        self.cycles.clone()
    }

    fn restore(&mut self, state: BatcherState) {
        if state.member_orders.len() == self.members.len()
            && state.member_next.len() == self.members.len()
        {
            self.cycles = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize, labelled: &[usize]) -> Split {
        Split {
            n,
            vars: Vec::new(),
            observed: vec![(0, (0..n).map(|i| labelled.contains(&i)).collect())],
            labels: None,
        }
    }

    /// Every step's parts, for one epoch.
    fn epoch(b: &mut dyn Batcher, rng: &mut Rng) -> Vec<Vec<Part>> {
        b.start_epoch(rng);
        let mut out = Vec::new();
        while let Some(p) = b.next_step(rng) {
            out.push(p);
        }
        assert!(b.epoch_done());
        out
    }

    #[test]
    fn uniform_batches_cover_every_example_once_per_epoch() {
        let mut b = for_split(&split(10, &[]), 4);
        assert_eq!(b.steps_per_epoch(), 3);
        let mut rng = Rng::seed(1);
        let steps = epoch(b.as_mut(), &mut rng);
        let sizes: Vec<usize> = steps.iter().map(|p| p[0].indices.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let mut all: Vec<usize> = steps.iter().flat_map(|p| p[0].indices.clone()).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(steps
            .iter()
            .all(|p| p.len() == 1 && p[0].share == 1.0 && !p[0].weighted));
    }

    #[test]
    fn pools_pair_each_unlabelled_batch_with_labelled_examples_weighted_by_share() {
        let labelled = [1, 5, 7];
        let mut b = for_split(&split(11, &labelled), 4);
        // 8 unlabelled examples, 4 at a time.
        assert_eq!(b.steps_per_epoch(), 2);
        let mut rng = Rng::seed(2);
        let steps = epoch(b.as_mut(), &mut rng);
        let mut unl: Vec<usize> = Vec::new();
        for parts in &steps {
            assert_eq!(parts.len(), 2);
            let (l, u) = (&parts[0], &parts[1]);
            assert!(l.indices.iter().all(|i| labelled.contains(i)));
            assert_eq!(l.indices.len(), 3);
            assert!((l.share - 3.0 / 11.0).abs() < 1e-12);
            assert!((u.share - 8.0 / 11.0).abs() < 1e-12);
            assert!((l.share + u.share - 1.0).abs() < 1e-12);
            unl.extend(&u.indices);
        }
        unl.sort();
        assert_eq!(unl, [0, 2, 3, 4, 6, 8, 9, 10]);
        // The labelled cycle carries over: the state restored into a fresh batcher makes
        // the same next epoch.
        let saved = b.state();
        let mut rng2 = rng.clone();
        let next = epoch(b.as_mut(), &mut rng);
        let mut c = for_split(&split(11, &labelled), 4);
        c.restore(saved);
        assert_eq!(epoch(c.as_mut(), &mut rng2), next);
    }

    #[test]
    fn all_labelled_or_none_is_uniform() {
        assert_eq!(
            for_split(&split(6, &[0, 1, 2, 3, 4, 5]), 4).steps_per_epoch(),
            2
        );
        assert_eq!(for_split(&split(6, &[]), 4).steps_per_epoch(), 2);
    }
}
