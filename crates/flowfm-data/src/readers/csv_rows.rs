//! Row-level machinery shared by the CSV folder reader and the recording stream: a bounded line
//! reader over a plain or gzip file (hashing the bytes it reads), field splitting (quotes
//! honoured, whitespace runs allowed) and a row layout that resolves a spec's columns.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::csv::{TimeUnit, Units};
use super::text;
use super::STANDARD_GRAVITY;
use crate::error::{DataError, Result};

/// Longest line accepted (a file without line breaks must not grow the buffer without bound).
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// Initial size of the line buffer (the decompressed stream is read straight into it); it grows
/// only for a line longer than this, up to [`MAX_LINE_BYTES`].
const READ_BUF_BYTES: usize = 1 << 17;

/// Raw bytes buffered ahead of the gzip decoder.
const RAW_BUF_BYTES: usize = 1 << 16;

/// Counts the raw bytes read through it and, optionally, feeds them into a shared sha256.
struct Tap<R> {
    inner: R,
    hasher: Option<Arc<Mutex<Sha256>>>,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &self.hasher {
            if let Ok(mut h) = h.lock() {
                h.update(&buf[..n]);
            }
        }
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decompressed bytes per chunk handed from the gunzip thread to the reader.
const CHUNK_BYTES: usize = 1 << 17;

/// Chunks decompressed ahead of the reader (besides the one it reads).
const CHUNKS_AHEAD: usize = 3;

/// What the gunzip thread sends.
enum Chunk {
    Data(Vec<u8>),
    /// The stream ended cleanly.
    End,
    Failed(std::io::Error),
}

/// A reader of a decoder that runs on a thread of its own, [`CHUNKS_AHEAD`] chunks ahead; spent
/// chunks go back to the thread for reuse. Errors arrive in order, after the bytes before them;
/// a thread that stops without saying so is an error too. Dropping the reader stops the thread
/// (its next send fails).
struct ThreadedGunzip {
    chunks: std::sync::mpsc::Receiver<Chunk>,
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ThreadedGunzip {
    fn spawn<R: Read + Send + 'static>(mut decoder: R) -> std::io::Result<Self> {
        let (tx, chunks) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS_AHEAD);
        let (spent, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("flowfm-gunzip".into())
            .spawn(move || loop {
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.resize(CHUNK_BYTES, 0);
                let mut n = 0;
                let msg = loop {
                    match decoder.read(&mut buf[n..]) {
                        Ok(0) => break None,
                        Ok(k) => {
                            n += k;
                            if n == buf.len() {
                                break None;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Some(Chunk::Failed(e)),
                    }
                };
                let end = n < buf.len() && msg.is_none();
                buf.truncate(n);
                if n > 0 && tx.send(Chunk::Data(buf)).is_err() {
                    return;
                }
                if let Some(m) = msg.or(end.then_some(Chunk::End)) {
                    let _ = tx.send(m);
                    return;
                }
            })?;
        Ok(Self {
            chunks,
            spent,
            cur: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl Read for ThreadedGunzip {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Chunk::Data(next)) => {
                    let spent = std::mem::replace(&mut self.cur, next);
                    let _ = self.spent.send(spent);
                    self.pos = 0;
                }
                Ok(Chunk::End) => self.done = true,
                Ok(Chunk::Failed(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(std::io::Error::other("the gunzip thread stopped"));
                }
            }
        }
        let k = (self.cur.len() - self.pos).min(out.len());
        out[..k].copy_from_slice(&self.cur[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`] from a plain or gzip stream (detected by its magic
/// bytes), counting them from 1; I/O and decompression errors name the file and line.
///
/// The (decompressed) bytes are read in large chunks into one reusable buffer and lines are
/// handed out as slices of it ([`LineReader::next_line_ref`]): no copy and no allocation per line.
pub(crate) struct LineReader {
    inner: Box<dyn Read + Send>,
    /// `buf[start..end]` is read but not yet handed out.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// `buf[start..scanned]` is known to hold no line break.
    scanned: usize,
    eof: bool,
    path: PathBuf,
    line_no: usize,
    hasher: Option<Arc<Mutex<Sha256>>>,
    bytes: Arc<AtomicU64>,
}

impl LineReader {
    /// Opens `path`, hashing its raw bytes when `hash` is set.
    pub(crate) fn open(path: &Path, hash: bool) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        Self::from_reader(path.to_path_buf(), Box::new(file), hash)
    }

    /// Reads from `reader`; `path` is only used in messages.
    pub(crate) fn from_reader(
        path: PathBuf,
        reader: Box<dyn Read + Send>,
        hash: bool,
    ) -> Result<Self> {
        Self::with_options(path, reader, hash, false)
    }

    /// As [`LineReader::from_reader`]; with `gunzip_thread`, a gzip stream is decompressed on a
    /// thread of its own, a few chunks ahead of the reader (see [`ThreadedGunzip`]).
    pub(crate) fn with_options(
        path: PathBuf,
        reader: Box<dyn Read + Send>,
        hash: bool,
        gunzip_thread: bool,
    ) -> Result<Self> {
        let hasher = hash.then(|| Arc::new(Mutex::new(Sha256::new())));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut raw = Tap {
            inner: reader,
            hasher: hasher.clone(),
            bytes: Arc::clone(&bytes),
        };
        // The first two bytes decide gzip or not (a reader may hand out fewer per read).
        let mut head = [0u8; 2];
        let mut n = 0;
        while n < head.len() {
            match raw.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::io(&path, e)),
            }
        }
        let gzip = text::is_gzip(&head[..n]);
        let buffered = BufReader::with_capacity(
            RAW_BUF_BYTES,
            std::io::Cursor::new(head[..n].to_vec()).chain(raw),
        );
        let inner: Box<dyn Read + Send> = if gzip {
            let gz = flate2::bufread::MultiGzDecoder::new(buffered);
            if gunzip_thread {
                Box::new(ThreadedGunzip::spawn(gz).map_err(|e| DataError::io(&path, e))?)
            } else {
                Box::new(gz)
            }
        } else {
            Box::new(buffered)
        };
        Ok(Self {
            inner,
            buf: vec![0; READ_BUF_BYTES],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            path,
            line_no: 0,
            hasher,
            bytes,
        })
    }

    /// Raw (possibly compressed) bytes consumed from the source so far, for progress bars.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The file named in messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next line into `buf` (without `\n` / `\r\n`); its 1-based number, or `None` at the end.
    pub(crate) fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        buf.clear();
        Ok(self.next_line_ref()?.map(|(no, line)| {
            buf.extend_from_slice(line);
            no
        }))
    }

    /// The next line (without `\n` / `\r\n`) and its 1-based number, or `None` at the end; the
    /// line borrows the reader's buffer until the next call.
    pub(crate) fn next_line_ref(&mut self) -> Result<Option<(usize, &[u8])>> {
        let (a, b) = loop {
            let from = self.scanned.max(self.start);
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let b = from + i;
                let a = self.start;
                self.start = b + 1;
                self.scanned = self.start;
                break (a, b);
            }
            self.scanned = self.end;
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let a = self.start;
                self.start = self.end;
                break (a, self.end);
            }
            self.refill()?;
        };
        if b - a > MAX_LINE_BYTES {
            return Err(self.too_long());
        }
        self.line_no += 1;
        let line = &self.buf[a..b];
        let line = match line {
            [head @ .., b'\r'] => head,
            _ => line,
        };
        Ok(Some((self.line_no, line)))
    }

    fn too_long(&self) -> DataError {
        DataError::parse(
            &self.path,
            self.line_no + 1,
            format!("line longer than {MAX_LINE_BYTES} bytes (not a text table?)"),
        )
    }

    /// Moves the unfinished line to the buffer's front (growing the buffer when the line fills
    /// it) and reads more bytes after it; sets `eof` at the end of the stream.
    fn refill(&mut self) -> Result<()> {
        let pending = self.end - self.start;
        if pending > MAX_LINE_BYTES {
            return Err(self.too_long());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.scanned -= self.start;
            self.start = 0;
            self.end = pending;
        }
        if self.end == self.buf.len() {
            let grown = (2 * self.buf.len()).min(MAX_LINE_BYTES + 1);
            self.buf.resize(grown, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(DataError::parse(
                        &self.path,
                        self.line_no + 1,
                        format!("read failed (corrupt or truncated gzip stream?): {e}"),
                    ))
                }
            }
        }
    }

    /// Lower-case hex sha256 of the raw bytes read so far (call after the last line).
    pub(crate) fn sha256_hex(&self) -> Option<String> {
        let h = self.hasher.as_ref()?.lock().ok()?.clone();
        Some(
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )
    }
}

/// How fields are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delim {
    /// One byte (`,` `;` tab...); double quotes are honoured.
    Byte(u8),
    /// Runs of spaces and tabs.
    Whitespace,
}

/// The high bit of each byte of `w` that equals `b`, nothing else (no borrow crosses bytes).
fn bytes_equal(w: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = w ^ (0x0101_0101_0101_0101 * u64::from(b));
    // A byte's high bit ends up clear exactly when the byte of `x` is zero.
    !(((x & LOW7) + LOW7) | x) & !LOW7
}

/// The fields of one line, as byte ranges into it (or owned copies when quotes were removed).
#[derive(Default)]
pub(crate) struct Fields {
    ranges: Vec<(usize, usize)>,
    owned: Vec<Vec<u8>>,
    quoted: bool,
}

impl Fields {
    /// Splits `line`; `false` on an unterminated quote.
    pub(crate) fn split(&mut self, line: &[u8], delim: Delim) -> bool {
        self.ranges.clear();
        self.quoted = false;
        match delim {
            Delim::Whitespace => {
                let mut start = None;
                for (i, &b) in line.iter().enumerate() {
                    let ws = b == b' ' || b == b'\t';
                    match (ws, start) {
                        (false, None) => start = Some(i),
                        (true, Some(s)) => {
                            self.ranges.push((s, i));
                            start = None;
                        }
                        _ => {}
                    }
                }
                if let Some(s) = start {
                    self.ranges.push((s, line.len()));
                }
                true
            }
            Delim::Byte(sep) => {
                // One pass, eight bytes at a time: separators, and the first quote (which
                // switches to the unquoting splitter).
                let mut s = 0;
                let mut at = |i: usize, ranges: &mut Vec<(usize, usize)>| {
                    if line[i] == sep {
                        ranges.push((s, i));
                        s = i + 1;
                        true
                    } else {
                        false
                    }
                };
                let words = line.chunks_exact(8);
                let tail = words.remainder();
                let mut base = 0;
                for word in words {
                    let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
                    let mut hits = bytes_equal(w, sep) | bytes_equal(w, b'"');
                    while hits != 0 {
                        let i = base + (hits.trailing_zeros() / 8) as usize;
                        if !at(i, &mut self.ranges) {
                            return self.split_quoted(line, sep);
                        }
                        hits &= hits - 1;
                    }
                    base += 8;
                }
                for (k, &b) in tail.iter().enumerate() {
                    if (b == sep || b == b'"') && !at(base + k, &mut self.ranges) {
                        return self.split_quoted(line, sep);
                    }
                }
                self.ranges.push((s, line.len()));
                true
            }
        }
    }

    fn split_quoted(&mut self, line: &[u8], sep: u8) -> bool {
        self.ranges.clear();
        self.quoted = true;
        text::split_csv(line, sep, &mut self.owned)
    }

    /// Number of fields.
    pub(crate) fn len(&self) -> usize {
        if self.quoted {
            self.owned.len()
        } else {
            self.ranges.len()
        }
    }

    /// Field `i` of `line` (the line given to [`Fields::split`]), trimmed.
    pub(crate) fn get<'a>(&'a self, line: &'a [u8], i: usize) -> &'a [u8] {
        if self.quoted {
            text::trim(&self.owned[i])
        } else {
            let (a, b) = self.ranges[i];
            text::trim(&line[a..b])
        }
    }
}

/// Scale factor from `u` to g (accelerometer) or rad/s (gyroscope).
pub(crate) fn unit_factor(u: Units) -> f64 {
    match u {
        Units::G | Units::RadPerSecond => 1.0,
        Units::MilliG => 1e-3,
        Units::MetersPerSecond2 => 1.0 / STANDARD_GRAVITY,
        Units::DegPerSecond => std::f64::consts::PI / 180.0,
        Units::Scale(f) => f,
    }
}

/// A finite time field (already trimmed); the slow path only builds the message.
#[inline]
fn finite_time(path: &Path, line_no: usize, f: &[u8]) -> Result<f64> {
    match text::parse_f64(f) {
        Some(v) if v.is_finite() => Ok(v),
        _ => text::finite_f64(path, line_no, f, "time"),
    }
}

/// A column reference as a spec gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Col {
    Index(usize),
    Name(String),
}

/// What a row layout needs from a spec.
#[derive(Clone, Debug)]
pub(crate) struct LayoutSpec {
    pub(crate) delim: Delim,
    pub(crate) has_header: bool,
    pub(crate) channels: Vec<Col>,
    pub(crate) factors: Vec<f64>,
    pub(crate) time: Option<(Col, TimeUnit)>,
    pub(crate) label: Option<Col>,
    pub(crate) subject: Option<Col>,
}

/// A spec's columns resolved against one file's header.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) delim: Delim,
    pub(crate) header: Vec<String>,
    ncols: Option<usize>,
    pub(crate) chan_cols: Vec<usize>,
    factors: Vec<f64>,
    time: Option<(usize, TimeUnit)>,
    pub(crate) label_col: Option<usize>,
    pub(crate) subject_col: Option<usize>,
    max_col: usize,
}

/// One parsed row: the sample's time (seconds, when there is a time column); channel values go
/// to the caller's buffer, label and subject fields are read from the [`Fields`].
pub(crate) struct Row {
    pub(crate) time_s: Option<f64>,
}

impl Layout {
    /// Reads the header (when the spec has one) from `lines` and resolves the columns.
    pub(crate) fn read(lines: &mut LineReader, spec: &LayoutSpec) -> Result<Self> {
        let path = lines.path().to_path_buf();
        let mut header = Vec::new();
        if spec.has_header {
            let mut buf = Vec::new();
            let no = lines
                .next_line(&mut buf)?
                .ok_or_else(|| DataError::format(&path, "empty file (no header)"))?;
            let mut f = Fields::default();
            if !f.split(text::trim(&buf), spec.delim) {
                return Err(DataError::parse(&path, no, "unterminated quote in header"));
            }
            header = (0..f.len())
                .map(|i| String::from_utf8_lossy(f.get(&buf, i)).into_owned())
                .collect();
        }
        let resolve = |c: &Col, what: &str| -> Result<usize> {
            match c {
                Col::Index(i) => {
                    if spec.has_header && *i >= header.len() {
                        return Err(DataError::parse(
                            &path,
                            1,
                            format!(
                                "{what}: column index {i} is past the header's {} columns",
                                header.len()
                            ),
                        ));
                    }
                    Ok(*i)
                }
                Col::Name(n) => header
                    .iter()
                    .position(|h| h == n || h.eq_ignore_ascii_case(n))
                    .ok_or_else(|| {
                        DataError::parse(
                            &path,
                            1,
                            format!(
                                "{what}: no column named `{n}` in the header ({})",
                                header.join(", ")
                            ),
                        )
                    }),
            }
        };
        let chan_cols: Vec<usize> = spec
            .channels
            .iter()
            .map(|c| resolve(c, "channel"))
            .collect::<Result<_>>()?;
        let time = spec
            .time
            .as_ref()
            .map(|(c, u)| resolve(c, "time").map(|i| (i, *u)))
            .transpose()?;
        let label_col = spec
            .label
            .as_ref()
            .map(|c| resolve(c, "label"))
            .transpose()?;
        let subject_col = spec
            .subject
            .as_ref()
            .map(|c| resolve(c, "subject"))
            .transpose()?;
        let max_col = chan_cols
            .iter()
            .chain(time.as_ref().map(|t| &t.0))
            .chain(label_col.iter())
            .chain(subject_col.iter())
            .copied()
            .max()
            .unwrap_or(0);
        Ok(Self {
            delim: spec.delim,
            ncols: spec.has_header.then_some(header.len()),
            header,
            chan_cols,
            factors: spec.factors.clone(),
            time,
            label_col,
            subject_col,
            max_col,
        })
    }

    /// Output channel names from the header (or `ch<k>` without one).
    pub(crate) fn channel_names(&self) -> Vec<String> {
        self.chan_cols
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                self.header
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("ch{k}"))
            })
            .collect()
    }

    /// How messages name channel `k`.
    fn channel_what(&self, k: usize) -> String {
        let c = self.chan_cols[k];
        match self.header.get(c) {
            Some(h) => format!("column `{h}`"),
            None => format!("channel {} (column {c})", k + 1),
        }
    }

    /// Parses one line (already split into `fields`); `values` receives the channels in g or
    /// rad/s. `None` for a blank line.
    pub(crate) fn parse(
        &mut self,
        path: &Path,
        line_no: usize,
        line: &[u8],
        fields: &mut Fields,
        values: &mut [f32],
    ) -> Result<Option<Row>> {
        let line = text::trim(line);
        if line.is_empty() {
            return Ok(None);
        }
        if !fields.split(line, self.delim) {
            return Err(DataError::parse(path, line_no, "unterminated quote"));
        }
        let n = *self.ncols.get_or_insert(fields.len());
        if fields.len() != n {
            return Err(DataError::parse(
                path,
                line_no,
                format!("expected {n} fields, found {}", fields.len()),
            ));
        }
        if self.max_col >= n {
            return Err(DataError::parse(
                path,
                line_no,
                format!(
                    "column {} (0-based) does not exist ({n} fields)",
                    self.max_col
                ),
            ));
        }
        let time_s = match self.time {
            None => None,
            Some((tc, unit)) => {
                let f = fields.get(line, tc);
                Some(match unit {
                    TimeUnit::DateTime => text::parse_datetime(f).ok_or_else(|| {
                        DataError::parse(
                            path,
                            line_no,
                            format!(
                                "time `{}` is not a date-time YYYY-MM-DD HH:MM:SS[.fff]",
                                text::show(f)
                            ),
                        )
                    })?,
                    TimeUnit::Seconds => finite_time(path, line_no, f)?,
                    TimeUnit::Milliseconds => finite_time(path, line_no, f)? * 1e-3,
                    TimeUnit::Microseconds => finite_time(path, line_no, f)? * 1e-6,
                    TimeUnit::Nanoseconds => finite_time(path, line_no, f)? * 1e-9,
                })
            }
        };
        for (k, (&c, slot)) in self.chan_cols.iter().zip(values.iter_mut()).enumerate() {
            let f = fields.get(line, c);
            let v = match text::parse_f64(f) {
                Some(v) if v.is_finite() => v,
                // The slow path only builds the message.
                _ => text::finite_f64(path, line_no, f, &self.channel_what(k))?,
            };
            *slot = (v * self.factors[k]) as f32;
        }
        Ok(Some(Row { time_s }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_plain_quoted_and_whitespace_lines() {
        let mut f = Fields::default();
        let line = b"a; b ;;c";
        assert!(f.split(line, Delim::Byte(b';')));
        let got: Vec<&[u8]> = (0..f.len()).map(|i| f.get(line, i)).collect();
        assert_eq!(got, vec![&b"a"[..], b"b", b"", b"c"]);
        let line = br#"1,"x,y",2"#;
        assert!(f.split(line, Delim::Byte(b',')));
        assert_eq!(f.len(), 3);
        assert_eq!(f.get(line, 1), b"x,y");
        let line = b"  12 \t 3  4 ";
        assert!(f.split(line, Delim::Whitespace));
        let got: Vec<&[u8]> = (0..f.len()).map(|i| f.get(line, i)).collect();
        assert_eq!(got, vec![&b"12"[..], b"3", b"4"]);
    }

    #[test]
    fn fields_split_agrees_with_a_plain_split_at_every_length_and_position() {
        // Lines of 0 to 40 bytes with separators at every position (so every word boundary and
        // the tail are exercised), bytes next to the separator's value, and a quote anywhere.
        let mut f = Fields::default();
        let mut line = Vec::new();
        for len in 0..40usize {
            for seed in 0..60u64 {
                line.clear();
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ len as u64;
                for _ in 0..len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    line.push(match x % 7 {
                        0 => b';',
                        1 => b';' + 1,
                        2 => b';' - 1,
                        3 => 0x80 | b';',
                        _ => b'0' + (x % 10) as u8,
                    });
                }
                assert!(f.split(&line, Delim::Byte(b';')));
                let got: Vec<&[u8]> = (0..f.len()).map(|i| f.get(&line, i)).collect();
                let want: Vec<&[u8]> = line.split(|&b| b == b';').map(text::trim).collect();
                assert_eq!(got, want, "{line:?}");
                if len > 0 {
                    let q = (x as usize) % len;
                    line[q] = b'"';
                    line.push(b'"');
                    f.split(&line, Delim::Byte(b';'));
                    assert!(
                        f.quoted,
                        "a quote at {q} of {line:?} must take the quoted path"
                    );
                }
            }
        }
    }

    #[test]
    fn line_reader_numbers_lines_caps_length_and_reads_gzip() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"a\r\nb\n\nlast").unwrap();
        let gz = e.finish().unwrap();
        let mut r =
            LineReader::from_reader("x.gz".into(), Box::new(std::io::Cursor::new(gz)), true)
                .unwrap();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(no) = r.next_line(&mut buf).unwrap() {
            got.push((no, String::from_utf8(buf.clone()).unwrap()));
        }
        let want: Vec<(usize, String)> = [(1, "a"), (2, "b"), (3, ""), (4, "last")]
            .iter()
            .map(|(n, s)| (*n, s.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(r.sha256_hex().map(|s| s.len()), Some(64));

        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let mut r =
            LineReader::from_reader("long".into(), Box::new(std::io::Cursor::new(long)), false)
                .unwrap();
        let err = r.next_line(&mut buf).unwrap_err();
        assert!(err.to_string().contains("long:1:"), "{err}");
    }
}
