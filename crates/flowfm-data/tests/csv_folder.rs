//! The CSV folder reader on small folders written by each test in several layouts (header or
//! none; `,` `;` and tab; ms, ns, date-time and fixed-rate time; labels from a column, a table
//! and a file-name pattern; subjects per folder), and its bad-input errors.

use std::io::Write;
use std::path::Path;

use flowfm_core::Tolerance;
use flowfm_data::readers::{read_csv_folder, CsvColumn, CsvFolderSpec, STANDARD_GRAVITY};
use flowfm_data::{prepare, DataError, PrepareConfig, RawDataset};

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn close(actual: &[f32], expected: &[f64]) {
    let a: Vec<f64> = actual.iter().map(|&v| f64::from(v)).collect();
    Tolerance::F32.assert_close(&a, expected);
}

fn skip_count(ds: &RawDataset, reason_part: &str) -> usize {
    ds.skipped
        .iter()
        .filter(|s| s.reason.contains(reason_part))
        .map(|s| s.count)
        .sum()
}

fn assert_parse_error(err: &DataError, file: &str, line: usize) {
    let msg = err.to_string();
    match err {
        DataError::Parse { path, line: l, .. } => {
            assert!(path.to_string_lossy().ends_with(file), "{msg}");
            assert_eq!(*l, line, "{msg}");
        }
        other => panic!("expected a parse error at {file}:{line}, got {other}"),
    }
}

const SEMICOLON_SPEC: &str = r#"
name = "phone"
delimiter = ";"
channels = ["ax", "ay", "az", "gx"]
channel_names = ["acc_x", "acc_y", "acc_z", "gyro_x"]
units = ["m/s^2", "m/s^2", "m/s^2", "deg/s"]
rate_hz = 100.0
time_column = "t"
time_unit = "ms"
label_column = "activity"
subject_from_folder = true
"#;

#[test]
fn semicolon_ms_label_column_and_subject_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let g = STANDARD_GRAVITY;
    // p07: regular 100 Hz with one repeated time (skipped, counted).
    write(
        &tmp.path().join("p07/day1.csv"),
        format!(
            "t;ax;ay;az;gx;activity\n0;{g};0;0;180;walk\n10;0;{g};0;0;walk\n10;5;5;5;5;walk\n\
             20;0;0;{g};-90;sit\n30;0;0;-{g};0;\n"
        )
        .as_bytes(),
    );
    // p12: gzip'd, with a gap (the time axis becomes explicit).
    write(
        &tmp.path().join("p12/day1.csv.gz"),
        &gzip(
            b"t;ax;ay;az;gx;activity\n1000;0;0;0;0;sit\n1010;0;0;0;0;sit\n1020;0;0;0;0;sit\n\
              1030;0;0;0;0;sit\n5000;0;0;0;0;run\n5010;0;0;0;0;run\n",
        ),
    );
    write(&tmp.path().join("README.md"), b"not data");
    let spec = CsvFolderSpec::from_toml_str(SEMICOLON_SPEC).unwrap();
    let ds = read_csv_folder(tmp.path(), &spec).unwrap();
    assert_eq!(ds.name, "phone");
    assert_eq!(ds.class_names, vec!["run", "sit", "walk"]);
    assert_eq!(ds.recordings.len(), 2);
    let a = &ds.recordings[0];
    assert_eq!((a.subject_name.as_str(), a.subject_id), ("p07", 7));
    assert_eq!(a.session, "p07/day1.csv");
    assert_eq!(a.channel_names, vec!["acc_x", "acc_y", "acc_z", "gyro_x"]);
    assert_eq!(a.len(), 4);
    close(&a.signals[0], &[1.0, 0.0, 0.0, 0.0]);
    close(&a.signals[2], &[0.0, 0.0, 1.0, -1.0]);
    close(
        &a.signals[3],
        &[std::f64::consts::PI, 0.0, -std::f64::consts::FRAC_PI_2, 0.0],
    );
    assert_eq!(a.labels, vec![2, 2, 1, -1]);
    assert!(a.timestamps_s.is_none(), "a regular 100 Hz clock");
    let b = &ds.recordings[1];
    assert_eq!((b.subject_name.as_str(), b.subject_id), ("p12", 12));
    let ts = b
        .timestamps_s
        .as_ref()
        .expect("the gap makes the axis explicit");
    Tolerance::F64.assert_close(ts, &[1.0, 1.01, 1.02, 1.03, 5.0, 5.01]);
    assert_eq!(b.labels, vec![1, 1, 1, 1, 0, 0]);
    assert_eq!(skip_count(&ds, "repeated time"), 1);
    assert_eq!(skip_count(&ds, "extension"), 1);
    // Checksums: both files by relative path, plus the spec.
    let names: Vec<&str> = ds.source_checksums.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, vec!["p07/day1.csv", "p12/day1.csv.gz", "<csv spec>"]);
    // prepare works unchanged and reports the reader's skips.
    let mut cfg = PrepareConfig::default();
    cfg.resample.target_rate_hz = 100.0;
    cfg.window.window_secs = 0.02;
    cfg.window.hop_secs = 0.01;
    let (ws, summary) = prepare(&ds, &cfg).unwrap();
    assert_eq!(ws.channels, 4);
    assert!(ws.num_windows() >= 3, "{summary}");
    assert!(summary.to_string().contains("repeated time"), "{summary}");
}

