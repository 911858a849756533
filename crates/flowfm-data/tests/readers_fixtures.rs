//! Every reader on small fixtures written in the published formats (`tests/fixtures`), with
//! hand-computable expected values, plus the bad-input cases: each must be an error naming the
//! file and line, or a counted skip.

use std::io::Write;
use std::path::{Path, PathBuf};

use flowfm_core::Tolerance;
use flowfm_data::readers::{
    read_adl, read_capture24, read_csv, read_dataset, read_hapt, read_opportunity, read_pamap2,
    read_realworld, read_uea_ts, read_wisdm, restrict_classes, sha256_hex, AdlOptions,
    Capture24Options, ChecksumPolicy, ColumnRef, CsvSpec, DatasetKind, HaptOptions,
    OpportunityOptions, Pamap2Options, RealWorldOptions, TimeSpec, TimeUnit, UeaOptions, Units,
    WisdmOptions,
};
use flowfm_data::{DataError, RawDataset};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn close(actual: &[f32], expected: &[f64]) {
    let a: Vec<f64> = actual.iter().map(|&v| f64::from(v)).collect();
    Tolerance::F32.assert_close(&a, expected);
}

fn skipped(ds: &RawDataset) -> usize {
    ds.skipped.iter().map(|s| s.count).sum()
}

/// Asserts `err` is a parse error at `file:line`.
fn assert_parse_error(err: &DataError, file: &str, line: usize) {
    let msg = err.to_string();
    match err {
        DataError::Parse { path, line: l, .. } => {
            assert!(path.to_string_lossy().ends_with(file), "{msg}");
            assert_eq!(*l, line, "{msg}");
            assert!(msg.contains(&format!("{file}:{line}:")), "{msg}");
        }
        other => panic!("expected a parse error at {file}:{line}, got {other}"),
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------- WISDM

#[test]
fn wisdm_converts_to_g_and_splits_activity_blocks() {
    let ds = read_wisdm(&fixtures().join("wisdm"), &WisdmOptions::default()).unwrap();
    assert_eq!(ds.recordings.len(), 3);
    let a = &ds.recordings[0];
    assert_eq!((a.subject_id, a.labels.clone()), (1700, vec![0, 0, 0]));
    close(&a.signals[0], &[1.0, 0.0, 0.5]);
    close(&a.signals[1], &[0.0, 2.0, 0.0]);
    close(&a.signals[2], &[-1.0, 0.0, 0.0]);
    Tolerance::F64.assert_close(a.timestamps_s.as_ref().unwrap(), &[1.0, 1.05, 1.1]);
    let b = &ds.recordings[1];
    assert_eq!(b.labels, vec![1, 1]);
    let s = &ds.recordings[2];
    assert_eq!(
        (s.subject_id, s.labels[0]),
        (1701, 17),
        "S is the 18th activity (no N)"
    );
    assert_eq!(ds.class_names[17], "folding");
    assert_eq!(skipped(&ds), 1, "the repeated timestamp is counted");
    assert_eq!(ds.source_checksums.len(), 2);
}

#[test]
fn wisdm_reads_gzip_files_like_plain_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("wisdm/raw/watch/accel/data_1700_accel_watch.txt");
    let gz = tmp.path().join("data_1700_accel_watch.txt.gz");
    write(&gz, &gzip(&std::fs::read(&src).unwrap()));
    let a = read_wisdm(tmp.path(), &WisdmOptions::default()).unwrap();
    let plain = read_wisdm(&fixtures().join("wisdm"), &WisdmOptions::default()).unwrap();
    assert_eq!(a.recordings[..2], plain.recordings[..2]);
}

#[test]
fn wisdm_bad_lines_are_errors_naming_file_and_line() {
    let cases: [(&str, usize); 8] = [
        ("1800,A,1,0,0,0;\n1800,A,2,0,0;\n", 2),
        ("1800,A,1,0,0,0;\n1800,N,2,0,0,0;\n", 2),
        ("1800,A,1,0,0,0;\n1800,A,2,NaN,0,0;\n", 2),
        ("1800,A,1,0,inf,0;\n", 1),
        ("1800,A,5,0,0,0;\n1800,A,4,0,0,0;\n", 2),
        ("1800,A,1,0,0,0;\n1801,A,2,0,0,0;\n", 2),
        ("1800,A,1,0,0,0;\n1800,A,two,0,0,0;\n", 2),
        ("1800,A,1,0,0,0;\n\n1800,A,2,0,0,0,7;\n", 3),
    ];
    for (text, line) in cases {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path().join("data_1800_accel_watch.txt"),
            text.as_bytes(),
        );
        let err = read_wisdm(tmp.path(), &WisdmOptions::default()).unwrap_err();
        assert_parse_error(&err, "data_1800_accel_watch.txt", line);
    }
}

