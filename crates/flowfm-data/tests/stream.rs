//! The recording stream against the in-memory path (`read_csv_folder` + `prepare`) on files with
//! regular, jittered, gapped and irregular clocks at several rates; its memory bound on a
//! multi-million-sample recording generated on the fly; and bad input in the middle of a long file.

use std::io::{Read, Write};
use std::path::Path;

use flowfm_core::Tolerance;
use flowfm_data::readers::{read_csv_folder, CsvColumn, CsvFolderSpec};
use flowfm_data::synthetic::{
    synthetic_csv_spec, write_synthetic_recording, SyntheticCsv, SyntheticRecordingSpec,
    SYNTHETIC_ACTIVITIES,
};
use flowfm_data::{
    prepare, DataError, PrepareConfig, RecordingStream, StreamConfig, WindowBatch, WindowSet,
};

/// A deterministic test signal: two sinusoids (one above 15 Hz, which the anti-aliasing removes)
/// on gravity.
fn signal(i: usize, rate_hz: f64, c: usize) -> f64 {
    let t = i as f64 / rate_hz;
    let f = 1.3 + c as f64;
    [0.0, 0.3, 1.0][c % 3]
        + 0.4 * (2.0 * std::f64::consts::PI * f * t).sin()
        + 0.1 * (2.0 * std::f64::consts::PI * 21.0 * t + c as f64).cos()
}

/// Writes a CSV with `t_ms,x,y,z,label`; `time_ms(i)` gives each sample's time.
fn write_csv(path: &Path, n: usize, rate_hz: f64, time_ms: impl Fn(usize) -> f64) {
    let mut s = String::from("t_ms,x,y,z,label\n");
    for i in 0..n {
        let label = ["walk", "sit", "", "run"][(i / 700) % 4];
        s.push_str(&format!(
            "{:.3},{:.6},{:.6},{:.6},{label}\n",
            time_ms(i),
            signal(i, rate_hz, 0),
            signal(i, rate_hz, 1),
            signal(i, rate_hz, 2)
        ));
    }
    std::fs::write(path, s).unwrap();
}

fn spec(rate_hz: f64, time_column: bool) -> CsvFolderSpec {
    let mut s = CsvFolderSpec::new(
        ["x", "y", "z"].map(|c| CsvColumn::Name(c.into())).to_vec(),
        rate_hz,
    );
    if time_column {
        s.time_column = Some(CsvColumn::Name("t_ms".into()));
        s.time_unit = "ms".into();
    }
    s.label_column = Some(CsvColumn::Name("label".into()));
    s.classes = Some(["walk", "sit", "run"].map(String::from).to_vec());
    s
}

fn stream_all(path: &Path, spec: &CsvFolderSpec, cfg: &StreamConfig) -> (WindowBatch, usize) {
    let mut s = RecordingStream::open(path, spec, cfg).unwrap();
    let mut all = WindowBatch::default();
    let mut batches = 0;
    while let Some(b) = s.next_batch().unwrap() {
        assert!(b.len() <= cfg.batch_windows && !b.is_empty());
        assert_eq!((b.channels, b.window_len), (3, s.window_len()));
        all.channels = b.channels;
        all.window_len = b.window_len;
        all.x.extend(b.x);
        all.start_time_s.extend(b.start_time_s);
        all.end_time_s.extend(b.end_time_s);
        all.y.extend(b.y);
        batches += 1;
    }
    (all, batches)
}

fn assert_same_windows(streamed: &WindowBatch, ws: &WindowSet, what: &str) {
    assert_eq!(streamed.len(), ws.num_windows(), "{what}: window count");
    assert!(ws.num_windows() > 0, "{what}: no windows to compare");
    assert_eq!(streamed.y, ws.y, "{what}: labels");
    Tolerance::F64.assert_close(&streamed.start_time_s, &ws.start_time_s);
    let a: Vec<f64> = streamed.x.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = ws.x.iter().map(|&v| f64::from(v)).collect();
    Tolerance::new(1e-5, 1e-6).assert_close(&a, &b);
    let len_s = ws.window_len as f64 / ws.sample_rate_hz;
    for (s, e) in streamed.start_time_s.iter().zip(&streamed.end_time_s) {
        assert!((e - s - len_s).abs() < 1e-9, "{what}: window end");
    }
}

