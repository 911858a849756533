//! Seed corpora of the fuzz targets in `fuzz/` (one valid input per format, in the byte layout each
//! target expects), checked to be accepted by the same calls the targets make. With
//! `FLOWFM_FUZZ_SEEDS=<dir>` the seeds are also written to `<dir>/<target>/` (e.g.
//! `FLOWFM_FUZZ_SEEDS=$PWD/fuzz/corpus cargo test -p flowfm-data --test fuzz_seeds`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flowfm_data::readers::{
    read_csv, read_dataset, read_uea_ts, ColumnRef, CsvSpec, DatasetKind, TimeSpec, TimeUnit,
    UeaOptions,
};
use flowfm_data::registry::{decode_hapt_pickle, decode_watch_npy};
use flowfm_data::{write_store, NonFinite, WindowSet, WindowStore};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap()
}

fn with_selector(which: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![which];
    v.extend_from_slice(body);
    v
}

fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.start_file(name, opts).unwrap();
    w.write_all(body).unwrap();
    w.finish().unwrap().into_inner()
}

/// Writes `bytes` to `dir/rel`, creating folders (as the fuzz targets' `common::put`).
fn put(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The `readers` target's layout for selector `which` (see `fuzz/fuzz_targets/readers.rs`).
fn readers_layout(dir: &Path, which: u8, body: &[u8]) -> DatasetKind {
    match which % 7 {
        0 => {
            put(dir, "data_1600_accel_watch.txt", body);
            DatasetKind::Wisdm2019
        }
        1 => {
            put(
                dir,
                "HMP_Dataset/Walk/Accelerometer-2011-03-24-09-51-07-walk-f1.txt",
                body,
            );
            DatasetKind::AdlHmp
        }
        2 => {
            let cut = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            let (labels, acc) = (&body[..cut], body.get(cut + 1..).unwrap_or(&[]));
            put(dir, "RawData/labels.txt", labels);
            put(dir, "RawData/acc_exp01_user01.txt", acc);
            put(dir, "RawData/gyro_exp01_user01.txt", acc);
            DatasetKind::UciHapt
        }
        3 => {
            put(dir, "Protocol/subject110.dat", body);
            DatasetKind::Pamap2
        }
        4 => {
            put(dir, "dataset/S5-ADL1.dat", body);
            DatasetKind::Opportunity
        }
        5 => {
            put(dir, "proband1/data/acc_walking_csv.zip", body);
            DatasetKind::RealWorld2016
        }
        _ => {
            put(dir, "P001.csv", body);
            DatasetKind::Capture24
        }
    }
}

fn csv_spec(which: u8) -> CsvSpec {
    let mut spec = CsvSpec::xyz_fixed_rate(50.0);
    if which % 2 == 1 {
        spec.time = TimeSpec::Column {
            column: ColumnRef::Name("t".into()),
            unit: TimeUnit::Milliseconds,
            nominal_rate_hz: 50.0,
        };
        spec.label_column = Some(ColumnRef::Name("label".into()));
    }
    spec
}

/// `(target, name, bytes)` of every seed.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // Subject 1700's rows under the target's file name for subject 1600.
    let wisdm = String::from_utf8(fixture("wisdm/raw/watch/accel/data_1700_accel_watch.txt"))
        .unwrap()
        .replace("1700,", "1600,");
    out.push((
        "readers",
        "wisdm".into(),
        with_selector(0, wisdm.as_bytes()),
    ));
    out.push((
        "readers",
        "adl".into(),
        with_selector(
            1,
            &fixture("adl/HMP_Dataset/Walk/Accelerometer-2011-03-24-09-51-07-walk-f1.txt"),
        ),
    ));
    let mut hapt = fixture("hapt/RawData/labels.txt")
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"1 1 "))
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect::<Vec<u8>>();
    hapt.push(0);
    hapt.extend(fixture("hapt/RawData/acc_exp01_user01.txt"));
    out.push(("readers", "hapt".into(), with_selector(2, &hapt)));
    out.push((
        "readers",
        "pamap2".into(),
        with_selector(3, &fixture("pamap2/Protocol/subject101.dat")),
    ));
    let opp = fixture("opportunity/dataset/S1-ADL1.dat");
    out.push(("readers", "opportunity".into(), with_selector(4, &opp)));
    let zip = zip_of(
        "acc_walking_forearm.csv",
        &fixture("realworld/proband1/acc_walking_forearm.csv"),
    );
    out.push(("readers", "realworld".into(), with_selector(5, &zip)));
    out.push((
        "readers",
        "capture24".into(),
        with_selector(6, &fixture("capture24/P001.csv")),
    ));
    out.push(("uea_ts", "toy".into(), fixture("uea/ToyMotion.ts")));
    let fixed: String = std::iter::once("x,y,z\n".to_string())
        .chain((0..120).map(|i| format!("{},0.0,1.0\n", (i % 9) as f64 * 0.1)))
        .collect();
    out.push((
        "csv",
        "fixed_rate".into(),
        with_selector(0, fixed.as_bytes()),
    ));
    let timed: String = std::iter::once("t,x,y,z,label\n".to_string())
        .chain((0..120).map(|i| format!("{},{},0.0,1.0,walk\n", i * 20, (i % 9) as f64 * 0.1)))
        .collect();
    out.push(("csv", "time_ms".into(), with_selector(1, timed.as_bytes())));
    let mut pkl = Vec::new();
    flate2::read::GzDecoder::new(&fixture("pickle/tiny_hapt.pkl.gz")[..])
        .read_to_end(&mut pkl)
        .unwrap();
    out.push(("pickle", "hapt".into(), with_selector(0, &pkl)));
    out.push((
        "pickle",
        "watch".into(),
        with_selector(1, &fixture("pickle/tiny_watch.npy")),
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.h5");
    let mut w = WindowSet::empty(
        "synthetic",
        30.0,
        vec!["acc_x".into(), "acc_y".into()],
        4,
        vec!["a".into()],
    );
    for i in 0..3 {
        w.x.extend((0..8).map(|k| (i * 8 + k) as f32 * 0.25));
        w.y.push(0);
        w.subject.push(i);
        w.start_time_s.push(i as f64);
    }
    write_store(&p, &w, 1, "seed", "").unwrap();
    out.push((
        "store_open",
        "three_windows".into(),
        std::fs::read(&p).unwrap(),
    ));
    out
}

#[test]
fn every_fuzz_seed_is_accepted_by_its_target_and_written_when_asked() {
    let seeds = seeds();
    for target in ["readers", "uea_ts", "csv", "pickle", "store_open"] {
        assert!(seeds.iter().any(|s| s.0 == target), "no seed for {target}");
    }
    for (target, name, bytes) in &seeds {
        let dir = tempfile::tempdir().unwrap();
        let ok = match *target {
            "readers" => {
                let kind = readers_layout(dir.path(), bytes[0], &bytes[1..]);
                read_dataset(kind, dir.path())
                    .map(|raw| raw.recordings.len())
                    .map_err(|e| e.to_string())
            }
            "uea_ts" => {
                put(dir.path(), "x.ts", bytes);
                read_uea_ts(&dir.path().join("x.ts"), &UeaOptions::default())
                    .map(|raw| raw.recordings.len())
                    .map_err(|e| e.to_string())
            }
            "csv" => {
                put(dir.path(), "x.csv", &bytes[1..]);
                read_csv(&dir.path().join("x.csv"), &csv_spec(bytes[0]))
                    .map(|raw| raw.recordings.len())
                    .map_err(|e| e.to_string())
            }
            "pickle" => {
                let src = Path::new("seed");
                if bytes[0] % 2 == 0 {
                    decode_hapt_pickle(&bytes[1..], src)
                } else {
                    decode_watch_npy(&bytes[1..], src)
                }
                .map(|raw| raw.recordings.len())
                .map_err(|e| e.to_string())
            }
            _ => {
                put(dir.path(), "s.h5", bytes);
                WindowStore::open(dir.path().join("s.h5"))
                    .and_then(|s| s.check_finite(NonFinite::Error))
                    .map(|c| c.kept.len())
                    .map_err(|e| e.to_string())
            }
        };
        let n = ok.unwrap_or_else(|e| panic!("seed {target}/{name} rejected: {e}"));
        assert!(n > 0, "seed {target}/{name} gives nothing");
    }
    if let Some(out) = std::env::var_os("FLOWFM_FUZZ_SEEDS") {
        for (target, name, bytes) in &seeds {
            put(Path::new(&out), &format!("{target}/seed-{name}"), bytes);
        }
    }
}
