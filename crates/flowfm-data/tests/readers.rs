//! Readers on the real datasets in `../shared/datasets` (skipped when absent): subject and class
//! coverage, values against an independent naive parse, checksums, and WISDM read throughput.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flowfm_core::Tolerance;
use flowfm_data::readers::{
    read_adl, read_hapt, read_wisdm, restrict_classes, AdlOptions, HaptOptions, WisdmOptions,
    ADL_CLASSES, SSL_WEARABLES_ADL_CLASSES,
};
use flowfm_data::RawDataset;

fn datasets() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/datasets"
    ));
    if p.is_dir() {
        Some(p)
    } else {
        flowfm_core::testing::skip_or_fail(&format!("{} not found", p.display()));
        None
    }
}

fn subjects(ds: &RawDataset) -> BTreeSet<i64> {
    ds.recordings.iter().map(|r| r.subject_id).collect()
}

fn labels_present(ds: &RawDataset) -> BTreeSet<i32> {
    ds.recordings
        .iter()
        .flat_map(|r| r.labels.iter().copied())
        .filter(|&l| l >= 0)
        .collect()
}

fn total_samples(ds: &RawDataset) -> usize {
    ds.recordings.iter().map(|r| r.len()).sum()
}

/// Every recording's channels, labels and timestamps agree in length.
fn assert_consistent(ds: &RawDataset) {
    for r in &ds.recordings {
        assert!(!r.is_empty(), "{}: empty recording", r.session);
        for s in &r.signals {
            assert_eq!(s.len(), r.len(), "{}", r.session);
            assert!(s.iter().all(|v| v.is_finite()), "{}", r.session);
        }
        assert_eq!(r.signals.len(), r.channel_names.len());
        if let Some(t) = &r.timestamps_s {
            assert_eq!(t.len(), r.len());
            assert!(
                t.windows(2).all(|w| w[1] > w[0]),
                "{}: times not increasing",
                r.session
            );
        }
        assert!(r
            .labels
            .iter()
            .all(|&l| l >= -1 && (l as i64) < ds.class_names.len() as i64));
    }
}

