//! Subject-wise splits: k-fold, leave-one-subject-out, train/val/test ratios, and a validation
//! split inside a training fold. A subject's windows are never on two sides of a split, and every
//! split is a deterministic function of the per-window subject ids and the seed.

use std::collections::BTreeMap;

use flowfm_core::SeededRng;

use crate::error::Result;
use crate::resample::config_err;

/// The windows of a set of subjects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectSet {
    /// Subject ids, ascending.
    pub subjects: Vec<i64>,
    /// Window indices, ascending.
    pub indices: Vec<usize>,
}

/// One fold: train and test sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fold {
    /// Training side.
    pub train: SubjectSet,
    /// Test side.
    pub test: SubjectSet,
}

/// A three-way split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainValTest {
    /// Training side.
    pub train: SubjectSet,
    /// Validation side.
    pub val: SubjectSet,
    /// Test side.
    pub test: SubjectSet,
}

/// Window indices of each subject, subjects ascending.
fn by_subject(subject: &[i64]) -> BTreeMap<i64, Vec<usize>> {
    let mut m: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &s) in subject.iter().enumerate() {
        m.entry(s).or_default().push(i);
    }
    m
}

fn set_of(groups: &BTreeMap<i64, Vec<usize>>, subjects: &[i64]) -> SubjectSet {
    let mut subjects = subjects.to_vec();
    subjects.sort_unstable();
    let mut indices: Vec<usize> = subjects
        .iter()
        .flat_map(|s| groups[s].iter().copied())
        .collect();
    indices.sort_unstable();
    SubjectSet { subjects, indices }
}

/// The distinct subjects in a seeded random order.
fn shuffled_subjects(groups: &BTreeMap<i64, Vec<usize>>, seed: u64, label: &str) -> Vec<i64> {
    let mut s: Vec<i64> = groups.keys().copied().collect();
    SeededRng::new(seed).derive(label).shuffle(&mut s);
    s
}

/// Subject-wise k-fold: subjects are shuffled with `seed` and dealt round-robin into `k` folds
/// (fold sizes in subjects differ by at most one); fold `i` tests on its subjects and trains on
/// all others.
pub fn k_fold(subject: &[i64], k: usize, seed: u64) -> Result<Vec<Fold>> {
    let groups = by_subject(subject);
    if k < 2 || k > groups.len() {
        return Err(config_err(
            "k",
            format!(
                "must lie in 2..={} (the number of subjects), got {k}",
                groups.len()
            ),
        ));
    }
    let order = shuffled_subjects(&groups, seed, "k_fold");
    let mut folds: Vec<Vec<i64>> = vec![Vec::new(); k];
    for (i, s) in order.into_iter().enumerate() {
        folds[i % k].push(s);
    }
    Ok((0..k)
        .map(|f| {
            let train: Vec<i64> = (0..k)
                .filter(|&g| g != f)
                .flat_map(|g| folds[g].clone())
                .collect();
            Fold {
                train: set_of(&groups, &train),
                test: set_of(&groups, &folds[f]),
            }
        })
        .collect())
}

/// Leave-one-subject-out: one fold per subject (ascending ids), testing on that subject.
pub fn leave_one_subject_out(subject: &[i64]) -> Result<Vec<Fold>> {
    let groups = by_subject(subject);
    if groups.len() < 2 {
        return Err(config_err(
            "subjects",
            format!(
                "leave-one-subject-out needs >= 2 subjects, got {}",
                groups.len()
            ),
        ));
    }
    let all: Vec<i64> = groups.keys().copied().collect();
    Ok(all
        .iter()
        .map(|&s| {
            let train: Vec<i64> = all.iter().copied().filter(|&t| t != s).collect();
            Fold {
                train: set_of(&groups, &train),
                test: set_of(&groups, &[s]),
            }
        })
        .collect())
}

