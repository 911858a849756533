//! Resampling, windowing and `prepare` on synthetic recordings with known content.

use std::f64::consts::PI;

use flowfm_core::{SeededRng, Tolerance};
use flowfm_data::resample::{resample_recording, resample_uniform, ResampleConfig};
use flowfm_data::window::{cut_windows, window_label, ImpurePolicy, WindowConfig, WindowLabel};
use flowfm_data::{prepare, DataError, PrepareConfig, RawDataset, Recording};

fn rec(
    subject: i64,
    rate: f64,
    times: Option<Vec<f64>>,
    signals: Vec<Vec<f32>>,
    labels: Vec<i32>,
) -> Recording {
    let c = signals.len();
    Recording {
        subject_id: subject,
        subject_name: format!("s{subject}"),
        session: format!("session-{subject}"),
        sample_rate_hz: rate,
        timestamps_s: times,
        start_time_s: 0.0,
        channel_names: (0..c).map(|i| format!("acc_{i}")).collect(),
        signals,
        labels,
    }
}

/// A regular one-channel recording of `f(t)`.
fn regular(rate: f64, secs: f64, f: impl Fn(f64) -> f64) -> Recording {
    let n = (rate * secs).round() as usize;
    let x = (0..n).map(|i| f(i as f64 / rate) as f32).collect();
    rec(1, rate, None, vec![x], vec![-1; n])
}

fn cfg() -> ResampleConfig {
    ResampleConfig::default()
}

/// Output samples `(t, value)` of the first segment's first channel, at least `margin` seconds
/// away from both ends.
fn interior(r: &Recording, margin: f64) -> Vec<(f64, f64)> {
    let out = resample_recording(r, &cfg()).unwrap();
    assert_eq!(out.segments.len(), 1);
    let seg = &out.segments[0];
    let n = seg.len();
    let end = seg.start_time_s + (n - 1) as f64 / 30.0;
    (0..n)
        .map(|j| {
            (
                seg.start_time_s + j as f64 / 30.0,
                f64::from(seg.signals[0][j]),
            )
        })
        .filter(|&(t, _)| t >= seg.start_time_s + margin && t <= end - margin)
        .collect()
}

fn max_abs_err(samples: &[(f64, f64)], f: impl Fn(f64) -> f64) -> f64 {
    samples
        .iter()
        .map(|&(t, v)| (v - f(t)).abs())
        .fold(0.0, f64::max)
}

#[test]
fn tone_below_the_new_nyquist_passes_unchanged() {
    let f = |t: f64| 1.0 + 0.5 * (2.0 * PI * 5.0 * t).sin();
    let r = regular(100.0, 60.0, f);
    let s = interior(&r, 2.0);
    assert!(s.len() > 1500);
    let err = max_abs_err(&s, f);
    assert!(err < 5e-3, "5 Hz tone distorted by {err}");
}

#[test]
fn tones_above_the_new_nyquist_are_attenuated() {
    for &freq in &[17.0, 20.0, 33.0, 45.0] {
        let r = regular(100.0, 30.0, |t| (2.0 * PI * freq * t).sin());
        let s = interior(&r, 2.0);
        // Naive decimation would alias these tones with full amplitude 1.
        let peak = s.iter().map(|&(_, v)| v.abs()).fold(0.0, f64::max);
        assert!(
            peak < 2e-3,
            "{freq} Hz tone leaks with amplitude {peak} (> -54 dB)"
        );
    }
}

#[test]
fn constant_gravity_passes_exactly_including_the_edges() {
    let r = regular(100.0, 12.0, |_| 1.0);
    let out = resample_recording(&r, &cfg()).unwrap();
    let v: Vec<f64> = out.segments[0].signals[0]
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    Tolerance::new(0.0, 1e-6).assert_close(&v, &vec![1.0; v.len()]);
}

#[test]
fn output_grid_starts_at_the_recording_start_and_spans_its_duration() {
    let mut r = regular(100.0, 65.0, |_| 0.0); // 6500 samples, 64.99 s
    r.start_time_s = 1234.5;
    let out = resample_recording(&r, &cfg()).unwrap();
    let seg = &out.segments[0];
    assert!(Tolerance::F64.close(seg.start_time_s, 1234.5));
    assert_eq!(seg.len(), (64.99f64 * 30.0).floor() as usize + 1);
    // Same rate: samples pass through untouched.
    let same = regular(30.0, 10.0, |t| t.sin());
    let out = resample_uniform(&same.signals[0], 30.0, &cfg()).unwrap();
    assert_eq!(out, same.signals[0]);
}

