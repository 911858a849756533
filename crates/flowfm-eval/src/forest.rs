//! The random-forest comparator: smartcore's seeded `RandomForestClassifier` on a
//! [`FeatureTable`] of hand-crafted window features (see [`crate::features`]).

use flowfm_core::SeededRng;
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::error::{EvalError, Result};
use crate::features::FeatureTable;

/// Settings of the forest (smartcore's parameters, with the seed drawn from a [`SeededRng`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestConfig {
    /// Number of trees.
    pub n_trees: u16,
    /// Maximum tree depth (`None`: grow until pure or too small to split).
    pub max_depth: Option<u16>,
    /// Minimum samples in a leaf.
    pub min_samples_leaf: usize,
    /// Minimum samples to split a node.
    pub min_samples_split: usize,
    /// Features tried per split (`None`: `floor(sqrt(features))`).
    pub features_per_split: Option<usize>,
}

impl Default for ForestConfig {
    /// 100 fully grown trees, `sqrt(features)` candidates per split.
    fn default() -> Self {
        Self {
            n_trees: 100,
            max_depth: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            features_per_split: None,
        }
    }
}

type Inner = RandomForestClassifier<f64, usize, DenseMatrix<f64>, Vec<usize>>;

/// A fitted random forest.
#[derive(Debug)]
pub struct RandomForest {
    inner: Inner,
    names: Vec<String>,
    seed: u64,
}

impl RandomForest {
    /// Fits a forest to `features` and their `labels`; the smartcore seed is drawn from `rng`.
    ///
    /// # Shapes
    /// - `features`: `N` rows; `labels`: `N`.
    pub fn fit(
        features: &FeatureTable,
        labels: &[usize],
        config: &ForestConfig,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        if features.rows() == 0 {
            return Err(EvalError::invalid("features", "no training rows"));
        }
        if labels.len() != features.rows() {
            return Err(EvalError::mismatch(
                "features",
                "labels",
                format!("{} rows vs {} labels", features.rows(), labels.len()),
            ));
        }
        if config.n_trees == 0 {
            return Err(EvalError::invalid("config.n_trees", "must be positive"));
        }
        if config.min_samples_leaf == 0 || config.min_samples_split < 2 {
            return Err(EvalError::invalid(
                "config.min_samples_leaf",
                "min_samples_leaf must be >= 1 and min_samples_split >= 2",
            ));
        }
        if let Some(m) = config.features_per_split {
            if m == 0 || m > features.cols() {
                return Err(EvalError::invalid(
                    "config.features_per_split",
                    format!("{m} is not in 1..={}", features.cols()),
                ));
            }
        }
        // smartcore seeds its own generator from a u64; we draw that u64 from the run's stream
        let seed = rng.below(usize::MAX) as u64;
        let mut params = RandomForestClassifierParameters::default()
            .with_n_trees(config.n_trees)
            .with_min_samples_leaf(config.min_samples_leaf)
            .with_min_samples_split(config.min_samples_split)
            .with_seed(seed);
        if let Some(d) = config.max_depth {
            params = params.with_max_depth(d);
        }
        if let Some(m) = config.features_per_split {
            params = params.with_m(m);
        }
        let x = to_matrix(features)?;
        let inner = RandomForestClassifier::fit(&x, &labels.to_vec(), params).map_err(|e| {
            EvalError::Forest {
                stage: "fit",
                message: e.to_string(),
            }
        })?;
        Ok(Self {
            inner,
            names: features.names().to_vec(),
            seed,
        })
    }

    /// The seed handed to smartcore (for the run record).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Predicted class of every row; the columns must be those the forest was fitted on.
    pub fn predict(&self, features: &FeatureTable) -> Result<Vec<usize>> {
        if features.names() != self.names.as_slice() {
            return Err(EvalError::mismatch(
                "fitted features",
                "features",
                format!(
                    "columns differ ({} fitted vs {} given)",
                    self.names.len(),
                    features.cols()
                ),
            ));
        }
        if features.rows() == 0 {
            return Ok(Vec::new());
        }
        let x = to_matrix(features)?;
        self.inner.predict(&x).map_err(|e| EvalError::Forest {
            stage: "predict",
            message: e.to_string(),
        })
    }
}