fn check_equivalence(path: &Path, spec: &CsvFolderSpec, cfg: &PrepareConfig, what: &str) {
    let raw = read_csv_folder(path, spec).unwrap();
    let (ws, summary) = prepare(&raw, cfg).unwrap();
    for batch_windows in [1, 7, 1000] {
        let scfg = StreamConfig {
            resample: cfg.resample.clone(),
            window: cfg.window.clone(),
            batch_windows,
        };
        let (streamed, batches) = stream_all(path, spec, &scfg);
        assert_same_windows(
            &streamed,
            &ws,
            &format!("{what}, batches of {batch_windows}"),
        );
        assert_eq!(batches, ws.num_windows().div_ceil(batch_windows));
        let mut s = RecordingStream::open(path, spec, &scfg).unwrap();
        while s.next_batch().unwrap().is_some() {}
        assert_eq!(s.stats().segments, summary.segments, "{what}: segments");
        assert_eq!(s.stats().gaps, summary.resample.gaps, "{what}: gaps");
        assert_eq!(s.stats().windowing, summary.windowing, "{what}: windowing");
    }
}

fn cfg(target_rate_hz: f64, window_secs: f64, hop_secs: f64) -> PrepareConfig {
    let mut c = PrepareConfig::default();
    c.resample.target_rate_hz = target_rate_hz;
    c.window.window_secs = window_secs;
    c.window.hop_secs = hop_secs;
    c
}

#[test]
fn stream_equals_prepare_for_a_fixed_rate_file_at_a_rational_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("fixed.csv");
    write_csv(&p, 20_000, 100.0, |i| i as f64 * 10.0);
    check_equivalence(
        &p,
        &spec(100.0, false),
        &cfg(30.0, 10.0, 5.0),
        "100 -> 30 Hz",
    );
    // Upsampling and the same rate (pass-through) too.
    check_equivalence(&p, &spec(20.0, false), &cfg(30.0, 2.0, 2.0), "20 -> 30 Hz");
    check_equivalence(&p, &spec(30.0, false), &cfg(30.0, 1.0, 0.5), "30 -> 30 Hz");
}

/// Label runs whose fields share prefixes, lengths and bytes (the stream resolves a run's class
/// once, by the field's raw bytes): every window's class equals the in-memory path's.
#[test]
fn stream_equals_prepare_with_labels_that_differ_in_one_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("labels.csv");
    let labels = [
        "walk",
        "wale",
        "walks",
        "wal",
        "Walk",
        " walk",
        "",
        "walk",
        "wa",
        "walk2",
        "walkingxx",
    ];
    let mut text = String::from("t_ms,x,y,z,label\n");
    for i in 0..30_000 {
        let label = labels[(i / 2_500) % labels.len()];
        text.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{label}\n",
            i * 10,
            signal(i, 100.0, 0),
            signal(i, 100.0, 1),
            signal(i, 100.0, 2)
        ));
    }
    std::fs::write(&p, text).unwrap();
    let mut sp = spec(100.0, true);
    sp.classes = Some(
        [
            "walk",
            "wale",
            "walks",
            "wal",
            "Walk",
            "wa",
            "walk2",
            "walkingxx",
        ]
        .map(String::from)
        .to_vec(),
    );
    check_equivalence(&p, &sp, &cfg(30.0, 10.0, 10.0), "labels one byte apart");
    // The classes seen are all distinct in the windows (not merged into one).
    let (streamed, _) = stream_all(&p, &sp, &StreamConfig::default());
    let mut seen: Vec<i64> = streamed.y.iter().copied().filter(|&y| y >= 0).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 8, "classes in the windows: {seen:?}");
}

