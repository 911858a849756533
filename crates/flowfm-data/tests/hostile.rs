//! Hostile but fair input (issue 14): wrong time units, implausible accelerations, unbounded
//! resampling, files that cannot be read, empty results, failed rebuilds and non-finite stores.
//! Every fixture is written by the test in the real format.

use std::path::{Path, PathBuf};

use flowfm_data::prepare::{checksums_fingerprint, store_fingerprint};
use flowfm_data::readers::{
    read_csv, read_hapt, read_wisdm, ColumnRef, CsvSpec, HaptOptions, TimeSpec, TimeUnit,
    WisdmOptions,
};
use flowfm_data::resample::{resample_recording, ResampleConfig};
use flowfm_data::{
    prepare, prepare_store, write_store, AccelLimit, DataError, FiniteCheck, NonFinite, OverRange,
    PrepareConfig, RawDataset, Recording, Reuse, WindowSet, WindowStore,
};

/// One WISDM line per `(timestamp, x m/s^2)`, subject 1600, activity A.
fn wisdm_file(dir: &Path, subject: i64, rows: &[(i64, f64)]) -> PathBuf {
    let p = dir.join(format!("data_{subject}_accel_watch.txt"));
    let body: String = rows
        .iter()
        .map(|(t, x)| format!("{subject},A,{t},{x},0.5,9.8;\n"))
        .collect();
    std::fs::write(&p, body).unwrap();
    p
}

/// `n` rows 50 ms apart (20 Hz) in ns, gently varying values.
fn wisdm_rows(n: usize) -> Vec<(i64, f64)> {
    (0..n)
        .map(|i| (1_000_000_000 + i as i64 * 50_000_000, (i % 7) as f64 * 0.3))
        .collect()
}

fn config() -> PrepareConfig {
    let mut c = PrepareConfig::default();
    c.window.window_secs = 2.0;
    c.window.hop_secs = 2.0;
    c
}

#[test]
fn two_wisdm_lines_one_nanosecond_apart_are_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    wisdm_file(
        dir.path(),
        1600,
        &[(1_000_000_000, 0.1), (1_000_000_001, 0.2)],
    );
    let e = read_wisdm(dir.path(), &WisdmOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("data_1600_accel_watch.txt"), "{msg}");
    assert!(msg.contains("outside the plausible"), "{msg}");
}

#[test]
fn wisdm_timestamps_in_ms_name_the_unit_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(i64, f64)> = (0..200).map(|i| (1_000 + i * 50, 0.1)).collect();
    wisdm_file(dir.path(), 1600, &rows);
    let msg = read_wisdm(dir.path(), &WisdmOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("data_1600_accel_watch.txt"), "{msg}");
    assert!(
        msg.contains("timestamps look like ms, expected ns"),
        "{msg}"
    );
}

#[test]
fn csv_times_declared_ns_but_written_in_us_name_the_unit_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rec.csv");
    let mut body = String::from("t,x,y,z\n");
    for i in 0..100 {
        body.push_str(&format!("{},0.1,0.2,1.0\n", i * 10_000)); // 100 Hz in us
    }
    std::fs::write(&p, body).unwrap();
    let mut spec = CsvSpec::xyz_fixed_rate(100.0);
    spec.time = TimeSpec::Column {
        column: ColumnRef::Name("t".into()),
        unit: TimeUnit::Nanoseconds,
        nominal_rate_hz: 100.0,
    };
    let msg = read_csv(&p, &spec).unwrap_err().to_string();
    assert!(msg.contains("rec.csv"), "{msg}");
    assert!(
        msg.contains("timestamps look like us, expected ns"),
        "{msg}"
    );
}

/// A recording of acc_x/y/z in g, regular at `rate_hz` or with explicit timestamps.
fn recording(session: &str, x: Vec<f32>, rate_hz: f64, ts: Option<Vec<f64>>) -> Recording {
    let n = x.len();
    Recording {
        subject_id: 1,
        subject_name: "1".into(),
        session: session.into(),
        sample_rate_hz: rate_hz,
        timestamps_s: ts,
        start_time_s: 0.0,
        channel_names: vec!["acc_x".into(), "acc_y".into(), "acc_z".into()],
        signals: vec![x, vec![0.0; n], vec![1.0; n]],
        labels: vec![0; n],
    }
}

fn dataset(recordings: Vec<Recording>) -> RawDataset {
    RawDataset {
        name: "synthetic".into(),
        class_names: vec!["a".into()],
        recordings,
        source_checksums: vec![],
        skipped: vec![],
    }
}

