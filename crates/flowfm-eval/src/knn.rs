//! k-nearest-neighbour classification on frozen representations (the kNN downstream protocol).
//!
//! Distances are computed in chunks of queries with one matrix product each (on the device the
//! classifier was fitted on), then the `k` nearest training rows vote. Ties in the vote go to the
//! class whose voters are closer in total, then to the lower class index; equal distances are
//! ordered by training index, so predictions are deterministic.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::arrays::Embeddings;
use crate::error::{EvalError, Result};

/// The distance between representations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    /// `1 - cos(a, b)`; a zero vector is at distance 1 from everything.
    Cosine,
    /// `|a - b|_2`.
    Euclidean,
}

/// Settings of the kNN classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Number of neighbours that vote (1 to the number of training rows).
    pub k: usize,
    /// Distance between representations.
    pub distance: Distance,
    /// Queries per distance-matrix chunk (bounds memory at `query_chunk x N_train` floats).
    pub query_chunk: usize,
}

impl Default for KnnConfig {
    /// `k = 5`, cosine distance, chunks of 512 queries.
    fn default() -> Self {
        Self {
            k: 5,
            distance: Distance::Cosine,
            query_chunk: 512,
        }
    }
}

/// A fitted kNN classifier: the (normalised, for cosine) training rows and their labels.
#[derive(Debug)]
pub struct KnnClassifier {
    config: KnnConfig,
    /// `(N_train, d)` on the fitting device; unit rows for cosine.
    train: Tensor,
    /// `(1, N_train)` squared norms (Euclidean only).
    train_sq_norms: Option<Tensor>,
    labels: Vec<usize>,
    num_classes: usize,
    dim: usize,
}

impl KnnClassifier {
    /// Stores the training representations and labels (`labels[i] < num_classes`).
    ///
    /// # Shapes
    /// - `train`: `(N_train, d)`; `labels`: `N_train`.
    pub fn fit(
        train: &Embeddings<'_>,
        labels: &[usize],
        num_classes: usize,
        config: KnnConfig,
        device: &Device,
    ) -> Result<Self> {
        if labels.len() != train.rows() {
            return Err(EvalError::mismatch(
                "train",
                "labels",
                format!("{} rows vs {} labels", train.rows(), labels.len()),
            ));
        }
        if config.k == 0 || config.k > train.rows() {
            return Err(EvalError::invalid(
                "config.k",
                format!(
                    "k = {} must be in 1..={} (training rows)",
                    config.k,
                    train.rows()
                ),
            ));
        }
        if config.query_chunk == 0 {
            return Err(EvalError::invalid("config.query_chunk", "must be positive"));
        }
        if let Some(i) = labels.iter().position(|&l| l >= num_classes) {
            return Err(EvalError::invalid(
                format!("labels[{i}]"),
                format!(
                    "class {} is not below num_classes = {num_classes}",
                    labels[i]
                ),
            ));
        }
        let (n, d) = (train.rows(), train.dim());
        let rows = prepare_rows(train, config.distance);
        let train_t = Tensor::from_vec(rows, (n, d), device)?;
        let train_sq_norms = match config.distance {
            Distance::Cosine => None,
            Distance::Euclidean => Some(train_t.sqr()?.sum_keepdim(1)?.t()?.contiguous()?),
        };
        Ok(Self {
            config,
            train: train_t,
            train_sq_norms,
            labels: labels.to_vec(),
            num_classes,
            dim: d,
        })
    }