#[test]
fn stream_equals_prepare_at_an_irrational_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("odd.csv");
    let rate = 97.31;
    write_csv(&p, 12_000, rate, |i| i as f64 * 1000.0 / rate);
    check_equivalence(
        &p,
        &spec(rate, false),
        &cfg(30.0, 4.0, 3.0),
        "97.31 -> 30 Hz",
    );
}

#[test]
fn stream_equals_prepare_with_jitter_gaps_and_an_irregular_clock() {
    let tmp = tempfile::tempdir().unwrap();
    // 50 Hz: small jitter (regular) for 3000 samples, then a 4 s gap, then jitter of up to 0.7
    // periods (irregular: explicit times), then another gap.
    let p = tmp.path().join("jitter.csv");
    write_csv(&p, 15_000, 50.0, |i| {
        let base = i as f64 * 20.0;
        let wobble = ((i * 7919) % 13) as f64 / 13.0 - 0.5; // in [-0.5, 0.5)
        if i < 3000 {
            base + 0.3 * 20.0 * wobble
        } else if i < 9000 {
            base + 4000.0 + 0.7 * 20.0 * wobble
        } else {
            base + 9000.0 + 0.7 * 20.0 * wobble
        }
    });
    let raw = read_csv_folder(&p, &spec(50.0, true)).unwrap();
    assert!(
        raw.recordings[0].timestamps_s.is_some(),
        "the fixture must exercise the irregular path"
    );
    check_equivalence(
        &p,
        &spec(50.0, true),
        &cfg(30.0, 5.0, 2.5),
        "jitter and gaps",
    );
    // A purely regular time column (no deviation) takes prepare's fast path.
    let q = tmp.path().join("regular.csv");
    write_csv(&q, 9_000, 50.0, |i| 1_000_000.0 + i as f64 * 20.0);
    check_equivalence(
        &q,
        &spec(50.0, true),
        &cfg(30.0, 5.0, 5.0),
        "regular time column",
    );
}

/// Streams a 3-million-sample recording generated on the fly (no file, nothing materialised)
/// and checks that the buffers stay small.
#[test]
fn a_multi_million_sample_recording_streams_in_bounded_memory() {
    let rec = SyntheticRecordingSpec {
        days: 3_000_000.0 / 100.0 / 86_400.0,
        rate_hz: 100.0,
        seed: 7,
    };
    assert_eq!(rec.samples(), 3_000_000);
    let src = SyntheticCsv::new(&rec).unwrap();
    let scfg = StreamConfig {
        batch_windows: 64,
        ..StreamConfig::default()
    };
    let mut s = RecordingStream::from_reader(
        "synthetic.csv",
        Box::new(src),
        &synthetic_csv_spec(100.0),
        &scfg,
    )
    .unwrap();
    let mut windows = 0;
    let mut max_now = 0;
    let mut labelled = 0;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(b) = s.next_batch().unwrap() {
        windows += b.len();
        labelled += b.y.iter().filter(|&&y| y >= 0).count();
        seen.extend(b.y.iter().copied().filter(|&y| y >= 0));
        max_now = max_now.max(s.buffered_samples());
        assert!(b.x.iter().all(|v| v.is_finite()));
    }
    assert_eq!(s.stats().samples, 3_000_000);
    // 30 000 s at 30 Hz in 10 s windows.
    assert_eq!(windows, 3000);
    assert!(labelled > 2000, "{labelled} of {windows} windows labelled");
    // 8.3 hours from midnight: night-time sleep and sitting, then the morning's activities.
    assert!(seen.len() >= 4, "classes seen: {seen:?}");
    assert_eq!(s.class_names(), SYNTHETIC_ACTIVITIES.map(String::from));
    // Bounded: a batch of windows (64 * 300), the kernel's support plus compaction slack, one
    // window plus slack: far below the 900 000 resampled samples of the recording.
    assert!(s.bytes_read() > 3_000_000 * 20, "{} bytes", s.bytes_read());
    let peak = s.peak_buffered_samples();
    assert!(peak < 64 * 300 + 2 * 8192 + 2 * 300 + 1000, "peak {peak}");
    assert!(max_now <= peak, "{max_now} > {peak}");
}