#[test]
fn tab_no_header_fixed_rate_labels_table_and_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = |v: f64, n: usize| -> String {
        (0..n)
            .map(|i| format!("{i}\t{v}\t{}\t1000\n", -v))
            .collect()
    };
    write(
        &tmp.path().join("data/rec_a.tsv"),
        rows(500.0, 5).as_bytes(),
    );
    write(
        &tmp.path().join("data/nested/rec_b.tsv.gz"),
        &gzip(rows(-250.0, 7).as_bytes()),
    );
    write(&tmp.path().join("data/rec_c.tsv"), rows(0.0, 3).as_bytes());
    write(
        &tmp.path().join("data/labels.csv"),
        b"file,label,subject\nrec_a.tsv,walk,user3\nnested/rec_b.tsv.gz,,user9\n",
    );
    let mut spec = CsvFolderSpec::new(
        vec![
            CsvColumn::Index(1),
            CsvColumn::Index(2),
            CsvColumn::Index(3),
        ],
        25.0,
    );
    spec.delimiter = "\t".into();
    spec.header = false;
    spec.units = vec!["mg".into()];
    spec.labels_table = Some("labels.csv".into());
    let ds = read_csv_folder(&tmp.path().join("data"), &spec).unwrap();
    assert_eq!(ds.class_names, vec!["walk"]);
    assert_eq!(ds.recordings.len(), 2);
    let (a, b) = (&ds.recordings[0], &ds.recordings[1]);
    // Walk order is sorted by path: nested/ sorts before rec_a.tsv.
    assert_eq!(a.session, "nested/rec_b.tsv.gz");
    assert_eq!((a.subject_name.as_str(), a.subject_id), ("user9", 9));
    assert_eq!(a.labels, vec![-1; 7]);
    close(&a.signals[0], &[-0.25; 7]);
    assert_eq!(a.channel_names, vec!["ch0", "ch1", "ch2"]);
    assert_eq!((b.subject_id, b.len()), (3, 5));
    assert_eq!(b.labels, vec![0; 5]);
    close(&b.signals[1], &[-0.5; 5]);
    close(&b.signals[2], &[1.0; 5]);
    assert!((b.sample_rate_hz - 25.0).abs() < 1e-12 && b.timestamps_s.is_none());
    assert_eq!(skip_count(&ds, "not listed in the labels table"), 1);
    assert_eq!(skip_count(&ds, "extension"), 0, "the table is not data");
    // The table is part of the inputs' checksums: editing it changes the fingerprint.
    let sums: Vec<&str> = ds.source_checksums.iter().map(|s| s.0.as_str()).collect();
    assert!(sums.contains(&"<labels table> labels.csv"), "{sums:?}");
    write(
        &tmp.path().join("data/labels.csv"),
        b"file,label,subject\nrec_a.tsv,run,user3\nnested/rec_b.tsv.gz,,user9\n",
    );
    let again = read_csv_folder(&tmp.path().join("data"), &spec).unwrap();
    assert_ne!(again.source_checksums, ds.source_checksums);
    assert_eq!(again.class_names, vec!["run"]);
}

