//! `prepare` and the store on a real dataset (ADL/HMP, 32 Hz wrist accelerometer), when
//! `../shared/datasets` is present.

use std::path::Path;

use flowfm_data::readers::{read_dataset, DatasetKind};
use flowfm_data::{prepare, write_store, PrepareConfig, WindowStore};

#[test]
fn adl_windows_are_finite_carry_gravity_and_round_trip_through_the_store() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/datasets/adl_hmp"
    ));
    if !dir.is_dir() {
        flowfm_core::testing::skip_or_fail(&format!("{} not found", dir.display()));
        return;
    }
    let raw = read_dataset(DatasetKind::AdlHmp, dir).unwrap();
    let (ws, summary) = prepare(&raw, &PrepareConfig::default()).unwrap();
    ws.validate().unwrap();
    assert!(ws.num_windows() > 100, "{summary}");
    assert_eq!((ws.channels, ws.window_len), (3, 300));
    assert!(ws.x.iter().all(|v| v.is_finite()));
    // Every window is accounted for by class or as unlabelled.
    let labelled: usize = summary.windows_per_class.iter().sum();
    assert_eq!(labelled + summary.unlabelled_windows, ws.num_windows());
    let subjects: std::collections::BTreeSet<i64> = ws.subject.iter().copied().collect();
    assert_eq!(
        subjects.len(),
        summary.subjects.iter().filter(|s| s.windows > 0).count()
    );
    // A wrist accelerometer in g measures gravity: the mean per-sample norm is close to 1.
    let (c, l) = (ws.channels, ws.window_len);
    let mut norm_sum = 0.0;
    for i in 0..ws.num_windows() {
        let w = ws.window(i);
        for t in 0..l {
            norm_sum += (0..c)
                .map(|k| f64::from(w[k * l + t]).powi(2))
                .sum::<f64>()
                .sqrt();
        }
    }
    let mean_norm = norm_sum / (ws.num_windows() * l) as f64;
    assert!((0.85..1.2).contains(&mean_norm), "mean |a| = {mean_norm} g");

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("adl.h5");
    write_store(&path, &ws, 1, "fp", &PrepareConfig::default().canonical()).unwrap();
    let store = WindowStore::open(&path).unwrap();
    assert_eq!(store.load().unwrap(), ws);
}
