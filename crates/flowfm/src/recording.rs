//! Long recordings through a trained model in bounded memory: `flowfm embed --recording` and
//! `flowfm predict --recording`. The file is streamed (`flowfm_data::stream`: decompress, read,
//! convert units, resample, window) batch by batch in jobs on rayon's pool, at most two batches
//! ahead of this thread, which encodes: the pool's workers take a reading job only when the
//! encoder leaves them idle, so reading overlaps encoding without a thread of its own competing
//! with the encoder's workers for the cores. Results are written as they come (HDF5 datasets
//! that grow by chunks, CSV lines through a buffer), so memory does not depend on the
//! recording's length. Outputs are written under a temporary name and renamed only when
//! complete.

use crate::encode::write_str_attr;
use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use flowfm_data::readers::CsvFolderSpec;
use flowfm_data::stream::{RecordingStream, StreamConfig, StreamStats, WindowBatch};
use flowfm_models::HarNet;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

/// Streaming settings for windows of `window_len` samples at `rate_hz`, back to back (no
/// overlap), `batch` windows at a time.
pub fn stream_config(window_len: usize, rate_hz: f64, batch: usize) -> StreamConfig {
    let mut cfg = StreamConfig::default();
    cfg.resample.target_rate_hz = rate_hz;
    cfg.window.window_secs = window_len as f64 / rate_hz;
    cfg.window.hop_secs = cfg.window.window_secs;
    cfg.batch_windows = batch.max(1);
    cfg
}

/// What the model reads, for the stream's shape check.
pub struct Expect {
    /// Samples per window.
    pub window_len: usize,
    /// Channels.
    pub channels: usize,
    /// Who expects it (named in the error).
    pub what: String,
}