#[test]
fn wisdm_empty_and_truncated_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("data_1800_accel_watch.txt");
    write(&p, b"");
    let err = read_wisdm(tmp.path(), &WisdmOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("data_1800_accel_watch.txt"),
        "{err}"
    );
    std::fs::remove_file(&p).unwrap();
    let gz = gzip(b"1800,A,1,0,0,0;\n1800,A,2,0,0,0;\n1800,A,3,0,0,0;\n");
    let q = tmp.path().join("data_1800_accel_watch.txt.gz");
    write(&q, &gz[..gz.len() - 9]);
    let err = read_wisdm(tmp.path(), &WisdmOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err}");
    assert!(err.to_string().contains("gzip"), "{err}");
}

#[test]
fn manifest_checksums_are_verified_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes =
        std::fs::read(fixtures().join("wisdm/raw/watch/accel/data_1700_accel_watch.txt")).unwrap();
    let rel = "raw/watch/accel/data_1700_accel_watch.txt";
    write(&tmp.path().join(rel), &bytes);
    let good = sha256_hex(&bytes);
    let manifest = |sha: &str| {
        format!(
            "path\tstaged_bytes\tstaged_sha256\n{rel}\t{}\t{sha}\n",
            bytes.len()
        )
    };
    write(&tmp.path().join("FILES.tsv"), manifest(&good).as_bytes());
    let ds = read_wisdm(tmp.path(), &WisdmOptions::default()).unwrap();
    assert_eq!(ds.source_checksums, vec![(rel.to_string(), good.clone())]);
    let wrong = good.replace(&good[..1], if good.starts_with('0') { "1" } else { "0" });
    write(&tmp.path().join("FILES.tsv"), manifest(&wrong).as_bytes());
    let err = read_wisdm(tmp.path(), &WisdmOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let opts = WisdmOptions {
        checksums: ChecksumPolicy::RecordOnly,
        ..WisdmOptions::default()
    };
    assert!(read_wisdm(tmp.path(), &opts).is_ok());
}

// ---------------------------------------------------------------- ADL

#[test]
fn adl_decodes_codes_with_the_manual_formula_and_skips_model_trials() {
    let ds = read_dataset(DatasetKind::AdlHmp, &fixtures().join("adl")).unwrap();
    assert_eq!(
        ds.recordings.len(),
        2,
        "the _MODEL excerpt is not read by default"
    );
    let drink = &ds.recordings[0];
    assert_eq!((drink.subject_id, drink.subject_name.as_str()), (102, "m2"));
    assert_eq!(ds.class_names[drink.labels[0] as usize], "drink_glass");
    let walk = &ds.recordings[1];
    assert_eq!((walk.subject_id, walk.len()), (1, 4));
    // 0 -> -1.5 g, 21 -> -0.5 g, 42 -> 0.5 g, 63 -> 1.5 g.
    close(&walk.signals[0], &[-1.5, 1.5, -0.5, 0.5]);
    close(&walk.signals[2], &[-0.5, 0.5, -1.5, 1.5]);
    let with_model = read_adl(
        &fixtures().join("adl"),
        &AdlOptions {
            include_model_trials: true,
            ..AdlOptions::default()
        },
    )
    .unwrap();
    assert_eq!(with_model.recordings.len(), 3);
    let walk_only = restrict_classes(&ds, &["walk"]).unwrap();
    assert_eq!(walk_only.recordings.len(), 1);
    assert_eq!(skipped(&walk_only), 1);
    assert!(restrict_classes(&ds, &["juggling"]).is_err());
}