#[test]
fn datetime_column_and_file_name_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("s1_walk_fast.csv"),
        b"time,x,y,z\n2019-05-02 10:00:00.000,1,0,0\n2019-05-02 10:00:00.050,0,1,0\n\
          2019-05-02 10:00:00.100,0,0,1\n",
    );
    write(
        &tmp.path().join("s2_sit.csv"),
        b"time,x,y,z\n2019-05-02 11:00:00,0,0,1\n2019-05-02 11:00:00.05,0,0,1\n",
    );
    write(&tmp.path().join("notes.csv"), b"time,x,y,z\n");
    let spec = CsvFolderSpec::from_toml_str(
        r#"
        channels = ["x", "y", "z"]
        rate_hz = 20
        time_column = "time"
        time_unit = "datetime"
        file_pattern = "{subject}_{label}.csv"
        "#,
    )
    .unwrap();
    let ds = read_csv_folder(tmp.path(), &spec).unwrap();
    assert_eq!(ds.class_names, vec!["sit", "walk_fast"]);
    assert_eq!(skip_count(&ds, "file_pattern"), 1);
    let a = &ds.recordings[0];
    assert_eq!((a.subject_name.as_str(), a.subject_id), ("s1", 1));
    assert_eq!(a.labels, vec![1, 1, 1]);
    // 2019-05-02 10:00:00 is 1556791200 s after 1970-01-01.
    Tolerance::F64.assert_close(&[a.start_time_s], &[1_556_791_200.0]);
    assert!(a.timestamps_s.is_none());
    assert_eq!(ds.recordings[1].labels, vec![0, 0]);
}

#[test]
fn subject_column_splits_a_file_into_recordings_and_classes_fix_the_order() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("all.csv"),
        b"user,label,ns,x,y,z\n1600,b,0,1,1,1\n1600,a,50000000,1,1,1\n1601,a,0,2,2,2\n",
    );
    let mut spec = CsvFolderSpec::new(
        ["x", "y", "z"].map(|s| CsvColumn::Name(s.into())).to_vec(),
        20.0,
    );
    spec.subject_column = Some(CsvColumn::Name("user".into()));
    spec.label_column = Some(CsvColumn::Name("label".into()));
    spec.time_column = Some(CsvColumn::Name("ns".into()));
    spec.time_unit = "ns".into();
    spec.classes = Some(vec!["b".into(), "a".into()]);
    let ds = read_csv_folder(&tmp.path().join("all.csv"), &spec).unwrap();
    assert_eq!(ds.class_names, vec!["b", "a"]);
    let ids: Vec<i64> = ds.recordings.iter().map(|r| r.subject_id).collect();
    assert_eq!(ids, vec![1600, 1601]);
    assert_eq!(ds.recordings[0].labels, vec![0, 1]);
    assert_eq!(ds.recordings[1].labels, vec![1]);
    assert_eq!(ds.recordings[0].session, "all.csv#1");

    spec.classes = Some(vec!["a".into()]);
    let err = read_csv_folder(&tmp.path().join("all.csv"), &spec).unwrap_err();
    assert_parse_error(&err, "all.csv", 2);
    assert!(err.to_string().contains("`b`"), "{err}");
}

