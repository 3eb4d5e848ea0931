//! Clustering accuracy: the fraction of examples whose cluster, under the best
//! one-to-one matching of clusters to labels, is their label's. The matching is a
//! maximum-weight assignment on the cluster x label contingency table, solved by the
//! `pathfinding` crate's Kuhn-Munkres (Hungarian) algorithm.

use crate::data::Split;
use crate::ir::Domain;
use crate::lower::LoweredModel;
use crate::rng::Rng;
use crate::train::{make_batch, TrainError};
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// The clustering accuracy of every per-example `Cat(K)` latent (one value per example)
/// on `split` against its labels, by name: each example goes to the arg-max of its
/// posterior probabilities (`q(c | x)` of an enumerated guide site, or the exact
/// posterior under `guide exact`). Empty when the split has no labels or the model no
/// such latent.
pub fn split_clustering_accuracy(
    model: &LoweredModel,
    split: &Split,
    batch_size: usize,
    rng: &mut Rng,
) -> Result<Vec<(String, f64)>, TrainError> {
    let Some(labels) = &split.labels else {
        return Ok(Vec::new());
    };
    let program = &model.program;
    let is_cluster = |id: usize| {
        program.latents.get(id).is_some_and(|l| {
            !l.global && l.ty.shape.is_empty() && matches!(l.ty.domain, Domain::Cat(_))
        })
    };
    let ids: Vec<usize> = (0..program.latents.len())
        .filter(|&i| is_cluster(i))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    let idx: Vec<usize> = (0..split.n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = make_batch(program, split, chunk, model.device(), rng)?;
        for (id, probs) in model.posterior_means(&batch, rng)? {
            if let Some(slot) = ids.iter().position(|&i| i == id) {
                let am = probs.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
                assigned[slot].extend(am.into_iter().map(|a| a as usize));
            }
        }
    }
    Ok(ids
        .iter()
        .zip(assigned)
        .filter_map(|(&id, clusters)| {
            clustering_accuracy(&clusters, labels).map(|a| (program.latents[id].name.clone(), a))
        })
        .collect())
}

/// The accuracy of `clusters` (each in `0..k`) against `labels` under the best
/// one-to-one matching; clusters or labels left unmatched (when their numbers differ)
/// count as wrong. `None` when there are no examples or the lengths differ.
pub fn clustering_accuracy(clusters: &[usize], labels: &[u32]) -> Option<f64> {
    if clusters.is_empty() || clusters.len() != labels.len() {
        return None;
    }
    let k = clusters.iter().max().map_or(0, |m| m + 1);
    let l = labels.iter().max().map_or(0, |m| *m as usize + 1);
    let mut counts = vec![vec![0i64; l]; k];
    for (&c, &y) in clusters.iter().zip(labels) {
        counts[c][y as usize] += 1;
    }
    // kuhn_munkres wants no more rows than columns.
    let rows = if k <= l {
        counts
    } else {
        (0..l)
            .map(|y| (0..k).map(|c| counts[c][y]).collect())
            .collect()
    };
    let weights = Matrix::from_rows(rows).ok()?;
    let (matched, _) = kuhn_munkres(&weights);
    Some(matched as f64 / clusters.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::clustering_accuracy;

    #[test]
    fn a_permutation_of_the_labels_is_perfect() {
        let labels = [0u32, 1, 2, 2, 1, 0, 3, 3];
        let perm = [2usize, 0, 3, 1];
        let clusters: Vec<usize> = labels.iter().map(|&y| perm[y as usize]).collect();
        assert_eq!(clustering_accuracy(&clusters, &labels), Some(1.0));
    }

    #[test]
    fn the_best_matching_is_found_by_hand() {
        // Cluster 0 holds labels {0, 0, 1}, cluster 1 {1, 1, 0}, cluster 2 {2}: the best
        // matching is 0->0, 1->1, 2->2 with 2 + 2 + 1 = 5 of 7 right.
        let clusters = [0usize, 0, 0, 1, 1, 1, 2];
        let labels = [0u32, 0, 1, 1, 1, 0, 2];
        assert_eq!(clustering_accuracy(&clusters, &labels), Some(5.0 / 7.0));
        // A greedy choice would go wrong here: cluster 0 is mostly label 1, but label 1
        // is worth more to cluster 1 (4 vs 3), so the best matching sends 0 to 2.
        let clusters = [0usize, 0, 0, 0, 0, 1, 1, 1, 1];
        let labels = [1u32, 1, 1, 2, 2, 1, 1, 1, 1];
        assert_eq!(clustering_accuracy(&clusters, &labels), Some(6.0 / 9.0));
    }

    #[test]
    fn more_clusters_than_labels_leave_some_unmatched() {
        let clusters = [0usize, 1, 2, 3];
        let labels = [0u32, 0, 1, 1];
        assert_eq!(clustering_accuracy(&clusters, &labels), Some(0.5));
        assert_eq!(clustering_accuracy(&[], &[]), None);
        assert_eq!(clustering_accuracy(&[0], &[0, 1]), None);
    }
}