#[test]
fn resampling_one_nanosecond_steps_is_a_bounded_error_not_an_abort() {
    // The reported case: before, this asked for 9.7 GB (the filter kernel) and aborted.
    let rec = recording(
        "two-lines",
        vec![0.1, 0.2],
        20.0,
        Some(vec![1.0, 1.0 + 1e-9]),
    );
    let e = resample_recording(&rec, &ResampleConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("two-lines"), "{msg}");
    assert!(msg.contains("max_memory_mib"), "{msg}");
    // prepare names the implausible rate first.
    let e = prepare(&dataset(vec![rec]), &config()).unwrap_err();
    assert!(e.to_string().contains("outside the plausible"), "{e}");
}

#[test]
fn the_memory_bound_is_computed_before_allocating_and_configurable() {
    // One hour at 100 Hz -> 30 Hz needs a few MiB: fine at the default, an error at 1 MiB.
    let n = 360_000;
    let rec = recording("hour", vec![0.5; n], 100.0, None);
    let out = resample_recording(&rec, &ResampleConfig::default()).unwrap();
    assert_eq!(out.segments[0].len(), 108_000);
    let tight = ResampleConfig {
        max_memory_mib: 1,
        ..ResampleConfig::default()
    };
    let msg = resample_recording(&rec, &tight).unwrap_err().to_string();
    assert!(msg.contains("over the limit of 1 MiB"), "{msg}");
}

#[test]
fn a_target_rate_outside_wearable_rates_is_a_config_error() {
    for rate in [1e6, 0.5] {
        let c = ResampleConfig {
            target_rate_hz: rate,
            ..ResampleConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert!(
            matches!(e, DataError::Config { ref field, .. } if field == "target_rate_hz"),
            "{e}"
        );
    }
}

#[test]
fn an_overflowing_value_in_a_raw_file_is_an_error_not_a_nan_count() {
    for big in [1e300, 1e39] {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = wisdm_rows(100);
        rows[40].1 = big;
        wisdm_file(dir.path(), 1600, &rows);
        let raw = read_wisdm(dir.path(), &WisdmOptions::default()).unwrap();
        let e = prepare(&raw, &config()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("data_1600_accel_watch"), "{msg}");
        assert!(msg.contains("acc_x sample 40"), "{msg}");
        assert!(msg.contains("beyond the plausible +/-64 g"), "{msg}");
    }
}

#[test]
fn accelerations_beyond_the_bound_can_be_clipped_and_counted() {
    let mut x = vec![0.3f32; 600];
    x[10] = 80.0;
    x[20] = -1e30;
    x[30] = f32::INFINITY;
    x[40] = f32::NAN;
    let raw = dataset(vec![recording("s", x, 30.0, None)]);
    let e = prepare(&raw, &config()).unwrap_err();
    assert!(e.to_string().contains("acc_x sample 10"), "{e}");
    let mut c = config();
    c.accel = AccelLimit {
        max_abs_g: 64.0,
        over_range: OverRange::Clip,
    };
    let (ws, summary) = prepare(&raw, &c).unwrap();
    assert_eq!(summary.clipped_accel_samples, 3);
    assert_eq!(summary.resample.non_finite_samples, 1);
    assert!(summary
        .to_string()
        .contains("accelerometer samples clipped"));
    assert!(ws.x.iter().all(|v| v.abs() <= 64.0 + 1e-3));
    // Clipping changes the output, so it is part of the fingerprint; the error mode is not.
    assert_ne!(
        store_fingerprint("i", &c),
        store_fingerprint("i", &config())
    );
    assert_eq!(
        store_fingerprint("i", &PrepareConfig::default()),
        store_fingerprint(
            "i",
            &PrepareConfig {
                accel: AccelLimit {
                    max_abs_g: 100.0,
                    over_range: OverRange::Error
                },
                ..PrepareConfig::default()
            }
        )
    );
    c.accel.max_abs_g = f64::NAN;
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("accel.max_abs_g"), "{e}");
}