#[test]
fn adl_out_of_range_codes_and_short_lines_are_errors() {
    for (text, line) in [("1 2 3\r\n1 2 64\r\n", 2), ("1 2\r\n", 1), ("1 2 x\r\n", 1)] {
        let tmp = tempfile::tempdir().unwrap();
        let name = "Accelerometer-2011-01-01-00-00-00-walk-f1.txt";
        write(&tmp.path().join("Walk").join(name), text.as_bytes());
        let err = read_adl(tmp.path(), &AdlOptions::default()).unwrap_err();
        assert_parse_error(&err, name, line);
    }
}

// ---------------------------------------------------------------- HAPT

#[test]
fn hapt_labels_follow_one_based_inclusive_segments() {
    let ds = read_hapt(&fixtures().join("hapt"), &HaptOptions::default()).unwrap();
    assert_eq!(ds.recordings.len(), 2);
    let e1 = &ds.recordings[0];
    assert_eq!((e1.subject_id, e1.session.as_str()), (1, "exp01_user01"));
    // activity 5 on samples 2..=4, activity 7 on 5..=5 (1-based) -> classes 4 and 6.
    assert_eq!(e1.labels, vec![-1, 4, 4, 4, 6, -1, -1, -1]);
    let x: Vec<f64> = (0..8).map(|i| 1.0 + i as f64 / 8.0).collect();
    close(&e1.signals[0], &x);
    let gx: Vec<f64> = (0..8).map(|i| i as f64 * 0.125).collect();
    close(&e1.signals[3], &gx);
    let e2 = &ds.recordings[1];
    assert_eq!((e2.subject_id, e2.labels.clone()), (3, vec![11; 5]));
    close(&e2.signals[5], &[2.0; 5]);
    assert_eq!(ds.source_checksums.len(), 5);
}

#[test]
fn hapt_segment_past_the_end_and_unknown_activity_are_errors() {
    let copy = |labels: &str| {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["acc_exp01_user01.txt", "gyro_exp01_user01.txt"] {
            let b = std::fs::read(fixtures().join("hapt/RawData").join(f)).unwrap();
            write(&tmp.path().join("RawData").join(f), &b);
        }
        write(&tmp.path().join("RawData/labels.txt"), labels.as_bytes());
        tmp
    };
    let tmp = copy("1 1 5 2 9\n");
    let err = read_hapt(tmp.path(), &HaptOptions::default()).unwrap_err();
    assert!(err.to_string().contains("runs past"), "{err}");
    let tmp = copy("1 1 5 2 4\n1 1 13 5 6\n");
    assert_parse_error(
        &read_hapt(tmp.path(), &HaptOptions::default()).unwrap_err(),
        "labels.txt",
        2,
    );
}

// ---------------------------------------------------------------- PAMAP2