#[test]
fn upsampling_keeps_a_slow_tone() {
    let f = |t: f64| (2.0 * PI * 2.0 * t).cos();
    let r = regular(20.0, 30.0, f);
    let err = max_abs_err(&interior(&r, 2.0), f);
    assert!(
        err < 5e-3,
        "2 Hz tone distorted by {err} when going 20 -> 30 Hz"
    );
}

fn jittered_times(rate: f64, secs: f64, jitter: f64, seed: u64) -> Vec<f64> {
    let mut rng = SeededRng::new(seed);
    let n = (rate * secs) as usize;
    (0..n)
        .map(|i| (i as f64 + rng.uniform_range(-jitter, jitter)) / rate)
        .collect()
}

#[test]
fn irregular_jittered_timestamps_are_interpolated_on_the_time_axis() {
    let f = |t: f64| 0.3 + (2.0 * PI * 1.0 * t).sin();
    let t = jittered_times(50.0, 40.0, 0.3, 1);
    let x = t.iter().map(|&t| f(t) as f32).collect();
    let n = t.len();
    let r = rec(1, 50.0, Some(t), vec![x], vec![0; n]);
    let err = max_abs_err(&interior(&r, 1.0), f);
    assert!(
        err < 0.01,
        "1 Hz tone from jittered 50 Hz stream off by {err}"
    );
}

#[test]
fn repeated_timestamps_are_merged_by_averaging() {
    let f = |t: f64| (2.0 * PI * 0.5 * t).sin();
    let base = jittered_times(50.0, 20.0, 0.2, 2);
    let mut t = Vec::new();
    let mut x = Vec::new();
    for &ti in &base {
        // Each instant twice, values symmetric around the truth.
        t.extend([ti, ti]);
        x.extend([(f(ti) + 0.25) as f32, (f(ti) - 0.25) as f32]);
    }
    let n = t.len();
    let r = rec(1, 50.0, Some(t), vec![x], vec![-1; n]);
    let out = resample_recording(&r, &cfg()).unwrap();
    assert_eq!(out.stats.duplicate_timestamps, base.len());
    let err = max_abs_err(&interior(&r, 1.0), f);
    assert!(err < 0.01, "averaged duplicates off by {err}");
}

#[test]
fn out_of_order_timestamps_are_sorted_and_counted() {
    let f = |t: f64| (2.0 * PI * 0.5 * t).sin();
    let sorted: Vec<f64> = (0..1000).map(|i| i as f64 / 50.0).collect();
    let mut t = sorted.clone();
    for k in (0..1000).step_by(10) {
        t.swap(k, k + 1);
    }
    let make = |t: Vec<f64>| {
        let x = t.iter().map(|&t| f(t) as f32).collect();
        rec(1, 50.0, Some(t), vec![x], vec![-1; 1000])
    };
    let a = resample_recording(&make(t), &cfg()).unwrap();
    let b = resample_recording(&make(sorted), &cfg()).unwrap();
    assert_eq!(a.stats.out_of_order_samples, 100);
    assert_eq!(b.stats.out_of_order_samples, 0);
    assert_eq!(a.segments, b.segments);
}

