//! Subject-wise splits: no subject on two sides, full coverage, determinism (incl. property tests).

use std::collections::BTreeSet;

use flowfm_data::split::{
    k_fold, leave_one_subject_out, ratio_split, validation_split, SplitFractions, SubjectSet,
};
use flowfm_data::DataError;
use proptest::prelude::*;

/// Subjects of each window for `n` windows spread unevenly over `subjects` subjects.
fn subjects(n: usize, subjects: i64) -> Vec<i64> {
    (0..n)
        .map(|i| {
            let k = if i % 3 == 0 { i } else { i / 7 };
            1000 + (k as i64 % subjects)
        })
        .collect()
}

fn subjects_of(s: &[i64], set: &SubjectSet) -> BTreeSet<i64> {
    set.indices.iter().map(|&i| s[i]).collect()
}

/// The sides are subject-disjoint, consistent with their subject lists, and cover `all` exactly.
fn check_partition(s: &[i64], sides: &[&SubjectSet], all: &[usize]) {
    let mut covered: Vec<usize> = sides.iter().flat_map(|x| x.indices.clone()).collect();
    covered.sort_unstable();
    let mut all = all.to_vec();
    all.sort_unstable();
    assert_eq!(covered, all, "every window exactly once");
    for (a, x) in sides.iter().enumerate() {
        let subj = subjects_of(s, x);
        assert_eq!(
            subj,
            x.subjects.iter().copied().collect(),
            "subject list matches windows"
        );
        for y in &sides[a + 1..] {
            assert!(
                subj.is_disjoint(&subjects_of(s, y)),
                "a subject on two sides"
            );
        }
    }
}

#[test]
fn k_fold_tests_every_subject_exactly_once() {
    let s = subjects(500, 23);
    let all: Vec<usize> = (0..s.len()).collect();
    let folds = k_fold(&s, 5, 7).unwrap();
    assert_eq!(folds.len(), 5);
    let mut tested: Vec<i64> = Vec::new();
    for f in &folds {
        check_partition(&s, &[&f.train, &f.test], &all);
        tested.extend(&f.test.subjects);
        let n = f.test.subjects.len();
        assert!(n == 4 || n == 5, "23 subjects over 5 folds: {n}");
    }
    tested.sort_unstable();
    let distinct: Vec<i64> = s
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(tested, distinct);
}

#[test]
fn splits_are_deterministic_for_a_seed() {
    let s = subjects(300, 17);
    assert_eq!(k_fold(&s, 4, 1).unwrap(), k_fold(&s, 4, 1).unwrap());
    assert_ne!(k_fold(&s, 4, 1).unwrap(), k_fold(&s, 4, 2).unwrap());
    let f = SplitFractions {
        train: 0.6,
        val: 0.2,
        test: 0.2,
    };
    assert_eq!(
        ratio_split(&s, f, 3).unwrap(),
        ratio_split(&s, f, 3).unwrap()
    );
}

#[test]
fn leave_one_subject_out_has_one_fold_per_subject() {
    let s = subjects(120, 6);
    let all: Vec<usize> = (0..s.len()).collect();
    let folds = leave_one_subject_out(&s).unwrap();
    assert_eq!(folds.len(), 6);
    for f in &folds {
        assert_eq!(f.test.subjects.len(), 1);
        check_partition(&s, &[&f.train, &f.test], &all);
    }
    assert!(leave_one_subject_out(&[4, 4, 4]).is_err());
}

#[test]
fn ratio_split_rounds_to_whole_subjects() {
    let s = subjects(1000, 20);
    let all: Vec<usize> = (0..s.len()).collect();
    let r = ratio_split(
        &s,
        SplitFractions {
            train: 0.7,
            val: 0.1,
            test: 0.2,
        },
        9,
    )
    .unwrap();
    assert_eq!(
        (
            r.train.subjects.len(),
            r.val.subjects.len(),
            r.test.subjects.len()
        ),
        (14, 2, 4)
    );
    check_partition(&s, &[&r.train, &r.val, &r.test], &all);
    // Tiny fractions still get one subject; a zero fraction gets none.
    let r = ratio_split(
        &s,
        SplitFractions {
            train: 0.98,
            val: 0.01,
            test: 0.01,
        },
        9,
    )
    .unwrap();
    assert_eq!((r.val.subjects.len(), r.test.subjects.len()), (1, 1));
    let r = ratio_split(
        &s,
        SplitFractions {
            train: 0.8,
            val: 0.0,
            test: 0.2,
        },
        9,
    )
    .unwrap();
    assert!(r.val.indices.is_empty());
}

#[test]
fn bad_split_settings_are_config_errors() {
    let s = subjects(50, 4);
    let field = |e: DataError| match e {
        DataError::Config { field, .. } => field,
        other => panic!("expected a config error, got {other}"),
    };
    assert_eq!(field(k_fold(&s, 5, 0).unwrap_err()), "k");
    assert_eq!(field(k_fold(&s, 1, 0).unwrap_err()), "k");
    assert_eq!(
        field(
            ratio_split(
                &s,
                SplitFractions {
                    train: 0.5,
                    val: 0.2,
                    test: 0.2
                },
                0
            )
            .unwrap_err()
        ),
        "train"
    );
    assert_eq!(
        field(
            ratio_split(
                &s,
                SplitFractions {
                    train: 0.5,
                    val: -0.1,
                    test: 0.6
                },
                0
            )
            .unwrap_err()
        ),
        "val"
    );
    let all = SubjectSet {
        subjects: vec![],
        indices: (0..50).collect(),
    };
    assert_eq!(
        field(validation_split(&s, &all, 1.0, 0).unwrap_err()),
        "val_fraction"
    );
}

#[test]
fn a_training_fold_splits_again_by_subject() {
    let s = subjects(400, 12);
    for f in k_fold(&s, 4, 5).unwrap() {
        let (tr, val) = validation_split(&s, &f.train, 0.2, 11).unwrap();
        check_partition(&s, &[&tr, &val, &f.test], &(0..s.len()).collect::<Vec<_>>());
        assert_eq!(val.subjects.len(), 2, "20% of 9 training subjects, rounded");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn k_fold_never_puts_a_subject_on_both_sides(
        s in prop::collection::vec(0i64..15, 2..300),
        k in 2usize..6,
        seed in any::<u64>(),
    ) {
        let distinct = s.iter().collect::<BTreeSet<_>>().len();
        let all: Vec<usize> = (0..s.len()).collect();
        match k_fold(&s, k, seed) {
            Ok(folds) => {
                prop_assert!(k <= distinct);
                for f in &folds {
                    check_partition(&s, &[&f.train, &f.test], &all);
                    prop_assert!(!f.test.indices.is_empty());
                }
            }
            Err(_) => prop_assert!(k > distinct),
        }
    }

    #[test]
    fn ratio_and_validation_splits_never_share_a_subject(
        s in prop::collection::vec(-5i64..25, 3..300),
        train in 0.3f64..0.9,
        val_share in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let rest = 1.0 - train;
        let f = SplitFractions { train, val: rest * val_share, test: rest * (1.0 - val_share) };
        let all: Vec<usize> = (0..s.len()).collect();
        if let Ok(r) = ratio_split(&s, f, seed) {
            check_partition(&s, &[&r.train, &r.val, &r.test], &all);
            prop_assert!(!r.train.indices.is_empty());
            if r.train.subjects.len() >= 2 {
                let (tr, va) = validation_split(&s, &r.train, 0.25, seed).unwrap();
                check_partition(&s, &[&tr, &va], &r.train.indices);
            }
        }
    }
}
