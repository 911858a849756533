//! Real datasets re-exported as plain CSV folders (in a temporary directory, never committed) and
//! read back through the CSV folder reader: the prepared windows must equal the built-in
//! reader's, window for window. Needs `../shared/datasets`; skips (or fails under
//! `FLOWFM_REQUIRE_EXTERNAL=1`) without it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flowfm_core::Tolerance;
use flowfm_data::readers::{
    read_adl, read_csv_folder, read_wisdm, AdlOptions, CsvFolderSpec, WisdmOptions, ADL_CLASSES,
    STANDARD_GRAVITY, WISDM_ACTIVITIES,
};
use flowfm_data::{prepare, PrepareConfig, RawDataset, WindowSet};

fn shared(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets")
        .join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        flowfm_core::testing::skip_or_fail(&format!("{} not found", dir.display()));
        None
    }
}

/// Subject name of each window (ids may differ between readers; names must not).
fn window_subjects(ws: &WindowSet, raw: &RawDataset) -> Vec<String> {
    let names: HashMap<i64, &str> = raw
        .recordings
        .iter()
        .map(|r| (r.subject_id, r.subject_name.as_str()))
        .collect();
    ws.subject.iter().map(|s| names[s].to_string()).collect()
}

fn assert_same_windows(csv: &RawDataset, builtin: &RawDataset) {
    assert_eq!(csv.class_names, builtin.class_names);
    assert_eq!(csv.recordings.len(), builtin.recordings.len());
    for (a, b) in csv.recordings.iter().zip(&builtin.recordings) {
        assert_eq!(a.len(), b.len(), "{} vs {}", a.session, b.session);
        assert_eq!(a.labels, b.labels, "{} vs {}", a.session, b.session);
        assert_eq!(a.subject_name, b.subject_name);
    }
    let cfg = PrepareConfig::default();
    let (wa, sa) = prepare(csv, &cfg).unwrap();
    let (wb, sb) = prepare(builtin, &cfg).unwrap();
    assert!(wb.num_windows() > 100, "{sb}");
    assert_eq!(wa.num_windows(), wb.num_windows(), "{sa}\n{sb}");
    assert_eq!(wa.y, wb.y);
    assert_eq!(window_subjects(&wa, csv), window_subjects(&wb, builtin));
    Tolerance::F64.assert_close(&wa.start_time_s, &wb.start_time_s);
    let a: Vec<f64> = wa.x.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = wb.x.iter().map(|&v| f64::from(v)).collect();
    Tolerance::new(1e-5, 1e-6).assert_close(&a, &b);
    assert_eq!(sa.resample, sb.resample);
    assert_eq!(sa.windowing, sb.windowing);
}