fn to_matrix(t: &FeatureTable) -> Result<DenseMatrix<f64>> {
    DenseMatrix::new(t.rows(), t.cols(), t.values().to_vec(), false).map_err(|e| {
        EvalError::Forest {
            stage: "fit",
            message: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::Windows;
    use crate::features::{FeatureConfig, FeatureExtractor};
    use std::f64::consts::PI;

    /// `n` windows of 3 x 150 samples at 30 Hz: class 0 walks slowly (1 Hz, small amplitude),
    /// class 1 runs (3.5 Hz, large amplitude); both with noise and random phase.
    fn synthetic(n: usize, rng: &mut SeededRng) -> (Vec<f32>, Vec<usize>) {
        let (fs, len) = (30.0, 150);
        let mut data = Vec::with_capacity(n * 3 * len);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % 2;
            let (f, a) = if class == 0 { (1.0, 0.2) } else { (3.5, 1.0) };
            for c in 0..3 {
                let phase = rng.uniform_range(0.0, 2.0 * PI);
                for l in 0..len {
                    let t = l as f64 / fs;
                    let g = if c == 2 { 1.0 } else { 0.0 };
                    let v = g + a * (2.0 * PI * f * t + phase).sin() + 0.05 * rng.normal();
                    data.push(v as f32);
                }
            }
            labels.push(class);
        }
        (data, labels)
    }

    #[test]
    fn forest_separates_two_obviously_different_classes() {
        let mut rng = SeededRng::new(21);
        let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 150).unwrap();
        let (train, ytrain) = synthetic(40, &mut rng);
        let (test, ytest) = synthetic(30, &mut rng);
        let ftrain = fx
            .extract(&Windows::new(&train, 40, 3, 150).unwrap())
            .unwrap();
        let ftest = fx
            .extract(&Windows::new(&test, 30, 3, 150).unwrap())
            .unwrap();
        let cfg = ForestConfig {
            n_trees: 20,
            ..ForestConfig::default()
        };
        let rf = RandomForest::fit(&ftrain, &ytrain, &cfg, &mut rng.derive("rf")).unwrap();
        let pred = rf.predict(&ftest).unwrap();
        let correct = pred.iter().zip(&ytest).filter(|(a, b)| a == b).count();
        assert_eq!(correct, ytest.len(), "predictions {pred:?}");
    }

    #[test]
    fn forest_is_reproducible_from_the_seed() {
        let mut rng = SeededRng::new(5);
        // an ambiguous problem (labels unrelated to features) so that predictions depend on the trees
        let rows = 40;
        let values: Vec<f64> = rng.normal_vec(rows * 4);
        let labels: Vec<usize> = (0..rows).map(|_| rng.below(3)).collect();
        let names = (0..4).map(|i| format!("f{i}")).collect();
        let t = FeatureTable::new(names, values, rows).unwrap();
        let cfg = ForestConfig {
            n_trees: 7,
            max_depth: Some(3),
            ..ForestConfig::default()
        };
        let a = RandomForest::fit(&t, &labels, &cfg, &mut SeededRng::new(1)).unwrap();
        let b = RandomForest::fit(&t, &labels, &cfg, &mut SeededRng::new(1)).unwrap();
        assert_eq!(a.seed(), b.seed());
        assert_eq!(a.predict(&t).unwrap(), b.predict(&t).unwrap());
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let t =
            FeatureTable::new(vec!["a".into(), "b".into()], vec![0.0, 1.0, 2.0, 3.0], 2).unwrap();
        let mut rng = SeededRng::new(0);
        let cfg = ForestConfig::default();
        assert!(RandomForest::fit(&t, &[0], &cfg, &mut rng).is_err());
        let bad_m = ForestConfig {
            features_per_split: Some(3),
            ..ForestConfig::default()
        };
        assert!(RandomForest::fit(&t, &[0, 1], &bad_m, &mut rng).is_err());
        let rf =
            RandomForest::fit(&t, &[0, 1], &ForestConfig { n_trees: 3, ..cfg }, &mut rng).unwrap();
        let other = FeatureTable::new(vec!["a".into(), "c".into()], vec![0.0, 1.0], 1).unwrap();
        assert!(rf.predict(&other).is_err());
    }
}