#[test]
fn bad_rows_are_errors_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = CsvFolderSpec::from_toml_str(
        r#"
        channels = ["x", "y", "z"]
        rate_hz = 10
        time_column = "t"
        "#,
    )
    .unwrap();
    let cases: [(&str, &str, usize, &str); 5] = [
        (
            "short.csv",
            "t,x,y,z\n0,1,1,1\n0.1,1,1\n",
            3,
            "expected 4 fields",
        ),
        ("word.csv", "t,x,y,z\n0,1,1,1\n0.1,1,one,1\n", 3, "`y`"),
        (
            "nan.csv",
            "t,x,y,z\n0,1,1,1\n0.1,NaN,1,1\n",
            3,
            "non-finite",
        ),
        (
            "back.csv",
            "t,x,y,z\n0,1,1,1\n0.1,1,1,1\n0.05,1,1,1\n",
            4,
            "backwards",
        ),
        ("date.csv", "t,x,y,z\n0,1,1,1\nnoon,1,1,1\n", 3, "`noon`"),
    ];
    for (name, body, line, what) in cases {
        let p = tmp.path().join(name);
        write(&p, body.as_bytes());
        let err = read_csv_folder(&p, &spec).unwrap_err();
        assert_parse_error(&err, name, line);
        assert!(err.to_string().contains(what), "{name}: {err}");
    }
    // A missing named column is an error on the header line.
    let p = tmp.path().join("cols.csv");
    write(&p, b"t,x,y\n0,1,1\n");
    let err = read_csv_folder(&p, &spec).unwrap_err();
    assert_parse_error(&err, "cols.csv", 1);
    assert!(err.to_string().contains("`z`"), "{err}");
    // A truncated gzip file names the file.
    let mut body = b"t,x,y,z\n".to_vec();
    body.extend((0..2000).flat_map(|i| format!("{}.0,1,1,1\n", i).into_bytes()));
    let mut gz_full = gzip(&body);
    gz_full.truncate(gz_full.len() / 2);
    let p = tmp.path().join("cut.csv.gz");
    write(&p, &gz_full);
    let err = read_csv_folder(&p, &spec).unwrap_err();
    assert!(err.to_string().contains("cut.csv.gz"), "{err}");
    assert!(err.to_string().contains("gzip"), "{err}");
}

#[test]
fn labels_table_naming_a_missing_file_is_an_error_on_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("a.csv"), b"x,y,z\n1,1,1\n");
    write(
        &tmp.path().join("labels.tsv"),
        b"file\tlabel\na.csv\twalk\nb.csv\tsit\n",
    );
    let mut spec = CsvFolderSpec::new(
        ["x", "y", "z"].map(|s| CsvColumn::Name(s.into())).to_vec(),
        50.0,
    );
    spec.labels_table = Some("labels.tsv".into());
    let err = read_csv_folder(tmp.path(), &spec).unwrap_err();
    assert_parse_error(&err, "labels.tsv", 3);
    assert!(err.to_string().contains("b.csv"), "{err}");
}

#[test]
fn spec_toml_rejects_unknown_keys_and_bad_values() {
    let err = CsvFolderSpec::from_toml_str("channels = [0]\nrate_hz = 50\nrate = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `rate`"), "{err}");
    let err = CsvFolderSpec::from_toml_str("channels = [0, 1]\nrate_hz = 50\nunits = [\"g\"]\nheader = false\ntime_column = 2\ntime_unit = \"fortnights\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("time_unit"), "{err}");
    let err = CsvFolderSpec::from_toml_str("channels = [0]\nrate_hz = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_hz"), "{err}");
    let err =
        CsvFolderSpec::from_toml_str("channels = [0, 1, 2]\nrate_hz = 5\nunits = [\"g\", \"g\"]\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("units"), "{err}");
    let ok = CsvFolderSpec::from_toml_str(
        "channels = [0, \"b\", 2]\nrate_hz = 5\nunits = \"m/s^2\"\ndelimiter = \"tab\"\n",
    )
    .unwrap();
    assert_eq!(ok.channels[1], CsvColumn::Name("b".into()));
    assert_eq!(ok.units, vec!["m/s^2"]);
}

#[test]
fn a_spec_file_with_an_unknown_key_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("study.toml");
    write(
        &p,
        b"channels = [0, 1, 2]\nrate_hz = 50\nlabel_colum = \"y\"\n",
    );
    let err = CsvFolderSpec::from_toml_file(&p).unwrap_err().to_string();
    assert!(
        err.contains("study.toml") && err.contains("label_colum"),
        "{err}"
    );
    write(&p, b"channels = [0, 1, 2]\nrate_hz = 50\nheader = false\n");
    let spec = CsvFolderSpec::from_toml_file(&p).unwrap();
    assert!(!spec.header && spec.units == vec!["g"]);
}