/// ADL/HMP re-exported as `<class>/<original name>.csv` (values in g, comma-separated, with a
/// header), read back with the label from the folder and the subject from the file name.
#[test]
fn adl_reexported_as_csv_prepares_to_the_same_windows() {
    let Some(dir) = shared("adl_hmp") else {
        return;
    };
    let builtin = read_adl(&dir, &AdlOptions::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for r in &builtin.recordings {
        let class = r.labels.first().map(|&l| ADL_CLASSES[l as usize]).unwrap();
        let stem = r.session.strip_suffix(".txt").unwrap_or(&r.session);
        let mut s = String::from("acc_x,acc_y,acc_z\n");
        for i in 0..r.len() {
            writeln!(
                s,
                "{},{},{}",
                r.signals[0][i], r.signals[1][i], r.signals[2][i]
            )
            .unwrap();
        }
        let p = tmp.path().join(class).join(format!("{stem}.csv"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }
    let spec = CsvFolderSpec::from_toml_str(
        r#"
        name = "adl_hmp"
        channels = ["acc_x", "acc_y", "acc_z"]
        units = "g"
        rate_hz = 32
        file_pattern = "{label}/Accelerometer-{*}-{subject}.csv"
        classes = ["brush_teeth", "climb_stairs", "comb_hair", "descend_stairs", "drink_glass",
                   "eat_meat", "eat_soup", "getup_bed", "liedown_bed", "pour_water",
                   "sitdown_chair", "standup_chair", "use_telephone", "walk"]
        "#,
    )
    .unwrap();
    let csv = read_csv_folder(tmp.path(), &spec).unwrap();
    assert_eq!(csv.skipped, vec![], "every exported file is read");
    // Put the recordings in the built-in reader's order (it walks the original folder names).
    let by_session: HashMap<String, usize> = builtin
        .recordings
        .iter()
        .enumerate()
        .map(|(i, r)| (r.session.strip_suffix(".txt").unwrap().to_string(), i))
        .collect();
    let mut csv = csv;
    csv.recordings.sort_by_key(|r| {
        let name = r.session.rsplit('/').next().unwrap();
        by_session[name.strip_suffix(".csv").unwrap()]
    });
    assert_same_windows(&csv, &builtin);
}

/// WISDM 2019 watch accelerometer (first 8 subjects) re-exported as one CSV per activity block
/// with nanosecond times and m/s^2 values, labels and subjects from a labels table.
#[test]
fn wisdm_reexported_as_csv_with_a_labels_table_prepares_to_the_same_windows() {
    let Some(dir) = shared("wisdm2019") else {
        return;
    };
    let mut builtin = read_wisdm(&dir, &WisdmOptions::default()).unwrap();
    let subjects: std::collections::BTreeSet<i64> =
        builtin.recordings.iter().map(|r| r.subject_id).collect();
    let keep: Vec<i64> = subjects.into_iter().take(8).collect();
    builtin.recordings.retain(|r| keep.contains(&r.subject_id));
    let tmp = tempfile::tempdir().unwrap();
    let mut table = String::from("file;label;subject\n");
    for (k, r) in builtin.recordings.iter().enumerate() {
        let ts = r.timestamps_s.as_ref().expect("WISDM carries timestamps");
        let mut s = String::from("timestamp_ns\tx\ty\tz\n");
        for (i, &t) in ts.iter().enumerate() {
            let ns = (t * 1e9).round() as i64;
            let g = |c: usize| f64::from(r.signals[c][i]) * STANDARD_GRAVITY;
            writeln!(s, "{ns}\t{}\t{}\t{}", g(0), g(1), g(2)).unwrap();
        }
        let name = format!("{k:05}.tsv");
        std::fs::write(tmp.path().join(&name), s).unwrap();
        let label = WISDM_ACTIVITIES[r.labels[0] as usize];
        writeln!(table, "{name};{label};{}", r.subject_name).unwrap();
    }
    std::fs::write(tmp.path().join("labels.txt"), table).unwrap();
    let mut spec = CsvFolderSpec::from_toml_str(
        r#"
        name = "wisdm2019_watch_accel"
        delimiter = "tab"
        extensions = ["tsv"]
        channels = ["x", "y", "z"]
        channel_names = ["acc_x", "acc_y", "acc_z"]
        units = "m/s^2"
        rate_hz = 20
        time_column = "timestamp_ns"
        time_unit = "ns"
        labels_table = "labels.txt"
        "#,
    )
    .unwrap();
    spec.classes = Some(WISDM_ACTIVITIES.map(String::from).to_vec());
    let csv = read_csv_folder(tmp.path(), &spec).unwrap();
    assert_eq!(
        csv.skipped,
        vec![],
        "no repeated times left after the built-in reader"
    );
    let ids: Vec<i64> = csv.recordings.iter().map(|r| r.subject_id).collect();
    let want: Vec<i64> = builtin.recordings.iter().map(|r| r.subject_id).collect();
    assert_eq!(ids, want, "numeric subject names keep their ids");
    // The built-in reader always keeps explicit timestamps; so does the CSV reader for a clock
    // with real jitter.
    assert!(csv.recordings.iter().all(|r| r.timestamps_s.is_some()));
    assert_same_windows(&csv, &builtin);
}