#[cfg(unix)]
#[test]
fn unreadable_entries_named_like_data_files_are_counted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    wisdm_file(dir.path(), 1600, &wisdm_rows(100));
    // A symlink to a real file is followed.
    let real = tempfile::tempdir().unwrap();
    let target = wisdm_file(real.path(), 1603, &wisdm_rows(100));
    std::os::unix::fs::symlink(&target, dir.path().join("data_1603_accel_watch.txt")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("gone.txt"),
        dir.path().join("data_1601_accel_watch.txt"),
    )
    .unwrap();
    let a = dir.path().join("data_1602_accel_watch.txt");
    std::os::unix::fs::symlink(&a, &a).unwrap();
    std::fs::create_dir(dir.path().join("data_1604_accel_watch.txt")).unwrap();
    let raw = read_wisdm(dir.path(), &WisdmOptions::default()).unwrap();
    let subjects: std::collections::BTreeSet<i64> =
        raw.recordings.iter().map(|r| r.subject_id).collect();
    assert_eq!(subjects.into_iter().collect::<Vec<_>>(), vec![1600, 1603]);
    let reasons: Vec<&str> = raw.skipped.iter().map(|s| s.reason.as_str()).collect();
    let has = |what: &str, name: &str| reasons.iter().any(|r| r.contains(what) && r.contains(name));
    assert!(
        has("cannot be followed", "data_1601_accel_watch.txt"),
        "{reasons:?}"
    );
    assert!(
        has("cannot be followed", "data_1602_accel_watch.txt"),
        "{reasons:?}"
    );
    assert!(
        has("directory named like a data file", "data_1604"),
        "{reasons:?}"
    );
    assert_eq!(raw.skipped.iter().map(|s| s.count).sum::<usize>(), 3);
    let (_, summary) = prepare(&raw, &config()).unwrap();
    assert_eq!(summary.reader_skipped_total(), 3);
    assert!(summary.to_string().contains("data_1601_accel_watch.txt"));
}

/// A HAPT `RawData` folder with experiment 1 of user 1 (`n` samples) and the given labels.
fn hapt_dir(labels: &str, n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("RawData");
    std::fs::create_dir(&raw).unwrap();
    std::fs::write(raw.join("labels.txt"), labels).unwrap();
    let body: String = (0..n)
        .map(|i| format!("{} 0.1 0.9\n", (i % 5) as f64 * 0.01))
        .collect();
    std::fs::write(raw.join("acc_exp01_user01.txt"), &body).unwrap();
    std::fs::write(raw.join("gyro_exp01_user01.txt"), &body).unwrap();
    dir
}

#[test]
fn a_hapt_label_line_with_experiment_minus_one_is_an_error_at_its_line() {
    let dir = hapt_dir("1 1 5 1 100\n-1 1 5 101 200\n", 300);
    let e = read_hapt(dir.path(), &HaptOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("labels.txt:2:"), "{msg}");
    assert!(msg.contains("experiment -1"), "{msg}");
}

#[test]
fn hapt_label_segments_of_missing_experiments_are_counted() {
    let dir = hapt_dir("1 1 5 1 100\n2 1 5 1 50\n2 1 4 51 80\n", 300);
    let raw = read_hapt(dir.path(), &HaptOptions::default()).unwrap();
    let orphan = raw
        .skipped
        .iter()
        .find(|s| s.reason.contains("without an acc_exp file"))
        .expect("orphan segments counted");
    assert_eq!(orphan.count, 2);
}

#[test]
fn subjects_and_datasets_without_windows_are_reported() {
    let long = recording("long", vec![0.1; 300], 30.0, None);
    let mut short = recording("short", vec![0.1; 20], 30.0, None);
    short.subject_id = 2;
    short.subject_name = "two".into();
    let (_, summary) = prepare(&dataset(vec![long, short.clone()]), &config()).unwrap();
    assert_eq!(summary.windows(), 5);
    let empty: Vec<i64> = summary
        .empty_subjects()
        .iter()
        .map(|s| s.subject_id)
        .collect();
    assert_eq!(empty, vec![2]);
    let e = summary.check_nonempty(false).unwrap_err().to_string();
    assert!(
        e.contains("two (id 2)") && e.contains("--allow-empty"),
        "{e}"
    );
    summary.check_nonempty(true).unwrap();
    assert!(summary.to_string().contains("subjects without any window"));

    let (_, none) = prepare(&dataset(vec![short]), &config()).unwrap();
    let e = none.check_nonempty(false).unwrap_err().to_string();
    assert!(e.contains("no windows at all"), "{e}");
    let (_, nothing) = prepare(&dataset(vec![]), &config()).unwrap();
    assert!(nothing.check_nonempty(false).is_err());
}