/// Fractions of subjects for a [`ratio_split`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitFractions {
    /// Training fraction.
    pub train: f64,
    /// Validation fraction.
    pub val: f64,
    /// Test fraction.
    pub test: f64,
}

impl SplitFractions {
    /// Checks that each fraction is in [0, 1], train > 0, and they sum to 1.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("train", self.train),
            ("val", self.val),
            ("test", self.test),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(config_err(
                    field,
                    format!("fraction must lie in [0, 1], got {v}"),
                ));
            }
        }
        if self.train <= 0.0 {
            return Err(config_err("train", "fraction must be > 0"));
        }
        let sum = self.train + self.val + self.test;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(config_err(
                "train",
                format!("fractions sum to {sum}, not 1"),
            ));
        }
        Ok(())
    }
}

/// Splits subjects (shuffled with `seed`) by the given fractions. Counts are rounded to the
/// nearest subject; every side with a positive fraction gets at least one subject (an error when
/// there are too few subjects for that).
pub fn ratio_split(subject: &[i64], fractions: SplitFractions, seed: u64) -> Result<TrainValTest> {
    fractions.validate()?;
    let groups = by_subject(subject);
    let n = groups.len();
    let need = [fractions.train, fractions.val, fractions.test]
        .iter()
        .filter(|&&f| f > 0.0)
        .count();
    if n < need {
        return Err(config_err(
            "subjects",
            format!("{n} subjects cannot fill {need} non-empty sides"),
        ));
    }
    let count = |f: f64| -> usize {
        if f > 0.0 {
            ((f * n as f64).round() as usize).max(1)
        } else {
            0
        }
    };
    let mut n_test = count(fractions.test);
    let mut n_val = count(fractions.val);
    // Keep at least one training subject; take back from the larger of val/test.
    while n_test + n_val >= n {
        if n_val >= n_test && n_val > usize::from(fractions.val > 0.0) {
            n_val -= 1;
        } else if n_test > usize::from(fractions.test > 0.0) {
            n_test -= 1;
        } else {
            break;
        }
    }
    let order = shuffled_subjects(&groups, seed, "ratio_split");
    let test = &order[..n_test];
    let val = &order[n_test..n_test + n_val];
    let train = &order[n_test + n_val..];
    Ok(TrainValTest {
        train: set_of(&groups, train),
        val: set_of(&groups, val),
        test: set_of(&groups, test),
    })
}

/// Splits a training side again by subject: about `val_fraction` of its subjects (at least one,
/// at most all but one) become validation. `subject` is the per-window subject array `train`
/// indexes into.
pub fn validation_split(
    subject: &[i64],
    train: &SubjectSet,
    val_fraction: f64,
    seed: u64,
) -> Result<(SubjectSet, SubjectSet)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(config_err(
            "val_fraction",
            format!("must lie strictly between 0 and 1, got {val_fraction}"),
        ));
    }
    if let Some(&i) = train.indices.iter().find(|&&i| i >= subject.len()) {
        return Err(config_err(
            "indices",
            format!(
                "window index {i} out of range for {} windows",
                subject.len()
            ),
        ));
    }
    let sub: Vec<i64> = train.indices.iter().map(|&i| subject[i]).collect();
    let groups = by_subject(&sub);
    let n = groups.len();
    if n < 2 {
        return Err(config_err(
            "subjects",
            format!("a validation split needs >= 2 training subjects, got {n}"),
        ));
    }
    let n_val = ((val_fraction * n as f64).round() as usize).clamp(1, n - 1);
    let order = shuffled_subjects(&groups, seed, "validation_split");
    let remap = |s: SubjectSet| SubjectSet {
        subjects: s.subjects,
        indices: s.indices.iter().map(|&j| train.indices[j]).collect(),
    };
    let val = remap(set_of(&groups, &order[..n_val]));
    let mut tr = remap(set_of(&groups, &order[n_val..]));
    tr.indices.sort_unstable();
    let mut val = val;
    val.indices.sort_unstable();
    Ok((tr, val))
}