#[test]
fn pamap2_skips_nan_rows_and_leaves_transients_unlabelled() {
    let dir = fixtures().join("pamap2");
    // The fixture has the published file name but not its content: verification must fail.
    let err = read_pamap2(&dir, &Pamap2Options::default()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let opts = Pamap2Options {
        checksums: ChecksumPolicy::RecordOnly,
        ..Pamap2Options::default()
    };
    let ds = read_pamap2(&dir, &opts).unwrap();
    let r = &ds.recordings[0];
    assert_eq!((r.subject_id, r.len(), r.num_channels()), (101, 7, 6));
    assert_eq!(skipped(&ds), 1);
    // rows 0..8 minus the NaN row 3; activities 0,0,1,1,-,4,24,0.
    assert_eq!(r.labels, vec![-1, -1, 0, 0, 3, 17, -1]);
    close(&r.signals[0], &[0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0]);
    close(&r.signals[2], &[1.0; 7]);
    close(&r.signals[3], &[0.0, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7]);
    let t = r.timestamps_s.as_ref().expect("the NaN row leaves a gap");
    Tolerance::new(1e-12, 1e-9).assert_close(t, &[8.38, 8.39, 8.40, 8.42, 8.43, 8.44, 8.45]);
}

#[test]
fn pamap2_unknown_activity_and_short_rows_are_errors() {
    let src = std::fs::read_to_string(fixtures().join("pamap2/Protocol/subject101.dat")).unwrap();
    let opts = Pamap2Options {
        checksums: ChecksumPolicy::RecordOnly,
        ..Pamap2Options::default()
    };
    let lines: Vec<&str> = src.lines().collect();
    let mut bad_act: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    bad_act[1] = bad_act[1].replacen(" 0 ", " 8 ", 1);
    let mut short: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    short[4] = short[4].rsplit_once(' ').unwrap().0.to_string();
    for (rows, line) in [(bad_act, 2), (short, 5)] {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path().join("Protocol/subject102.dat"),
            rows.join("\n").as_bytes(),
        );
        assert_parse_error(
            &read_pamap2(tmp.path(), &opts).unwrap_err(),
            "subject102.dat",
            line,
        );
    }
}

// ---------------------------------------------------------------- Opportunity

#[test]
fn opportunity_reads_right_wrist_milli_g_and_locomotion() {
    let dir = fixtures().join("opportunity");
    assert!(matches!(
        read_opportunity(&dir, &OpportunityOptions::default()).unwrap_err(),
        DataError::Checksum { .. }
    ));
    let opts = OpportunityOptions {
        checksums: ChecksumPolicy::RecordOnly,
        ..OpportunityOptions::default()
    };
    let ds = read_opportunity(&dir, &opts).unwrap();
    let r = &ds.recordings[0];
    assert_eq!((r.subject_id, r.session.as_str()), (1, "S1-ADL1"));
    assert_eq!(skipped(&ds), 1);
    close(&r.signals[0], &[0.0, 1.0, 3.0, 4.0, 5.0]);
    close(&r.signals[1], &[-0.5; 5]);
    // locomotion 0,1,(2 dropped),2,4,5 -> -1, stand, walk, sit, lie
    assert_eq!(r.labels, vec![-1, 0, 1, 2, 3]);
    assert_eq!(ds.class_names, vec!["stand", "walk", "sit", "lie"]);
}

// ---------------------------------------------------------------- RealWorld

fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn realworld_tree() -> tempfile::TempDir {
    let src = fixtures().join("realworld");
    let read = |p: &str| std::fs::read(src.join(p)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let z1 = zip_of(&[
        (
            "acc_walking_forearm.csv",
            read("proband1/acc_walking_forearm.csv"),
        ),
        (
            "acc_walking_chest.csv",
            read("proband1/acc_walking_chest.csv"),
        ),
    ]);
    write(&tmp.path().join("proband1/data/acc_walking_csv.zip"), &z1);
    let inner = zip_of(&[(
        "acc_climbingup_2_forearm.csv",
        read("proband2/acc_climbingup_2_forearm.csv"),
    )]);
    let z2 = zip_of(&[("acc_climbingup_2_csv.zip", inner)]);
    write(
        &tmp.path().join("proband2/data/acc_climbingup_csv.zip"),
        &z2,
    );
    tmp
}

#[test]
fn realworld_reads_one_position_from_zips_and_nested_zips() {
    let tmp = realworld_tree();
    let ds = read_realworld(tmp.path(), &RealWorldOptions::default()).unwrap();
    assert_eq!(ds.recordings.len(), 2);
    let walk = &ds.recordings[0];
    assert_eq!(
        (
            walk.subject_id,
            ds.class_names[walk.labels[0] as usize].as_str()
        ),
        (1, "walking")
    );
    close(&walk.signals[0], &[1.0, 0.0, 0.0]);
    close(&walk.signals[2], &[0.0, 0.0, -0.5]);
    assert_eq!(skipped(&ds), 1, "the repeated attr_time is counted");
    let climb = &ds.recordings[1];
    assert_eq!(
        (
            climb.subject_id,
            ds.class_names[climb.labels[0] as usize].as_str()
        ),
        (2, "climbingup")
    );
    assert_eq!(ds.source_checksums.len(), 2);
    let chest = read_realworld(
        tmp.path(),
        &RealWorldOptions {
            position: "chest".into(),
            ..RealWorldOptions::default()
        },
    )
    .unwrap();
    assert_eq!(chest.recordings.len(), 1);
    let bad = RealWorldOptions {
        position: "wrist".into(),
        ..RealWorldOptions::default()
    };
    assert!(matches!(
        read_realworld(tmp.path(), &bad).unwrap_err(),
        DataError::Config { .. }
    ));
}

#[test]
fn realworld_corrupt_zip_is_an_error_naming_the_archive() {
    let tmp = realworld_tree();
    let p = tmp.path().join("proband1/data/acc_walking_csv.zip");
    let b = std::fs::read(&p).unwrap();
    write(&p, &b[..b.len() / 2]);
    let err = read_realworld(tmp.path(), &RealWorldOptions::default()).unwrap_err();
    assert!(err.to_string().contains("acc_walking_csv.zip"), "{err}");
}

// ---------------------------------------------------------------- Capture-24

#[test]
fn capture24_keeps_raw_annotations_or_maps_them_with_the_dictionary() {
    let dir = fixtures().join("capture24");
    let ds = read_capture24(&dir, &Capture24Options::default()).unwrap();
    assert_eq!(
        ds.class_names,
        vec!["17250 walking, household;MET 2.0", "7030 sleeping;MET 0.95"]
    );
    let r = &ds.recordings[0];
    assert_eq!((r.subject_id, r.labels.clone()), (1, vec![1, 1, -1, 0, -1]));
    assert!(
        r.timestamps_s.is_none(),
        "a steady 100 Hz clock stays regular"
    );
    // 2016-11-13 10:00:00 is 1479031200 s after 1970-01-01 (calendar.timegm).
    Tolerance::F64.assert_close(&[r.start_time_s], &[1_479_031_200.0]);
    close(&r.signals[0], &[0.5, 0.5, 1.0, 1.5, 2.0]);
    let mapped = read_capture24(
        &dir,
        &Capture24Options {
            label_scheme: Some("label:Walmsley2020".into()),
            ..Capture24Options::default()
        },
    )
    .unwrap();
    assert_eq!(mapped.class_names, vec!["light", "sleep"]);
    assert_eq!(mapped.recordings[0].labels, vec![1, 1, -1, 0, -1]);
}

#[test]
fn capture24_reads_gzip_and_rejects_bad_times() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read(fixtures().join("capture24/P001.csv")).unwrap();
    write(&tmp.path().join("P007.csv.gz"), &gzip(&text));
    let ds = read_capture24(tmp.path(), &Capture24Options::default()).unwrap();
    assert_eq!(
        (ds.recordings[0].subject_id, ds.recordings[0].len()),
        (7, 5)
    );
    let bad = String::from_utf8(text)
        .unwrap()
        .replace("10:00:00.020000", "10:00:61.0");
    write(&tmp.path().join("P007.csv.gz"), &gzip(bad.as_bytes()));
    let err = read_capture24(tmp.path(), &Capture24Options::default()).unwrap_err();
    assert_parse_error(&err, "P007.csv.gz", 4);
}

// ---------------------------------------------------------------- UEA .ts

#[test]
fn uea_ts_cases_become_recordings_and_missing_cases_are_counted() {
    let ds = read_uea_ts(&fixtures().join("uea/ToyMotion.ts"), &UeaOptions::default()).unwrap();
    assert_eq!(ds.name, "ToyMotion");
    assert_eq!(ds.class_names, vec!["walk", "run"]);
    assert_eq!(ds.recordings.len(), 2);
    assert_eq!(skipped(&ds), 1);
    let r = &ds.recordings[0];
    assert_eq!(r.labels, vec![1, 1, 1]);
    close(&r.signals[1], &[-1.0, -2.0, -3.0]);
    close(&ds.recordings[1].signals[0], &[0.5, 0.25, 0.125]);
}