fn windows(n: usize) -> WindowSet {
    let mut w = WindowSet::empty(
        "synthetic",
        30.0,
        vec!["acc_x".into(), "acc_y".into()],
        4,
        vec!["a".into()],
    );
    for i in 0..n {
        w.x.extend((0..8).map(|k| (i * 8 + k) as f32));
        w.y.push(0);
        w.subject.push(i as i64 % 3);
        w.start_time_s.push(i as f64);
    }
    w
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_forced_rebuild_that_fails_keeps_the_old_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h5");
    let cfg = config();
    let fp = checksums_fingerprint("synthetic", &[], &[]);
    let (w, s) = prepare(
        &dataset(vec![recording("r", vec![0.1; 300], 30.0, None)]),
        &cfg,
    )
    .unwrap();
    prepare_store(&fp, &cfg, &path, Reuse::IfCurrent, || {
        Ok((w.clone(), s.clone()))
    })
    .unwrap();
    let before = std::fs::read(&path).unwrap();

    let e = prepare_store(&fp, &cfg, &path, Reuse::Never, || {
        Err(DataError::parse("raw.txt", 7, "bad line"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("raw.txt:7"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(names(dir.path()), vec!["s.h5"]);

    // Reuse::Never rebuilds even when current; IfCurrent reuses.
    let mut built = false;
    let p = prepare_store(&fp, &cfg, &path, Reuse::Never, || {
        built = true;
        Ok((w.clone(), s.clone()))
    })
    .unwrap();
    assert!(built && !p.reused);
    assert_eq!(p.replaced_because.as_deref(), Some("a rebuild was forced"));
    let p = prepare_store(&fp, &cfg, &path, Reuse::IfCurrent, || panic!("must reuse")).unwrap();
    assert!(p.reused);
}

#[cfg(target_os = "linux")]
#[test]
fn stale_temp_files_of_dead_writers_are_removed_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = dir.path().join(format!(".flowfm-tmp-{dead}-0-s.h5"));
    std::fs::write(&stale, b"half a store").unwrap();
    let live = dir.path().join(format!(
        ".flowfm-tmp-{}-999999-other.h5",
        std::process::id()
    ));
    std::fs::write(&live, b"being written").unwrap();
    let path = dir.path().join("s.h5");
    let cfg = config();
    let (w, s) = prepare(
        &dataset(vec![recording("r", vec![0.1; 300], 30.0, None)]),
        &cfg,
    )
    .unwrap();
    let p = prepare_store("x", &cfg, &path, Reuse::IfCurrent, || Ok((w, s))).unwrap();
    assert_eq!(p.removed_temp_files, vec![stale.clone()]);
    assert!(!stale.exists() && live.exists() && path.exists());
}

#[test]
fn a_failed_store_write_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    // An invalid set (x too short) fails validation before any file; a directory at the target
    // makes the final rename fail after the HDF5 file was written.
    let target = dir.path().join("s.h5");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let e = write_store(&target, &windows(5), 1, "fp", "").unwrap_err();
    assert!(e.to_string().contains("s.h5"), "{e}");
    assert_eq!(names(dir.path()), vec!["s.h5"]);
}

#[test]
fn non_finite_windows_are_an_error_naming_the_store_and_first_window_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.h5");
    let mut w = windows(10);
    w.x[3 * 8 + 5] = f32::NAN; // window 3, channel acc_y (index 1), sample 1
    w.x[7 * 8] = f32::INFINITY;
    write_store(&path, &w, 1, "fp", "").unwrap();
    let store = WindowStore::open(&path).unwrap();
    assert_eq!(store.non_finite_windows().unwrap(), vec![3, 7]);
    let msg = store
        .check_finite(NonFinite::Error)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nan.h5"), "{msg}");
    assert!(msg.contains("window 3 (subject 0, start 3 s)"), "{msg}");
    assert!(msg.contains("channel acc_y sample 1"), "{msg}");
    assert!(msg.contains("2 of 10 windows"), "{msg}");
    let (_, check) = WindowStore::open_checked(&path, NonFinite::Skip).unwrap();
    assert_eq!(
        check,
        FiniteCheck {
            skipped: vec![3, 7],
            kept: vec![0, 1, 2, 4, 5, 6, 8, 9],
        }
    );
    let kept = store.load_subset(&check.kept).unwrap();
    assert!(kept.x.iter().all(|v| v.is_finite()));

    let clean = dir.path().join("clean.h5");
    write_store(&clean, &windows(10), 1, "fp", "").unwrap();
    let (_, check) = WindowStore::open_checked(&clean, NonFinite::Error).unwrap();
    assert!(check.skipped.is_empty() && check.kept.len() == 10);
}

#[cfg(unix)]
#[test]
fn unreadable_entries_named_like_data_folders_are_counted() {
    use flowfm_data::readers::{read_adl, AdlOptions};
    let dir = tempfile::tempdir().unwrap();
    let walk = dir.path().join("HMP_Dataset").join("Walk");
    std::fs::create_dir_all(&walk).unwrap();
    let body: String = (0..100)
        .map(|i| format!("{} 31 40\n", 20 + i % 5))
        .collect();
    std::fs::write(
        walk.join("Accelerometer-2011-03-24-09-51-07-walk-f1.txt"),
        body,
    )
    .unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("gone"),
        dir.path().join("HMP_Dataset").join("Climb_stairs"),
    )
    .unwrap();
    let raw = read_adl(dir.path(), &AdlOptions::default()).unwrap();
    assert_eq!(raw.recordings.len(), 1);
    assert_eq!(raw.skipped.len(), 1, "{:?}", raw.skipped);
    assert!(
        raw.skipped[0].reason.contains("Climb_stairs"),
        "{:?}",
        raw.skipped
    );
}