/// Streams `path` with `spec` / `cfg` and calls `f` on every batch of windows, reading in jobs
/// on rayon's pool (at most two batches ahead: [`Feed`]). An error unless the stream's windows
/// have the shape `expect` names. Returns the stream's counts.
pub fn for_each_batch(
    path: &Path,
    spec: &CsvFolderSpec,
    cfg: &StreamConfig,
    expect: &Expect,
    progress: bool,
    mut f: impl FnMut(&WindowBatch) -> Result<()>,
) -> Result<StreamStats> {
    let stream = RecordingStream::open_inline(path, spec, cfg)
        .with_context(|| format!("opening the recording {}", path.display()))?;
    let channels = stream.channel_names().len();
    if stream.window_len() != expect.window_len || channels != expect.channels {
        anyhow::bail!(
            "{}: windows of {} samples with {channels} channels at {} Hz, but {} reads {} samples with {} channels",
            path.display(),
            stream.window_len(),
            stream.sample_rate_hz(),
            expect.what,
            expect.window_len,
            expect.channels
        );
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = if progress {
        let b = ProgressBar::new(size);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix("recording");
        b
    } else {
        ProgressBar::hidden()
    };
    let feed = Feed::start(stream);
    let mut windows = 0usize;
    let result = (|| -> Result<()> {
        while let Some((batch, read)) = feed.next()? {
            f(&batch)?;
            windows += batch.len();
            bar.set_position(read);
            bar.set_message(format!("{windows} windows"));
        }
        Ok(())
    })();
    bar.finish_and_clear();
    let stats = feed.finish();
    result?;
    stats.ok_or_else(|| {
        anyhow!(
            "the reader of {} stopped without its counts",
            path.display()
        )
    })
}

/// Batches read ahead of the caller as jobs on rayon's pool: a job reads one batch and queues
/// the next job while fewer than [`AHEAD`] batches wait. The pool's workers take a job only when
/// they have no other work (the encoder's tasks come first from their own queues), so reading
/// fills the gaps of the encoder instead of competing with it for the cores as a thread of its
/// own would.
struct Feed {
    shared: Arc<(Mutex<FeedState>, Condvar)>,
}

/// Batches the caller may have waiting.
const AHEAD: usize = 2;

struct FeedState {
    /// The stream, while no job holds it.
    stream: Option<RecordingStream>,
    ready: VecDeque<Result<(WindowBatch, u64)>>,
    /// A job is queued or running.
    running: bool,
    /// The stream ended (its counts kept) or failed, or the caller stopped.
    done: bool,
    stats: Option<StreamStats>,
}

impl Feed {
    fn start(stream: RecordingStream) -> Self {
        let feed = Self {
            shared: Arc::new((
                Mutex::new(FeedState {
                    stream: Some(stream),
                    ready: VecDeque::new(),
                    running: false,
                    done: false,
                    stats: None,
                }),
                Condvar::new(),
            )),
        };
        if let Ok(mut st) = feed.shared.0.lock() {
            Self::schedule(&feed.shared, &mut st);
        }
        feed
    }

    /// Queues a job when none is under way and there is room.
    fn schedule(shared: &Arc<(Mutex<FeedState>, Condvar)>, st: &mut FeedState) {
        if st.running || st.done || st.ready.len() >= AHEAD {
            return;
        }
        if let Some(stream) = st.stream.take() {
            st.running = true;
            let shared = Arc::clone(shared);
            rayon::spawn(move || Self::job(shared, stream));
        }
    }

    fn job(shared: Arc<(Mutex<FeedState>, Condvar)>, mut stream: RecordingStream) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.next_batch()));
        let Ok(mut st) = shared.0.lock() else {
            return;
        };
        st.running = false;
        match r {
            Ok(Ok(Some(batch))) => {
                let read = stream.bytes_read();
                st.ready.push_back(Ok((batch, read)));
                st.stream = Some(stream);
            }
            Ok(Ok(None)) => {
                st.stats = Some(stream.stats().clone());
                st.done = true;
            }
            Ok(Err(e)) => {
                st.ready.push_back(Err(anyhow!(e)));
                st.done = true;
            }
            Err(_) => {
                st.ready
                    .push_back(Err(anyhow!("the recording's reader panicked")));
                st.done = true;
            }
        }
        Self::schedule(&shared, &mut st);
        shared.1.notify_all();
    }

    /// The next batch (with the raw bytes read so far), or `None` at the end. With nothing
    /// ready and no job under way, the batch is read here (the caller would only wait); a
    /// caller that is itself one of the pool's workers helps with the pool's work while it
    /// waits (blocking it could leave the job no worker to run on).
    fn next(&self) -> Result<Option<(WindowBatch, u64)>> {
        let poisoned = || anyhow!("the recording reader's state is poisoned");
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(item) = st.ready.pop_front() {
                Self::schedule(&self.shared, &mut st);
                return item.map(Some);
            }
            if st.done && !st.running {
                return Ok(None);
            }
            if !st.running {
                if let Some(stream) = st.stream.take() {
                    st.running = true;
                    drop(st);
                    Self::job(Arc::clone(&self.shared), stream);
                    st = lock.lock().map_err(|_| poisoned())?;
                    continue;
                }
            }
            if rayon::current_thread_index().is_some() {
                drop(st);
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::thread::yield_now();
                }
                st = lock.lock().map_err(|_| poisoned())?;
            } else {
                st = cv.wait(st).map_err(|_| poisoned())?;
            }
        }
    }

    /// Stops reading (a job under way finishes on its own) and returns the stream's counts when
    /// it reached its end.
    fn finish(self) -> Option<StreamStats> {
        let mut st = self.shared.0.lock().ok()?;
        st.done = true;
        st.stats.take()
    }
}

/// Encodes every window of the recording at `path` and writes `z` `(N, d)` f32, `start_time_s`
/// and `end_time_s` `(N)` f64 to the HDF5 file `output`, growing the datasets batch by batch.
/// Returns the number of windows and the stream's counts. `device` is where `encoder` lives.
pub fn embed_recording(
    encoder: &HarNet,
    device: &Device,
    path: &Path,
    spec: &CsvFolderSpec,
    cfg: &StreamConfig,
    output: &Path,
    progress: bool,
) -> Result<(usize, StreamStats)> {
    let enc_cfg = encoder.config();
    let d = enc_cfg.repr_dim();
    let expect = Expect {
        window_len: enc_cfg.window_len,
        channels: enc_cfg.in_channels,
        what: "the encoder".into(),
    };
    if let Some(dir) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut out = (0usize, StreamStats::default());
    flowfm_core::fs::write_atomic_with(output, |tmp: &Path| -> Result<()> {
        let f = hdf5::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let chunk = cfg.batch_windows.max(1);
        let z = f
            .new_dataset::<f32>()
            .chunk((chunk, d))
            .shape((0.., d))
            .create("z")?;
        let t0 = f
            .new_dataset::<f64>()
            .chunk(chunk)
            .shape(0..)
            .create("start_time_s")?;
        let t1 = f
            .new_dataset::<f64>()
            .chunk(chunk)
            .shape(0..)
            .create("end_time_s")?;
        let mut n = 0usize;
        let stats = for_each_batch(path, spec, cfg, &expect, progress, |b| {
            let x = Tensor::from_slice(&b.x, (b.len(), b.channels, b.window_len), device)?;
            let zb: Vec<f32> = encoder.encode_detached(&x)?.flatten_all()?.to_vec1()?;
            let m = b.len();
            z.resize((n + m, d))?;
            z.write_slice(&ndarray_rows(&zb, m, d)?, (n..n + m, ..))?;
            for (ds, v) in [(&t0, &b.start_time_s), (&t1, &b.end_time_s)] {
                ds.resize(n + m)?;
                ds.write_slice(v.as_slice(), n..n + m)?;
            }
            n += m;
            Ok(())
        })?;
        write_str_attr(&f, "source_recording", &path.display().to_string())?;
        out = (n, stats);
        Ok(())
    })?;
    Ok(out)
}