#[test]
fn uea_ts_bad_cases_are_errors() {
    let header = "@problemName T\n@dimensions 2\n@equalLength true\n@seriesLength 2\n@classLabel true a b\n@data\n";
    for (body, line) in [
        ("1,2:3,4:c\n", 7),
        ("1,2:a\n", 7),
        ("1,2:3,4,5:a\n", 7),
        ("1,2:3,x:a\n", 7),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t.ts");
        write(&p, format!("{header}{body}").as_bytes());
        assert_parse_error(
            &read_uea_ts(&p, &UeaOptions::default()).unwrap_err(),
            "t.ts",
            line,
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.ts");
    write(&p, b"@problemName T\n@classLabel true a\n");
    assert!(matches!(
        read_uea_ts(&p, &UeaOptions::default()).unwrap_err(),
        DataError::Format { .. }
    ));
}

// ---------------------------------------------------------------- generic CSV

fn phone_spec() -> CsvSpec {
    CsvSpec {
        delimiter: b';',
        has_header: true,
        channels: ["acc x", "acc y", "acc z"]
            .map(|s| ColumnRef::Name(s.into()))
            .to_vec(),
        channel_names: None,
        units: vec![Units::MetersPerSecond2],
        time: TimeSpec::Column {
            column: ColumnRef::Index(0),
            unit: TimeUnit::Milliseconds,
            nominal_rate_hz: 50.0,
        },
        label_column: Some(ColumnRef::Name("activity".into())),
        dataset_name: "phone".into(),
        subject_id: 42,
        subject_name: "me".into(),
        checksums: ChecksumPolicy::RecordOnly,
    }
}

#[test]
fn csv_maps_columns_units_time_and_labels() {
    let ds = read_csv(&fixtures().join("csv/phone.csv"), &phone_spec()).unwrap();
    let r = &ds.recordings[0];
    assert_eq!(r.channel_names, vec!["acc x", "acc y", "acc z"]);
    close(&r.signals[0], &[1.0, 0.0, 0.0, 0.5]);
    close(&r.signals[2], &[0.0, 0.0, -1.0, 0.0]);
    assert_eq!(ds.class_names, vec!["sit", "walk"]);
    assert_eq!(r.labels, vec![1, 1, -1, 0]);
    assert!(r.timestamps_s.is_none());
    Tolerance::F64.assert_close(&[r.start_time_s], &[1.0]);
    assert_eq!(ds.source_checksums.len(), 1);
    let fixed = CsvSpec {
        time: TimeSpec::FixedRate { rate_hz: 25.0 },
        units: vec![Units::Scale(2.0)],
        ..phone_spec()
    };
    let ds = read_csv(&fixtures().join("csv/phone.csv"), &fixed).unwrap();
    close(&ds.recordings[0].signals[1], &[0.0, 19.6133, 0.0, 0.0]);
}

#[test]
fn csv_bad_spec_and_bad_rows_are_errors() {
    let missing = CsvSpec {
        channels: vec![ColumnRef::Name("gyro".into())],
        ..phone_spec()
    };
    assert_parse_error(
        &read_csv(&fixtures().join("csv/phone.csv"), &missing).unwrap_err(),
        "phone.csv",
        1,
    );
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.csv");
    write(&p, b"t_ms;acc x;acc y;acc z;activity\n1;0;0;0;a\n2;0;0;a\n");
    assert_parse_error(&read_csv(&p, &phone_spec()).unwrap_err(), "x.csv", 3);
    write(
        &p,
        b"t_ms;acc x;acc y;acc z;activity\n2;0;0;0;a\n1;0;0;0;a\n",
    );
    assert_parse_error(&read_csv(&p, &phone_spec()).unwrap_err(), "x.csv", 3);
    let no_channels = CsvSpec {
        channels: vec![],
        ..phone_spec()
    };
    assert!(matches!(
        read_csv(&p, &no_channels).unwrap_err(),
        DataError::Config { .. }
    ));
}