/// A reader of generated lines with one bad line at a given line number.
struct BadAt {
    next: usize,
    n: usize,
    bad_line: usize,
    bad: String,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for BadAt {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.next > self.n {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            let line_no = self.next + 1; // the header is line 1
            if self.next == 0 {
                self.buf.extend_from_slice(b"t_ms,x,y,z,label\n");
            } else if line_no == self.bad_line {
                self.buf.extend_from_slice(self.bad.as_bytes());
            } else {
                writeln!(self.buf, "{},0.1,0.2,0.9,walk", (self.next - 1) * 10)?;
            }
            self.next += 1;
        }
        let k = (self.buf.len() - self.pos).min(out.len());
        out[..k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

fn stream_error(reader: Box<dyn Read + Send>) -> DataError {
    let mut s = RecordingStream::from_reader(
        "long.csv",
        reader,
        &spec(100.0, true),
        &StreamConfig::default(),
    )
    .unwrap();
    loop {
        match s.next_batch() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the bad line went unnoticed"),
            Err(e) => return e,
        }
    }
}

#[test]
fn bad_input_after_a_million_good_lines_names_the_line() {
    let bad_line = 1_000_002;
    let t_bad = (bad_line - 2) * 10;
    let cases = [
        (
            "malformed",
            format!("{t_bad},0.1,0.2\n"),
            "expected 5 fields",
        ),
        ("nan", format!("{t_bad},NaN,0.2,0.9,walk\n"), "non-finite"),
        ("backwards", "5,0.1,0.2,0.9,walk\n".to_string(), "backwards"),
        (
            "unknown class",
            format!("{t_bad},0.1,0.2,0.9,swim\n"),
            "`swim`",
        ),
    ];
    for (what, bad, expect) in cases {
        let err = stream_error(Box::new(BadAt {
            next: 0,
            n: 1_000_100,
            bad_line,
            bad,
            buf: Vec::new(),
            pos: 0,
        }));
        match &err {
            DataError::Parse { path, line, .. } => {
                assert_eq!(*line, bad_line, "{what}: {err}");
                assert!(path.ends_with("long.csv"), "{what}: {err}");
            }
            other => panic!("{what}: expected a parse error, got {other}"),
        }
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }
}

/// Two bad lines close together (in one block of the fast path): the first in the file is the
/// one reported, whichever kind of error each is.
#[test]
fn the_first_of_two_nearby_bad_lines_is_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("two.csv");
    let bad = |kind: &str, i: usize| match kind {
        "backwards" => "5,0.1,0.2,0.9,walk".to_string(),
        _ => format!("{},0.1,0.2,0.9,swim", i * 10),
    };
    for (first_bad, second_bad, expect) in [
        ("backwards", "swim", "backwards"),
        ("swim", "backwards", "`swim`"),
    ] {
        let mut text = String::from("t_ms,x,y,z,label\n");
        for i in 0..2_000 {
            // Lines 1002 and 1010 (the header is line 1).
            match i {
                1000 => text.push_str(&bad(first_bad, i)),
                1008 => text.push_str(&bad(second_bad, i)),
                _ => text.push_str(&format!("{},0.1,0.2,0.9,walk", i * 10)),
            }
            text.push('\n');
        }
        std::fs::write(&p, text).unwrap();
        let mut s =
            RecordingStream::open(&p, &spec(100.0, true), &StreamConfig::default()).unwrap();
        let err = loop {
            match s.next_batch() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the bad lines went unnoticed"),
                Err(e) => break e,
            }
        };
        match &err {
            DataError::Parse { line, .. } => assert_eq!(*line, 1002, "{err}"),
            other => panic!("expected a parse error, got {other}"),
        }
        assert!(err.to_string().contains(expect), "{err}");
    }
}