    /// The `k` nearest training rows of every query: `(training index, distance)`, nearest first.
    ///
    /// # Shapes
    /// - `queries`: `(N_query, d)`; result: `N_query` lists of `k` pairs.
    pub fn neighbours(&self, queries: &Embeddings<'_>) -> Result<Vec<Vec<(usize, f64)>>> {
        if queries.dim() != self.dim {
            return Err(EvalError::mismatch(
                "train",
                "queries",
                format!("dimension {} vs {}", self.dim, queries.dim()),
            ));
        }
        let rows = prepare_rows(queries, self.config.distance);
        let device = self.train.device();
        let k = self.config.k;
        let mut out = Vec::with_capacity(queries.rows());
        for start in (0..queries.rows()).step_by(self.config.query_chunk) {
            let end = (start + self.config.query_chunk).min(queries.rows());
            let q = Tensor::from_slice(
                &rows[start * self.dim..end * self.dim],
                (end - start, self.dim),
                device,
            )?;
            let dot = q.matmul(&self.train.t()?)?;
            let dist = match (&self.train_sq_norms, self.config.distance) {
                (_, Distance::Cosine) => dot.affine(-1.0, 1.0)?,
                (Some(tn), Distance::Euclidean) => {
                    let qn = q.sqr()?.sum_keepdim(1)?;
                    qn.broadcast_add(tn)?
                        .sub(&dot.affine(2.0, 0.0)?)?
                        .relu()?
                        .sqrt()?
                }
                (None, Distance::Euclidean) => {
                    return Err(EvalError::invalid("knn", "missing training norms"))
                }
            };
            for row in dist.to_vec2::<f32>()? {
                let mut idx: Vec<(usize, f32)> = row.into_iter().enumerate().collect();
                let by_dist =
                    |a: &(usize, f32), b: &(usize, f32)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
                if k < idx.len() {
                    idx.select_nth_unstable_by(k - 1, by_dist);
                    idx.truncate(k);
                }
                idx.sort_by(by_dist);
                out.push(idx.into_iter().map(|(i, d)| (i, f64::from(d))).collect());
            }
        }
        Ok(out)
    }

    /// The predicted class of every query (majority vote of its `k` neighbours).
    ///
    /// # Shapes
    /// - `queries`: `(N_query, d)`; result: `N_query` class indices.
    pub fn predict(&self, queries: &Embeddings<'_>) -> Result<Vec<usize>> {
        Ok(self
            .neighbours(queries)?
            .iter()
            .map(|nb| self.vote(nb))
            .collect())
    }

    fn vote(&self, neighbours: &[(usize, f64)]) -> usize {
        let mut votes = vec![0usize; self.num_classes];
        let mut dist_sum = vec![0f64; self.num_classes];
        for &(i, d) in neighbours {
            votes[self.labels[i]] += 1;
            dist_sum[self.labels[i]] += d;
        }
        let mut best = 0;
        for c in 1..self.num_classes {
            let better =
                votes[c] > votes[best] || (votes[c] == votes[best] && dist_sum[c] < dist_sum[best]);
            if better {
                best = c;
            }
        }
        best
    }
}