#[test]
fn long_gaps_split_the_recording_and_short_gaps_are_bridged() {
    // 50 Hz: 0..20 s, then a 5 s hole, 25..30 s, a 0.5 s hole, 30.5..40 s.
    let mut t: Vec<f64> = (0..1000).map(|i| i as f64 / 50.0).collect();
    t.extend((0..250).map(|i| 25.0 + i as f64 / 50.0));
    t.extend((0..475).map(|i| 30.5 + i as f64 / 50.0));
    let ramp = |t: f64| 0.1 * t - 1.0; // linear: interpolation and the symmetric kernel are exact
    let x = t.iter().map(|&t| ramp(t) as f32).collect();
    let n = t.len();
    let last = t[n - 1];
    let r = rec(1, 50.0, Some(t), vec![x], vec![-1; n]);
    let out = resample_recording(&r, &cfg()).unwrap();
    assert_eq!(
        out.segments.len(),
        2,
        "exactly one gap exceeds max_gap_s = 1 s"
    );
    assert_eq!(out.stats.gaps, 1);
    assert!(Tolerance::new(0.0, 1e-9).close(out.stats.gap_s, 25.0 - 19.98));
    let (a, b) = (&out.segments[0], &out.segments[1]);
    assert!(Tolerance::F64.close(a.start_time_s, 0.0));
    assert!(Tolerance::F64.close(b.start_time_s, 25.0));
    assert_eq!(a.len(), (19.98f64 * 30.0 + 1e-9).floor() as usize + 1);
    assert_eq!(b.len(), ((last - 25.0) * 30.0 + 1e-9).floor() as usize + 1);
    // Inside the second segment, across the bridged 0.5 s hole, the ramp is intact.
    for (j, &v) in b.signals[0].iter().enumerate() {
        let tj = 25.0 + j as f64 / 30.0;
        if tj > 26.0 && tj < last - 1.0 {
            assert!(
                Tolerance::new(0.0, 1e-4).close(f64::from(v), ramp(tj)),
                "t={tj}: {v} vs {}",
                ramp(tj)
            );
        }
    }
}

#[test]
fn nan_samples_are_removed_counted_and_split_when_long() {
    let mut r = regular(50.0, 30.0, |t| (2.0 * PI * 0.2 * t).sin());
    for i in 500..505 {
        r.signals[0][i] = f32::NAN; // 0.1 s: bridged
    }
    for i in 1000..1200 {
        r.signals[0][i] = f32::INFINITY; // 4 s: split
    }
    let out = resample_recording(&r, &cfg()).unwrap();
    assert_eq!(out.stats.non_finite_samples, 205);
    assert_eq!(out.segments.len(), 2);
    assert!(Tolerance::F64.close(out.segments[1].start_time_s, 1200.0 / 50.0));
    for s in &out.segments {
        assert!(s.signals[0].iter().all(|v| v.is_finite()));
    }
}

#[test]
fn labels_follow_the_nearest_source_sample() {
    let mut r = regular(100.0, 10.0, |_| 0.0);
    for (i, l) in r.labels.iter_mut().enumerate() {
        *l = if i < 500 { 2 } else { 5 };
    }
    let out = resample_recording(&r, &cfg()).unwrap();
    let seg = &out.segments[0];
    for (j, &l) in seg.labels.iter().enumerate() {
        let t = j as f64 / 30.0;
        let nearest_source = (t * 100.0).round() as usize;
        let want = if nearest_source < 500 { 2 } else { 5 };
        assert_eq!(l, want, "output sample {j} at {t} s");
    }
}

#[test]
fn resample_config_rejects_bad_values_naming_the_field() {
    let cases = [
        ResampleConfig {
            target_rate_hz: 0.0,
            ..cfg()
        },
        ResampleConfig {
            max_gap_s: f64::NAN,
            ..cfg()
        },
        ResampleConfig {
            passband_frac: 1.0,
            ..cfg()
        },
        ResampleConfig {
            stopband_db: 5.0,
            ..cfg()
        },
    ];
    let fields = [
        "target_rate_hz",
        "max_gap_s",
        "passband_frac",
        "stopband_db",
    ];
    for (c, want) in cases.iter().zip(fields) {
        match c.validate() {
            Err(DataError::Config { field, .. }) => assert_eq!(field, want),
            other => panic!("expected a config error for {want}, got {other:?}"),
        }
    }
    assert!(cfg().validate().is_ok());
}

#[test]
fn window_label_takes_the_majority_when_it_is_pure_enough() {
    let mut l = vec![3; 85];
    l.extend(vec![1; 15]);
    assert_eq!(window_label(&l, 0.8), WindowLabel::Class(3));
    assert_eq!(window_label(&l, 0.9), WindowLabel::Impure);
    // Unlabelled samples count in the denominator.
    let mut l = vec![2; 70];
    l.extend(vec![-1; 30]);
    assert_eq!(window_label(&l, 0.8), WindowLabel::Impure);
    assert_eq!(window_label(&l, 0.7), WindowLabel::Class(2));
    assert_eq!(window_label(&[-1; 10], 0.8), WindowLabel::Unlabelled);
    assert_eq!(window_label(&[4; 10], 1.0), WindowLabel::Class(4));
}