fn gunzip_file(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Sum of the `original_bytes` column of a `FILES.tsv` for paths containing `needle`.
fn original_bytes(manifest: &Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = header.iter().position(|c| *c == "original_bytes").unwrap();
    lines
        .filter(|l| l.contains(needle))
        .map(|l| l.split('\t').nth(col).unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn wisdm_watch_accel_has_all_46_subjects_and_18_activities_and_reads_fast() {
    let Some(root) = datasets() else { return };
    let dir = root.join("wisdm2019");
    let t0 = Instant::now();
    let ds = read_wisdm(&dir, &WisdmOptions::default()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(subjects(&ds).len(), 46);
    assert_eq!(ds.class_names.len(), 18);
    assert_eq!(labels_present(&ds).len(), 18);
    assert_eq!(
        ds.source_checksums.len(),
        46,
        "every file hashed and verified"
    );
    assert_consistent(&ds);
    // Every line of every file is either a sample or a counted skip (lines counted independently).
    let dir_files = dir.join("wisdm-dataset/raw/watch/accel");
    let mut lines = 0usize;
    for e in std::fs::read_dir(&dir_files).unwrap() {
        let text = gunzip_file(&e.unwrap().path());
        lines += text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
    }
    let skipped: usize = ds.skipped.iter().map(|s| s.count).sum();
    assert_eq!(total_samples(&ds) + skipped, lines);
    let rows = total_samples(&ds) as f64;
    let mb = original_bytes(&dir.join("FILES.tsv"), "raw/watch/accel/") as f64 / 1e6;
    eprintln!(
        "WISDM watch accel: {} rows, {:.1} MB of text (gzip'd on disk) in {:.3} s: {:.2} M rows/s, {:.0} MB/s (incl. sha256 + gunzip)",
        rows, mb, secs, rows / secs / 1e6, mb / secs
    );
}

#[test]
fn wisdm_values_agree_with_a_naive_parse_of_one_file() {
    let Some(root) = datasets() else { return };
    let dir = root.join("wisdm2019");
    let ds = read_wisdm(&dir, &WisdmOptions::default()).unwrap();
    let path = dir.join("wisdm-dataset/raw/watch/accel/data_1600_accel_watch.txt.gz");
    let text = String::from_utf8(gunzip_file(&path)).unwrap();
    let mut x = Vec::new();
    let mut t = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.trim_end_matches(';').split(',').collect();
        t.push(f[2].parse::<i64>().unwrap() as f64 / 1e9);
        x.push(f[3].parse::<f64>().unwrap() / 9.80665);
    }
    let recs: Vec<_> = ds
        .recordings
        .iter()
        .filter(|r| r.subject_id == 1600)
        .collect();
    let got_x: Vec<f64> = recs
        .iter()
        .flat_map(|r| r.signals[0].iter().map(|&v| f64::from(v)))
        .collect();
    let got_t: Vec<f64> = recs
        .iter()
        .flat_map(|r| r.timestamps_s.clone().unwrap())
        .collect();
    Tolerance::F32.assert_close(&got_x, &x);
    Tolerance::new(1e-15, 0.0).assert_close(&got_t, &t);
}

#[test]
fn adl_has_16_subjects_14_classes_and_the_ssl_wearables_subset() {
    let Some(root) = datasets() else { return };
    let dir = root.join("adl_hmp");
    let ds = read_adl(&dir, &AdlOptions::default()).unwrap();
    assert_consistent(&ds);
    assert_eq!(subjects(&ds).len(), 16);
    assert_eq!(labels_present(&ds).len(), 14);
    // One recording per file outside the *_MODEL folders (counted independently).
    let hmp = dir.join("HMP_Dataset");
    let mut trial_files = 0;
    let mut model_files = 0;
    for d in std::fs::read_dir(&hmp).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            let n = std::fs::read_dir(&d).unwrap().count();
            if d.to_string_lossy().ends_with("_MODEL") {
                model_files += n;
            } else {
                trial_files += n;
            }
        }
    }
    assert_eq!(ds.recordings.len(), trial_files);
    let with_model = read_adl(
        &dir,
        &AdlOptions {
            include_model_trials: true,
            ..AdlOptions::default()
        },
    )
    .unwrap();
    assert_eq!(with_model.recordings.len(), trial_files + model_files);

    let five = restrict_classes(&ds, &SSL_WEARABLES_ADL_CLASSES).unwrap();
    assert_eq!(
        five.class_names,
        SSL_WEARABLES_ADL_CLASSES.map(String::from).to_vec()
    );
    assert_eq!(labels_present(&five), (0..5).collect());
    assert_consistent(&five);
    // Every kept recording came from one of the five folders, with the same samples.
    for r in &five.recordings {
        let class = &five.class_names[r.labels[0] as usize];
        let orig = ds
            .recordings
            .iter()
            .find(|o| o.session == r.session)
            .unwrap();
        assert_eq!(&ADL_CLASSES[orig.labels[0] as usize], class);
        assert_eq!(orig.signals, r.signals);
    }
}

#[test]
fn adl_decoding_matches_the_manual_formula_on_one_file() {
    let Some(root) = datasets() else { return };
    let dir = root.join("adl_hmp");
    let ds = read_adl(&dir, &AdlOptions::default()).unwrap();
    let rec = ds
        .recordings
        .iter()
        .find(|r| r.session.ends_with("-walk-f1.txt"))
        .unwrap();
    let path = dir.join("HMP_Dataset/Walk").join(&rec.session);
    let text = std::fs::read_to_string(path).unwrap();
    let z: Vec<f64> = text
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<f64>().unwrap())
        .map(|v| -1.5 + v / 63.0 * 3.0)
        .collect();
    let got: Vec<f64> = rec.signals[2].iter().map(|&v| f64::from(v)).collect();
    Tolerance::F32.assert_close(&got, &z);
    assert_eq!(rec.subject_name, "f1");
    assert_eq!(rec.subject_id, 1);
}

#[test]
fn hapt_has_30_subjects_12_labels_and_segments_from_labels_txt() {
    let Some(root) = datasets() else { return };
    let dir = root.join("uci_hapt");
    let ds = read_hapt(&dir, &HaptOptions::default()).unwrap();
    assert_consistent(&ds);
    assert_eq!(subjects(&ds).len(), 30);
    assert_eq!(labels_present(&ds).len(), 12);
    let n_exp = ds.recordings.len();
    assert_eq!(ds.source_checksums.len(), 1 + 2 * n_exp);
    for r in &ds.recordings {
        assert_eq!(r.num_channels(), 6);
    }
    // Re-derive the labels of every experiment from labels.txt independently.
    let labels = std::fs::read_to_string(dir.join("HAPT Data Set/RawData/labels.txt")).unwrap();
    let mut checked = 0;
    for line in labels.lines() {
        let v: Vec<usize> = line
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        let session = format!("exp{:02}_user{:02}", v[0], v[1]);
        let rec = ds.recordings.iter().find(|r| r.session == session).unwrap();
        assert!(rec.labels[v[3] - 1..v[4]]
            .iter()
            .all(|&l| l == v[2] as i32 - 1));
        checked += 1;
    }
    assert!(checked > 1000);
    let labelled: usize = ds
        .recordings
        .iter()
        .map(|r| r.labels.iter().filter(|&&l| l >= 0).count())
        .sum();
    let expected: usize = labels
        .lines()
        .map(|l| {
            let v: Vec<usize> = l.split_whitespace().map(|s| s.parse().unwrap()).collect();
            v[4] - v[3] + 1
        })
        .sum();
    assert_eq!(
        labelled, expected,
        "samples outside every segment stay unlabelled"
    );
}