#[test]
fn a_truncated_gzip_recording_is_an_error_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = b"t_ms,x,y,z,label\n".to_vec();
    for i in 0..200_000 {
        writeln!(body, "{},0.1,0.2,0.9,walk", i * 10).unwrap();
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&body).unwrap();
    let mut gz = e.finish().unwrap();
    gz.truncate(gz.len() * 2 / 3);
    let p = tmp.path().join("cut.csv.gz");
    std::fs::write(&p, &gz).unwrap();
    // Decompressed on a thread of its own, and inline.
    for inline in [false, true] {
        let (sp, cfg) = (spec(100.0, true), StreamConfig::default());
        let mut s = if inline {
            RecordingStream::open_inline(&p, &sp, &cfg).unwrap()
        } else {
            RecordingStream::open(&p, &sp, &cfg).unwrap()
        };
        let err = loop {
            match s.next_batch() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the truncation went unnoticed"),
                Err(e) => break e,
            }
        };
        let msg = err.to_string();
        assert!(msg.contains("cut.csv.gz:"), "{msg}");
        match err {
            DataError::Parse { line, .. } => assert!(line > 1000, "{msg}"),
            other => panic!("expected a parse error, got {other}"),
        }
        // The stream stays finished after an error.
        assert!(s.next_batch().unwrap().is_none());
    }
}

#[test]
fn the_synthetic_recording_is_deterministic_atomic_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = SyntheticRecordingSpec {
        days: 0.01,
        rate_hz: 100.0,
        seed: 3,
    };
    let a = tmp.path().join("a.csv.gz");
    let b = tmp.path().join("b.csv.gz");
    let sa = write_synthetic_recording(&a, &rec).unwrap();
    write_synthetic_recording(&b, &rec).unwrap();
    assert_eq!(sa.samples, 86_400);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(sa.file_bytes, std::fs::metadata(&a).unwrap().len());
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    let other = SyntheticRecordingSpec {
        seed: 4,
        ..rec.clone()
    };
    write_synthetic_recording(&b, &other).unwrap();
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let ds = read_csv_folder(&a, &synthetic_csv_spec(100.0)).unwrap();
    let r = &ds.recordings[0];
    assert_eq!(r.len(), 86_400);
    assert!(r.timestamps_s.is_none(), "a regular 100 Hz clock");
    let classes: std::collections::BTreeSet<i32> = r.labels.iter().copied().collect();
    // The first quarter hour is night: mostly sleep (the daytime mix is checked on the 3-million-
    // sample stream, which runs into the morning).
    assert!(!classes.is_empty() && !classes.contains(&-1), "{classes:?}");
    let mean_norm: f64 = (0..r.len())
        .map(|i| {
            (0..3)
                .map(|c| f64::from(r.signals[c][i]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / r.len() as f64;
    assert!((0.9..1.2).contains(&mean_norm), "mean |a| = {mean_norm} g");
    // A bad spec is an error, and nothing is written.
    let c = tmp.path().join("c.csv.gz");
    let bad = SyntheticRecordingSpec { days: -1.0, ..rec };
    assert!(write_synthetic_recording(&c, &bad).is_err());
    assert!(!c.exists());
}

#[test]
fn a_stream_can_move_to_a_reader_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<RecordingStream>();
    assert_send::<WindowBatch>();
}

#[test]
fn a_time_column_in_the_wrong_unit_is_an_error_naming_the_likely_mistake() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("ns.csv");
    // Nanosecond times declared as milliseconds: 1e6 times the nominal 100 Hz period.
    write_csv(&p, 6000, 100.0, |i| i as f64 * 1e7);
    let mut s = RecordingStream::open(&p, &spec(100.0, true), &StreamConfig::default()).unwrap();
    let err = loop {
        match s.next_batch() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the unit mistake went unnoticed"),
            Err(e) => break e,
        }
    };
    let msg = err.to_string();
    assert!(
        msg.contains("ns.csv:") && msg.contains("timestamps look like"),
        "{msg}"
    );
    let err = read_csv_folder(&p, &spec(100.0, true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ns.csv") && err.contains("timestamps look like"),
        "{err}"
    );
}

/// Hands out its bytes 1 to 7 at a time, so lines straddle every read boundary.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
}