fn segment(labels: Vec<i32>) -> flowfm_data::resample::Segment {
    let n = labels.len();
    flowfm_data::resample::Segment {
        start_time_s: 0.0,
        signals: vec![(0..n).map(|i| i as f32).collect()],
        labels,
    }
}

#[test]
fn windows_are_cut_every_hop_and_the_tail_is_counted() {
    let seg = segment(vec![0; 1000]);
    let (cuts, stats) = cut_windows(&seg, 300, 150, &WindowConfig::default());
    let offsets: Vec<usize> = cuts.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, vec![0, 150, 300, 450, 600]);
    assert_eq!(stats.kept, 5);
    assert_eq!(stats.tail_samples, 1000 - 900);
    let (cuts, stats) = cut_windows(&segment(vec![0; 299]), 300, 300, &WindowConfig::default());
    assert!(cuts.is_empty());
    assert_eq!(
        (stats.short_segments, stats.short_segment_samples),
        (1, 299)
    );
}

#[test]
fn impure_windows_are_unlabelled_or_dropped_per_policy() {
    // Window 0 pure class 1, window 1 half 1 / half 2 (impure), window 2 all unlabelled.
    let mut labels = vec![1; 300];
    labels.extend(vec![1; 150]);
    labels.extend(vec![2; 150]);
    labels.extend(vec![-1; 300]);
    let seg = segment(labels);
    let keep = WindowConfig::default();
    let (cuts, stats) = cut_windows(&seg, 300, 300, &keep);
    assert_eq!(
        cuts.iter().map(|c| c.label).collect::<Vec<_>>(),
        vec![1, -1, -1]
    );
    assert_eq!(stats.impure_unlabelled, 1);
    let drop = WindowConfig {
        impure: ImpurePolicy::Drop,
        ..keep.clone()
    };
    let (cuts, stats) = cut_windows(&seg, 300, 300, &drop);
    assert_eq!(
        cuts.iter().map(|c| c.offset).collect::<Vec<_>>(),
        vec![0, 600]
    );
    assert_eq!(stats.impure_dropped, 1);
    let labelled_only = WindowConfig {
        keep_unlabelled: false,
        ..keep
    };
    let (cuts, stats) = cut_windows(&seg, 300, 300, &labelled_only);
    assert_eq!(cuts.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![0]);
    assert_eq!(stats.unlabelled_dropped, 2);
}

