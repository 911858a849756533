//! Streams one synthetic CSV recording through `RecordingStream` and prints its throughput;
//! with `--write DAYS` it first writes the deterministic synthetic recording to PATH.
//!
//! `cargo run --release -p flowfm-data --example stream_recording -- PATH [--write DAYS]
//! [--digest]` (run it under `/usr/bin/time -v` for the peak resident memory and the CPU time).
//! `--digest` also prints an FNV-1a hash of every output bit (samples, start and end times,
//! labels) and the stream's counts, so two builds can be checked to give identical output.

use std::path::PathBuf;
use std::time::Instant;

use flowfm_data::synthetic::{
    synthetic_csv_spec, write_synthetic_recording, SyntheticRecordingSpec,
};
use flowfm_data::{RecordingStream, StreamConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = PathBuf::from(
        args.first()
            .ok_or("usage: stream_recording PATH [--write DAYS]")?,
    );
    if let Some(i) = args.iter().position(|a| a == "--write") {
        let days: f64 = args.get(i + 1).ok_or("--write needs DAYS")?.parse()?;
        let spec = SyntheticRecordingSpec {
            days,
            ..SyntheticRecordingSpec::default()
        };
        let t = Instant::now();
        let s = write_synthetic_recording(&path, &spec)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "wrote {} samples ({:.1} MB CSV, {:.1} MB gzip) in {secs:.1} s ({:.2} M samples/s)",
            s.samples,
            s.csv_bytes as f64 / 1e6,
            s.file_bytes as f64 / 1e6,
            s.samples as f64 / secs / 1e6
        );
    }
    let cfg = StreamConfig::default();
    let t = Instant::now();
    let mut stream = RecordingStream::open(&path, &synthetic_csv_spec(100.0), &cfg)?;
    let mut windows = 0usize;
    let mut checksum = 0f64;
    let digest = args.iter().any(|a| a == "--digest");
    let mut fnv = Fnv::default();
    while let Some(b) = stream.next_batch()? {
        windows += b.len();
        checksum += b.x.iter().step_by(97).map(|&v| f64::from(v)).sum::<f64>();
        if digest {
            b.x.iter().for_each(|v| fnv.add(u64::from(v.to_bits())));
            b.start_time_s.iter().for_each(|v| fnv.add(v.to_bits()));
            b.end_time_s.iter().for_each(|v| fnv.add(v.to_bits()));
            b.y.iter().for_each(|&v| fnv.add(v as u64));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let st = stream.stats();
    println!(
        "streamed {} samples into {windows} windows of {} at {} Hz in {secs:.1} s: \
         {:.2} M samples/s, {:.0} windows/s; peak buffered {} samples per channel (checksum {checksum:.3})",
        st.samples,
        stream.window_len(),
        stream.sample_rate_hz(),
        st.samples as f64 / secs / 1e6,
        windows as f64 / secs,
        stream.peak_buffered_samples()
    );
    if digest {
        println!(
            "digest {:016x}; classes {:?}; {:?}",
            fnv.0,
            stream.class_names(),
            st
        );
    }
    Ok(())
}

/// FNV-1a over 64-bit words (byte by byte, little-endian).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
