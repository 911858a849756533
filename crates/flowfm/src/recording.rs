//! Long recordings through a trained model in bounded memory: `flowfm embed --recording` and
//! `flowfm predict --recording`. A reader thread streams the file (`flowfm_data::stream`: read,
//! convert units, resample, window) into a channel of at most two batches while this thread
//! encodes, so reading overlaps encoding; results are written as they come (HDF5 datasets that
//! grow by chunks, CSV lines through a buffer), so memory does not depend on the recording's
//! length. Outputs are written under a temporary name and renamed only when complete.

use crate::encode::write_str_attr;
use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use flowfm_data::readers::CsvFolderSpec;
use flowfm_data::stream::{RecordingStream, StreamConfig, StreamStats, WindowBatch};
use flowfm_models::HarNet;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::mpsc::sync_channel;

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

/// Streams `path` with `spec` / `cfg` and calls `f` on every batch of windows, reading on a
/// second thread (at most two batches ahead). An error unless the stream's windows have the
/// shape `expect` names. Returns the stream's counts.
pub fn for_each_batch(
    path: &Path,
    spec: &CsvFolderSpec,
    cfg: &StreamConfig,
    expect: &Expect,
    progress: bool,
    mut f: impl FnMut(&WindowBatch) -> Result<()>,
) -> Result<StreamStats> {
    let mut stream = RecordingStream::open(path, spec, cfg)
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
    let (tx, rx) = sync_channel::<Result<(WindowBatch, u64)>>(2);
    let reader = std::thread::spawn(move || -> StreamStats {
        loop {
            match stream.next_batch() {
                Ok(Some(batch)) => {
                    let read = stream.bytes_read();
                    if tx.send(Ok((batch, read))).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(anyhow!(e)));
                    break;
                }
            }
        }
        stream.stats().clone()
    });
    let mut windows = 0usize;
    for item in rx.iter() {
        let (batch, read) = item?;
        f(&batch)?;
        windows += batch.len();
        bar.set_position(read);
        bar.set_message(format!("{windows} windows"));
    }
    bar.finish_and_clear();
    reader
        .join()
        .map_err(|_| anyhow!("the reader thread of {} panicked", path.display()))
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