#[test]
fn window_lengths_must_be_whole_samples_at_the_target_rate() {
    let mut c = PrepareConfig::default();
    assert_eq!(c.window_samples().unwrap(), (300, 300));
    c.window.window_secs = 10.05;
    match c.validate() {
        Err(DataError::Config { field, msg }) => {
            assert_eq!(field, "window.window_secs");
            assert!(msg.contains("301.5"), "{msg}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    c.window.window_secs = 5.0;
    c.resample.target_rate_hz = 50.0;
    c.window.hop_secs = 2.5;
    assert_eq!(c.window_samples().unwrap(), (250, 125));
    c.window.label_purity = 1.5;
    assert!(
        matches!(c.validate(), Err(DataError::Config { field, .. }) if field == "window.label_purity")
    );
}

/// Two subjects: s1 at 100 Hz, 65 s, class 0 then class 1 from 30 s, channels constant 1, 2, 3;
/// s2 irregular 50 Hz, 25 s unlabelled; s1 also has a 5 s recording (shorter than a window).
fn two_subjects() -> RawDataset {
    let n1 = 6500;
    let s1 = rec(
        1,
        100.0,
        None,
        (1..=3).map(|c| vec![c as f32; n1]).collect(),
        (0..n1).map(|i| if i < 3000 { 0 } else { 1 }).collect(),
    );
    let t2 = jittered_times(50.0, 25.0, 0.2, 3);
    let n2 = t2.len();
    let s2 = rec(
        2,
        50.0,
        Some(t2),
        (1..=3).map(|c| vec![c as f32; n2]).collect(),
        vec![-1; n2],
    );
    let mut short = rec(
        1,
        100.0,
        None,
        (1..=3).map(|c| vec![c as f32; 500]).collect(),
        vec![0; 500],
    );
    short.session = "short".into();
    RawDataset {
        name: "synthetic".into(),
        class_names: vec!["walk".into(), "sit".into()],
        recordings: vec![s1, s2, short],
        source_checksums: vec![("a.csv".into(), "00".repeat(32))],
        skipped: vec![flowfm_data::SkipReport {
            reason: "bad row".into(),
            count: 4,
        }],
    }
}

#[test]
fn prepare_counts_windows_per_subject_and_class() {
    let raw = two_subjects();
    let (ws, summary) = prepare(&raw, &PrepareConfig::default()).unwrap();
    ws.validate().unwrap();
    assert_eq!((ws.channels, ws.window_len), (3, 300));
    assert_eq!(ws.y, vec![0, 0, 0, 1, 1, 1, -1, -1]);
    assert_eq!(ws.subject, vec![1, 1, 1, 1, 1, 1, 2, 2]);
    let starts: Vec<f64> = ws.start_time_s.clone();
    let want = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0];
    Tolerance::F64.assert_close(&starts[..6], &want);
    // Layout (N, C, L): channel c of every window holds the constant c + 1.
    for i in 0..ws.num_windows() {
        let w = ws.window(i);
        for c in 0..3 {
            let v: Vec<f64> = w[c * 300..(c + 1) * 300]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            Tolerance::new(0.0, 1e-6).assert_close(&v, &[c as f64 + 1.0; 300]);
        }
    }
    assert_eq!(summary.windows(), 8);
    assert_eq!(summary.windows_per_class, vec![3, 3]);
    assert_eq!(summary.unlabelled_windows, 2);
    assert_eq!(summary.windowing.short_segments, 1);
    assert_eq!(summary.subjects.len(), 2);
    assert_eq!(
        (summary.subjects[0].windows, summary.subjects[0].labelled),
        (6, 6)
    );
    assert_eq!(
        (summary.subjects[1].windows, summary.subjects[1].labelled),
        (2, 0)
    );
    let table = summary.to_string();
    for needle in [
        "walk",
        "sit",
        "(unlabelled)",
        "s1",
        "s2",
        "segments shorter than a window",
        "reader: bad row",
    ] {
        assert!(table.contains(needle), "summary lacks {needle:?}:\n{table}");
    }
}

#[test]
fn prepare_is_deterministic_across_runs() {
    let raw = two_subjects();
    let a = prepare(&raw, &PrepareConfig::default()).unwrap();
    let b = prepare(&raw, &PrepareConfig::default()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn prepare_rejects_a_label_out_of_range_naming_the_session() {
    let mut raw = two_subjects();
    raw.recordings[1].labels[7] = 2;
    let e = prepare(&raw, &PrepareConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("synthetic/session-2") && msg.contains("sample 7"),
        "{msg}"
    );
}

#[test]
fn prepare_rejects_mismatched_channels_unless_they_are_selected() {
    let mut raw = two_subjects();
    raw.recordings[1].channel_names = vec!["acc_2".into(), "acc_1".into(), "acc_0".into()];
    let e = prepare(&raw, &PrepareConfig::default()).unwrap_err();
    assert!(e.to_string().contains("session-2"), "{e}");
    let cfg = PrepareConfig {
        channels: Some(vec!["acc_0".into(), "acc_1".into(), "acc_2".into()]),
        ..PrepareConfig::default()
    };
    let (ws, _) = prepare(&raw, &cfg).unwrap();
    // Subject 2's channels were reordered by name: channel 0 is its old channel 2 (value 3).
    let w = ws.window(6);
    assert!(Tolerance::new(0.0, 1e-6).close(f64::from(w[0]), 3.0));
    let missing = PrepareConfig {
        channels: Some(vec!["gyro_x".into()]),
        ..PrepareConfig::default()
    };
    assert!(prepare(&raw, &missing)
        .unwrap_err()
        .to_string()
        .contains("gyro_x"));
}