impl Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let k = (1 + self.pos % 7)
            .min(out.len())
            .min(self.data.len() - self.pos);
        out[..k].copy_from_slice(&self.data[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

/// The same recording as a plain file, gzip'd (decompressed on the stream's gunzip thread or
/// inline), and through a reader that returns a few bytes at a time, with CRLF line ends, a blank
/// line, a line longer than the reader's initial buffer (trailing blanks) and no final line
/// break: the windows, times, labels and counts are identical bit for bit.
#[test]
fn plain_gzip_and_trickled_input_stream_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = b"t_ms,x,y,z,label\r\n".to_vec();
    for i in 0..40_000usize {
        let label = ["walk", "sit", "", "run"][(i / 700) % 4];
        write!(
            body,
            "{},{:.6},{:.6},{:.6},{label}",
            i * 10,
            signal(i, 100.0, 0),
            signal(i, 100.0, 1),
            signal(i, 100.0, 2)
        )
        .unwrap();
        if i == 1234 {
            body.extend(std::iter::repeat_n(b' ', 300_000));
        }
        if i + 1 < 40_000 {
            body.extend_from_slice(b"\r\n");
        }
        if i == 5000 {
            body.extend_from_slice(b"\r\n");
        }
    }
    let plain = tmp.path().join("r.csv");
    std::fs::write(&plain, &body).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&body).unwrap();
    let gz_bytes = e.finish().unwrap();
    let gz = tmp.path().join("r.csv.gz");
    std::fs::write(&gz, &gz_bytes).unwrap();
    let scfg = StreamConfig {
        batch_windows: 16,
        ..StreamConfig::default()
    };
    let sp = spec(100.0, true);
    let run = |s: &mut RecordingStream| {
        let mut all = WindowBatch::default();
        while let Some(b) = s.next_batch().unwrap() {
            all.x
                .extend(b.x.iter().map(|v| v.to_bits()).map(f32::from_bits));
            all.start_time_s.extend(b.start_time_s);
            all.end_time_s.extend(b.end_time_s);
            all.y.extend(b.y);
        }
        let bits: Vec<u32> = all.x.iter().map(|v| v.to_bits()).collect();
        (
            bits,
            all.start_time_s,
            all.end_time_s,
            all.y,
            s.stats().clone(),
        )
    };
    let want = run(&mut RecordingStream::open(&plain, &sp, &scfg).unwrap());
    assert_eq!(want.4.samples, 40_000);
    assert_eq!(want.4.lines, 40_002, "header, samples and the blank line");
    assert_eq!(want.3.len(), 40, "400 s in windows of 10 s");
    let from_gz = run(&mut RecordingStream::open(&gz, &sp, &scfg).unwrap());
    assert!(from_gz == want, "gzip file differs");
    let inline = run(&mut RecordingStream::open_inline(&gz, &sp, &scfg).unwrap());
    assert!(inline == want, "gzip file decompressed inline differs");
    for data in [body, gz_bytes] {
        let src = Box::new(Trickle { data, pos: 0 });
        let got = run(&mut RecordingStream::from_reader("t.csv", src, &sp, &scfg).unwrap());
        assert!(got == want, "trickled input differs");
    }
}