/// `rows x cols` values as a 2-D array for `write_slice`.
fn ndarray_rows(v: &[f32], rows: usize, cols: usize) -> Result<ndarray::Array2<f32>> {
    ndarray::Array2::from_shape_vec((rows, cols), v.to_vec())
        .map_err(|e| anyhow!("embedding batch of {rows} x {cols}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_data::synthetic::{
        synthetic_csv_spec, write_synthetic_recording, SyntheticRecordingSpec,
    };

    /// A synthetic recording of `days` at 100 Hz in a temporary folder (kept while the first
    /// value lives), and what a 30 Hz encoder of 300-sample windows expects.
    fn recording(days: f64, seed: u64) -> (tempfile::TempDir, std::path::PathBuf, Expect) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.csv.gz");
        let rec = SyntheticRecordingSpec {
            days,
            rate_hz: 100.0,
            seed,
        };
        write_synthetic_recording(&path, &rec).unwrap();
        let expect = Expect {
            window_len: 300,
            channels: 3,
            what: "the test".into(),
        };
        (tmp, path, expect)
    }

    /// Every window once and in order, whether the caller is outside the pool (the CLI), the
    /// only worker of a one-thread pool (its reading jobs then run while it waits, never a
    /// deadlock), or a worker of a larger pool; the counts are the stream's own.
    #[test]
    fn batches_arrive_in_order_from_outside_and_inside_the_pool() {
        let (_tmp, path, expect) = recording(0.02, 3);
        let spec = synthetic_csv_spec(100.0);
        let cfg = stream_config(300, 30.0, 7);
        let mut direct = RecordingStream::open(&path, &spec, &cfg).unwrap();
        let mut want = Vec::new();
        while let Some(b) = direct.next_batch().unwrap() {
            want.extend(b.start_time_s.iter().map(|t| t.to_bits()));
            want.extend(b.x.iter().map(|v| u64::from(v.to_bits())));
        }
        let want_stats = direct.stats().clone();
        assert!(want.len() > 100 * 300, "a few hundred windows");
        let run = || {
            let mut got = Vec::new();
            let stats = for_each_batch(&path, &spec, &cfg, &expect, false, |b| {
                got.extend(b.start_time_s.iter().map(|t| t.to_bits()));
                got.extend(b.x.iter().map(|v| u64::from(v.to_bits())));
                Ok(())
            })
            .unwrap();
            (got, stats)
        };
        let outside = run();
        assert!(outside.0 == want, "outside the pool");
        assert_eq!(outside.1.samples, want_stats.samples);
        assert_eq!(outside.1.lines, want_stats.lines);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let inside = pool.install(run);
            assert!(inside.0 == want, "inside a pool of {threads}");
            assert_eq!(inside.1.samples, want_stats.samples);
        }
    }

    /// An error from the callback stops the stream and comes back as the result.
    #[test]
    fn an_error_from_the_callback_is_returned() {
        let (_tmp, path, expect) = recording(0.01, 4);
        let mut calls = 0;
        let cfg = stream_config(300, 30.0, 4);
        let r = for_each_batch(
            &path,
            &synthetic_csv_spec(100.0),
            &cfg,
            &expect,
            false,
            |_| {
                calls += 1;
                if calls == 3 {
                    anyhow::bail!("stop here");
                }
                Ok(())
            },
        );
        assert_eq!(calls, 3);
        assert!(r.unwrap_err().to_string().contains("stop here"));
    }
}