/// Row-major f32 rows, unit-normalised for cosine (zero rows stay zero).
fn prepare_rows(e: &Embeddings<'_>, distance: Distance) -> Vec<f32> {
    match distance {
        Distance::Euclidean => e.as_slice().to_vec(),
        Distance::Cosine => {
            let mut out = Vec::with_capacity(e.as_slice().len());
            for i in 0..e.rows() {
                let r = e.row(i);
                let norm = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
                out.extend(r.iter().map(|&v| (f64::from(v) * inv) as f32));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::{SeededRng, Tolerance};

    fn emb(rows: &[[f32; 2]]) -> Embeddings<'static> {
        Embeddings::from_vec(rows.iter().flatten().copied().collect(), rows.len(), 2).unwrap()
    }

    fn cfg(k: usize, distance: Distance) -> KnnConfig {
        KnnConfig {
            k,
            distance,
            query_chunk: 2,
        }
    }

    #[test]
    fn majority_of_neighbours_decides() {
        let train = emb(&[[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0]]);
        let knn = KnnClassifier::fit(
            &train,
            &[0, 0, 0, 1, 1],
            2,
            cfg(3, Distance::Euclidean),
            &Device::Cpu,
        )
        .unwrap();
        let q = emb(&[[0.05, 0.05], [4.9, 5.1], [2.0, 2.0]]);
        // the third query's 3 nearest are the three class-0 points (distance ~2.8 vs ~4.2)
        assert_eq!(knn.predict(&q).unwrap(), vec![0, 1, 0]);
    }

    #[test]
    fn tied_vote_goes_to_the_closer_class() {
        // k = 2 with one neighbour of each class: the nearer one wins, whatever the class index.
        let train = emb(&[[0.0, 0.0], [3.0, 0.0]]);
        let knn = KnnClassifier::fit(
            &train,
            &[1, 0],
            2,
            cfg(2, Distance::Euclidean),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            knn.predict(&emb(&[[1.0, 0.0], [2.0, 0.0]])).unwrap(),
            vec![1, 0]
        );
        // k = 4, 2-2 tie: class 0 at distances 1 and 1 (sum 2), class 1 at 0.5 and 2 (sum 2.5).
        let train = emb(&[[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5], [0.0, -2.0]]);
        let knn = KnnClassifier::fit(
            &train,
            &[0, 0, 1, 1],
            2,
            cfg(4, Distance::Euclidean),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(knn.predict(&emb(&[[0.0, 0.0]])).unwrap(), vec![0]);
    }

    #[test]
    fn cosine_ignores_scale_where_euclidean_does_not() {
        // class 0 points along x (far), class 1 near the origin along y
        let train = emb(&[[10.0, 0.0], [0.0, 0.5]]);
        let labels = [0, 1];
        let q = emb(&[[0.5, 0.1]]);
        let cos =
            KnnClassifier::fit(&train, &labels, 2, cfg(1, Distance::Cosine), &Device::Cpu).unwrap();
        let euc = KnnClassifier::fit(
            &train,
            &labels,
            2,
            cfg(1, Distance::Euclidean),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(cos.predict(&q).unwrap(), vec![0]);
        assert_eq!(euc.predict(&q).unwrap(), vec![1]);
        // cosine distance of the query to (10, 0): 1 - 0.5 / |(0.5, 0.1)|
        let nb = cos.neighbours(&q).unwrap();
        let expected = 1.0 - 0.5 / (0.26f64).sqrt();
        assert!(Tolerance::new(1e-5, 1e-6).close(nb[0][0].1, expected));
    }

    #[test]
    fn neighbours_match_a_brute_force_search() {
        let mut rng = SeededRng::new(3);
        let (n, m, d) = (60, 25, 7);
        let train: Vec<f32> = rng.normal_vec(n * d).iter().map(|&v| v as f32).collect();
        let query: Vec<f32> = rng.normal_vec(m * d).iter().map(|&v| v as f32).collect();
        let labels: Vec<usize> = (0..n).map(|_| rng.below(3)).collect();
        let te = Embeddings::new(&train, n, d).unwrap();
        let qe = Embeddings::new(&query, m, d).unwrap();
        for distance in [Distance::Euclidean, Distance::Cosine] {
            let knn = KnnClassifier::fit(&te, &labels, 3, cfg(4, distance), &Device::Cpu).unwrap();
            let got = knn.neighbours(&qe).unwrap();
            for (qi, nb) in got.iter().enumerate() {
                let q = qe.row(qi);
                let mut all: Vec<(usize, f64)> = (0..n)
                    .map(|ti| {
                        let t = te.row(ti);
                        let dist = match distance {
                            Distance::Euclidean => q
                                .iter()
                                .zip(t)
                                .map(|(a, b)| f64::from(a - b).powi(2))
                                .sum::<f64>()
                                .sqrt(),
                            Distance::Cosine => {
                                let dot: f64 = q.iter().zip(t).map(|(a, b)| f64::from(a * b)).sum();
                                let nq: f64 =
                                    q.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
                                let nt: f64 =
                                    t.iter().map(|a| f64::from(a * a)).sum::<f64>().sqrt();
                                1.0 - dot / (nq * nt)
                            }
                        };
                        (ti, dist)
                    })
                    .collect();
                all.sort_by(|a, b| a.1.total_cmp(&b.1));
                let want: Vec<usize> = all[..4].iter().map(|p| p.0).collect();
                let have: Vec<usize> = nb.iter().map(|p| p.0).collect();
                assert_eq!(have, want, "{distance:?} query {qi}");
                let wd: Vec<f64> = all[..4].iter().map(|p| p.1).collect();
                let hd: Vec<f64> = nb.iter().map(|p| p.1).collect();
                Tolerance::new(1e-4, 1e-4).assert_close(&hd, &wd);
            }
        }
    }

    #[test]
    fn bad_k_labels_or_dimensions_are_errors() {
        let train = emb(&[[0.0, 0.0], [1.0, 1.0]]);
        let dev = &Device::Cpu;
        assert!(KnnClassifier::fit(&train, &[0, 1], 2, cfg(3, Distance::Cosine), dev).is_err());
        assert!(KnnClassifier::fit(&train, &[0, 1], 2, cfg(0, Distance::Cosine), dev).is_err());
        assert!(KnnClassifier::fit(&train, &[0, 2], 2, cfg(1, Distance::Cosine), dev).is_err());
        assert!(KnnClassifier::fit(&train, &[0], 2, cfg(1, Distance::Cosine), dev).is_err());
        let knn = KnnClassifier::fit(&train, &[0, 1], 2, cfg(1, Distance::Cosine), dev).unwrap();
        let q = Embeddings::from_vec(vec![0.0; 3], 1, 3).unwrap();
        assert!(knn.predict(&q).is_err());
    }
}
