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

    /// The bytes read but not yet handed out (possibly none, or an unfinished line: the next
    /// [`LineReader::next_line_ref`] reads more).
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Hands out the first `bytes` of [`LineReader::unread`], which hold `lines` whole lines
    /// (their line ends included), as if read one by one.
    pub(crate) fn skip_lines(&mut self, bytes: usize, lines: usize) {
        debug_assert!(bytes <= self.end - self.start);
        self.start += bytes;
        self.scanned = self.scanned.max(self.start);
        self.line_no += lines;
    }

    /// Lines handed out so far.
    pub(crate) fn line_no(&self) -> usize {
        self.line_no
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

/// Bit `i` set exactly when byte `i` of `m` has its high bit set, for an `m` with no other bits
/// (what [`text::bytes_equal`] returns): the multiply gathers the eight high bits into the top byte.
fn byte_mask(m: u64) -> u64 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// For a chunk of at most 64 bytes: bit `i` set where byte `i` is `sep`, and whether a quote
/// occurs. Eight bytes at a time without a branch per byte; the last few bytes are read as the
/// chunk's last eight (overlapping the word before) when there are eight, else assembled in a
/// register.
fn separators(chunk: &[u8], sep: u8) -> (u64, bool) {
    let mut seps = 0u64;
    let mut quotes = 0u64;
    let words = chunk.chunks_exact(8);
    let t = words.remainder().len();
    let mut wi = 0;
    for word in words {
        // `black_box` keeps this loop scalar: vectorised (SSE2 has no 64-bit multiply) it took
        // twice the instructions for the usual four or five words.
        let w = std::hint::black_box(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        quotes |= text::bytes_equal(w, b'"');
        seps |= byte_mask(text::bytes_equal(w, sep)) << (8 * wi);
        wi += 1;
    }
    if t > 0 {
        let (w, skip) = if chunk.len() >= 8 {
            let last = &chunk[chunk.len() - 8..];
            (
                u64::from_le_bytes(last.try_into().unwrap_or_default()),
                8 - t,
            )
        } else {
            let w = chunk
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
            (w, 0)
        };
        let keep = (1u64 << t) - 1;
        quotes |= (byte_mask(text::bytes_equal(w, b'"')) >> skip) & keep;
        seps |= ((byte_mask(text::bytes_equal(w, sep)) >> skip) & keep) << (8 * wi);
    }
    (seps, quotes != 0)
}

/// [`Layout::parse_plain`] with AVX2: each 64-byte chunk's [`separators`] with two 32-byte
/// compares, then the row, all in one function pulp compiles with the CPU's features (so the
/// intrinsics inline, and the word arithmetic of the number parser gets BMI2's shifts).
#[cfg(target_arch = "x86_64")]
struct PlainAvx2<'a> {
    layout: &'a Layout,
    v3: pulp::x86::V3,
    line: &'a [u8],
    sep: u8,
    values: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for PlainAvx2<'_> {
    type Output = Option<PlainRow>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Option<PlainRow> {
        let mut masks = [(0u64, false); PLAIN_CHUNKS];
        let chunks = self.line.len().div_ceil(64);
        for (m, chunk) in masks.iter_mut().zip(self.line.chunks(64)) {
            *m = separators_avx2(self.v3, chunk, self.sep);
        }
        self.layout
            .parse_plain_with(self.line, self.values, &masks[..chunks], Some(self.v3))
    }
}

/// [`Layout::parse_plain_lines`] with AVX2: for each line, the separators, line ends and quotes
/// of the 64-byte chunks from its start (two 32-byte compares each), then its row, every line of
/// the block inside this one function.
#[cfg(target_arch = "x86_64")]
struct PlainLinesAvx2<'a> {
    layout: &'a Layout,
    v3: pulp::x86::V3,
    buf: &'a [u8],
    sep: u8,
    max: usize,
    out: &'a mut PlainLines,
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for PlainLinesAvx2<'_> {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> usize {
        use std::arch::x86_64::__m256i;
        let (v3, buf, out) = (self.v3, self.buf, self.out);
        let channels = self.layout.chan_cols.len();
        let sep_v = v3.avx._mm256_set1_epi8(self.sep as i8);
        let nl_v = v3.avx._mm256_set1_epi8(b'\n' as i8);
        let quote_v = v3.avx._mm256_set1_epi8(b'"' as i8);
        let bits = |x: __m256i, v: __m256i| eq_bits(v3, x, v);
        // Room for every row up front (no call inside the loop, which would spill the
        // registers); cut to the rows taken at the end.
        out.values.resize(self.max * channels, 0.0);
        let mut p = 0usize;
        while out.rows.len() < self.max {
            // The chunks of the line from `p` up to its line end (whole chunks inside `buf`).
            let mut masks = [(0u64, false); PLAIN_CHUNKS];
            let mut end = None;
            for (c, m) in masks.iter_mut().enumerate() {
                let q = p + 64 * c;
                if q + 64 > buf.len() {
                    break;
                }
                let (lo, hi) = (load32(buf, q), load32(buf, q + 32));
                let nl = bits(lo, nl_v) | bits(hi, nl_v) << 32;
                // Bits below the line end only (all of them when it lies further on).
                let keep = if nl == 0 {
                    u64::MAX
                } else {
                    (nl & nl.wrapping_neg()) - 1
                };
                let seps = (bits(lo, sep_v) | bits(hi, sep_v) << 32) & keep;
                let quotes = (bits(lo, quote_v) | bits(hi, quote_v) << 32) & keep;
                *m = (seps, quotes != 0);
                if nl != 0 {
                    end = Some((c + 1, q + nl.trailing_zeros() as usize));
                    break;
                }
            }
            let Some((chunks, nl)) = end else {
                break;
            };
            let mut e = nl;
            if e > p && buf[e - 1] == b'\r' {
                e -= 1;
            }
            let line = &buf[p..e];
            // Blank lines and whitespace around a line are the general path's (it trims).
            match (line.first(), line.last()) {
                (Some(f), Some(l)) if !f.is_ascii_whitespace() && !l.is_ascii_whitespace() => {}
                _ => break,
            }
            let at = out.rows.len() * channels;
            let Some(mut row) = self.layout.parse_plain_with(
                line,
                &mut out.values[at..at + channels],
                &masks[..chunks],
                Some(v3),
            ) else {
                break;
            };
            row.label = row.label.map(|(a, b)| (p + a, p + b));
            row.subject = row.subject.map(|(a, b)| (p + a, p + b));
            out.rows.push(row);
            p = nl + 1;
        }
        out.values.truncate(out.rows.len() * channels);
        p
    }
}

/// [`separators`] with AVX2 for chunks of 32 to 64 bytes: two 32-byte compares (the second
/// overlapping the first when the chunk is shorter than 64), one instruction each to gather the
/// bits; shorter chunks take [`separators`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn separators_avx2(v3: pulp::x86::V3, chunk: &[u8], sep: u8) -> (u64, bool) {
    use std::arch::x86_64::__m256i;
    let n = chunk.len();
    if !(32..=64).contains(&n) {
        return separators(chunk, sep);
    }
    let sep_v = v3.avx._mm256_set1_epi8(sep as i8);
    let quote_v = v3.avx._mm256_set1_epi8(b'"' as i8);
    let mask = |x: __m256i, v: __m256i| eq_bits(v3, x, v);
    let (lo, hi) = (load32(chunk, 0), load32(chunk, n - 32));
    let seps = mask(lo, sep_v) | mask(hi, sep_v) << (n - 32);
    let quotes = mask(lo, quote_v) | mask(hi, quote_v);
    (seps, quotes != 0)
}

/// The 32 bytes of `bytes` from `at` in an AVX2 register (`at + 32 <= bytes.len()`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load32(bytes: &[u8], at: usize) -> std::arch::x86_64::__m256i {
    let mut b = [0u8; 32];
    b.copy_from_slice(&bytes[at..at + 32]);
    pulp::cast(b)
}

/// Bit `i` set where byte `i` of `x` equals the byte repeated in `v`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn eq_bits(v3: pulp::x86::V3, x: std::arch::x86_64::__m256i, v: std::arch::x86_64::__m256i) -> u64 {
    u64::from(
        v3.avx2
            ._mm256_movemask_epi8(v3.avx2._mm256_cmpeq_epi8(x, v)) as u32,
    )
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
                // 64 bytes at a time: a bitmask of the separators (and whether a quote, which
                // switches to the unquoting splitter, occurs), built eight bytes at a time
                // without branches; then one step per separator, so the loop runs as many times
                // as the line has fields (the same for every line of a file: well predicted).
                let mut s = 0;
                for (ci, chunk) in line.chunks(64).enumerate() {
                    let (mut seps, quotes) = separators(chunk, sep);
                    if quotes {
                        return self.split_quoted(line, sep);
                    }
                    while seps != 0 {
                        let i = ci * 64 + seps.trailing_zeros() as usize;
                        self.ranges.push((s, i));
                        s = i + 1;
                        seps &= seps - 1;
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

    /// Where field `i` lies in the line given to [`Fields::split`] (untrimmed), unless quotes
    /// were removed (then only [`Fields::get`] has it).
    pub(crate) fn range(&self, i: usize) -> Option<(usize, usize)> {
        if self.quoted {
            None
        } else {
            self.ranges.get(i).copied()
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
fn finite_time(
    path: &Path,
    line_no: usize,
    line: &[u8],
    fields: &Fields,
    col: usize,
) -> Result<f64> {
    let parsed = match fields.range(col) {
        Some((a, b)) => text::parse_f64_at(line, a, b),
        None => text::parse_f64(fields.get(line, col)),
    };
    match parsed {
        Some(v) if v.is_finite() => Ok(v),
        _ => text::finite_f64(path, line_no, fields.get(line, col), "time"),
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
    /// What each column up to `max_col` is, for [`Layout::parse_plain`].
    roles: Vec<Role>,
    /// The CPU's AVX2 instructions, when it has them (for [`Layout::parse_plain`]).
    #[cfg(target_arch = "x86_64")]
    v3: Option<pulp::x86::V3>,
}

/// Lines of at most this many 64-byte chunks take [`Layout::parse_plain`].
const PLAIN_CHUNKS: usize = 4;

/// What a column is to [`Layout::parse_plain`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Skip,
    /// The time column: in seconds (`None`), or the factor from its unit to seconds.
    Time(Option<f64>),
    /// Channel `k`.
    Channel(usize),
    Label,
    Subject,
}

/// A row [`Layout::parse_plain`] parsed: the time in seconds (when there is a time column) and
/// where the label and subject fields lie in the line (untrimmed).
pub(crate) struct PlainRow {
    pub(crate) time_s: Option<f64>,
    pub(crate) label: Option<(usize, usize)>,
    pub(crate) subject: Option<(usize, usize)>,
}

/// The rows of a block of whole lines ([`Layout::parse_plain_lines`]).
#[derive(Default)]
pub(crate) struct PlainLines {
    /// Row after row, each row's channels in g or rad/s.
    pub(crate) values: Vec<f32>,
    /// Each row's time, and where its label and subject fields lie in the buffer.
    pub(crate) rows: Vec<PlainRow>,
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
        let mut roles = vec![Role::Skip; max_col + 1];
        for (k, &c) in chan_cols.iter().enumerate() {
            roles[c] = Role::Channel(k);
        }
        // A role set later wins, as in `parse`, which reads each column for every role it has.
        // A column with two roles keeps the general path (see `plain_ok`).
        if let Some((c, unit)) = time {
            roles[c] = match unit {
                TimeUnit::Seconds => Role::Time(None),
                TimeUnit::Milliseconds => Role::Time(Some(1e-3)),
                TimeUnit::Microseconds => Role::Time(Some(1e-6)),
                TimeUnit::Nanoseconds => Role::Time(Some(1e-9)),
                TimeUnit::DateTime => Role::Skip,
            };
        }
        if let Some(c) = label_col {
            roles[c] = Role::Label;
        }
        if let Some(c) = subject_col {
            roles[c] = Role::Subject;
        }
        let distinct = {
            let mut cols: Vec<usize> = chan_cols
                .iter()
                .chain(time.as_ref().map(|t| &t.0))
                .chain(label_col.iter())
                .chain(subject_col.iter())
                .copied()
                .collect();
            let n = cols.len();
            cols.sort_unstable();
            cols.dedup();
            cols.len() == n
        };
        let date_time = matches!(time, Some((_, TimeUnit::DateTime)));
        if !distinct || date_time {
            roles.clear();
        }
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
            roles,
            #[cfg(target_arch = "x86_64")]
            v3: pulp::x86::V3::try_new(),
        })
    }

    /// [`Layout::parse`]'s common case in one pass over the line, without recording the fields:
    /// a one-byte delimiter, no quote, the expected number of fields, and every time and channel
    /// field a finite number. The values equal `parse`'s bit for bit (same parser, same scale
    /// factors). `None` for anything else (including a blank line, a column with two roles, a
    /// date-time column, or before the number of fields is known): then `parse` reads the line
    /// and gives its result or its error.
    pub(crate) fn parse_plain(&self, line: &[u8], values: &mut [f32]) -> Option<PlainRow> {
        let Delim::Byte(sep) = self.delim else {
            return None;
        };
        // The separators of each 64-byte chunk are found first (lines longer than
        // 64 * PLAIN_CHUNKS bytes take the general path).
        let chunks = line.len().div_ceil(64);
        if chunks > PLAIN_CHUNKS {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            return pulp::Simd::vectorize(
                v3,
                PlainAvx2 {
                    layout: self,
                    v3,
                    line,
                    sep,
                    values,
                },
            );
        }
        let mut masks = [(0u64, false); PLAIN_CHUNKS];
        for (m, chunk) in masks.iter_mut().zip(line.chunks(64)) {
            *m = separators(chunk, sep);
        }
        self.parse_plain_with(line, values, &masks[..chunks], None)
    }

    /// Parses whole lines from the start of `buf` while each is a row [`Layout::parse_plain`]
    /// takes, ends in `\n` inside `buf` (a `\r` before it dropped) and has no whitespace at
    /// either end, at most `max` of them, into `out` (cleared first). Returns the bytes those
    /// lines span, line ends included: the first line it does not take (and everything after it)
    /// is left to the general path, so every error stays the general path's. Parses nothing
    /// without AVX2, or before the general path has read a row (the number of fields unknown).
    pub(crate) fn parse_plain_lines(&self, buf: &[u8], max: usize, out: &mut PlainLines) -> usize {
        out.values.clear();
        out.rows.clear();
        let Delim::Byte(sep) = self.delim else {
            return 0;
        };
        if self.ncols.is_none() {
            return 0;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            return pulp::Simd::vectorize(
                v3,
                PlainLinesAvx2 {
                    layout: self,
                    v3,
                    buf,
                    sep,
                    max,
                    out,
                },
            );
        }
        let _ = (buf, max, sep);
        0
    }

    /// [`Layout::parse_plain`] given each 64-byte chunk's separator bits and quote flag; numbers
    /// through `simd`'s register path when given ([`text::parse_f64_in`]).
    #[inline(always)]
    fn parse_plain_with(
        &self,
        line: &[u8],
        values: &mut [f32],
        masks: &[(u64, bool)],
        simd: Option<text::Simd>,
    ) -> Option<PlainRow> {
        let n = self.ncols?;
        if self.roles.is_empty() || self.max_col >= n {
            return None;
        }
        let mut row = PlainRow {
            time_s: None,
            label: None,
            subject: None,
        };
        let mut field = 0usize;
        let mut start = 0usize;
        for (ci, &(mut seps, quotes)) in masks.iter().enumerate() {
            if quotes {
                return None;
            }
            while seps != 0 {
                let i = ci * 64 + seps.trailing_zeros() as usize;
                if field + 1 >= n
                    || !self.take_plain(line, values, field, (start, i), &mut row, simd)
                {
                    return None;
                }
                field += 1;
                start = i + 1;
                seps &= seps - 1;
            }
        }
        if field + 1 != n
            || !self.take_plain(line, values, field, (start, line.len()), &mut row, simd)
        {
            return None;
        }
        Some(row)
    }

    /// Field `field` of a plain row is `line[a..b]`: parses or notes it; `false` when it is not
    /// plain (not a finite number where one is needed).
    #[inline(always)]
    fn take_plain(
        &self,
        line: &[u8],
        values: &mut [f32],
        field: usize,
        (a, b): (usize, usize),
        row: &mut PlainRow,
        simd: Option<text::Simd>,
    ) -> bool {
        match self.roles.get(field) {
            None | Some(Role::Skip) => true,
            Some(&Role::Channel(k)) => match text::parse_f64_in(simd, line, a, b) {
                Some(v) if v.is_finite() => {
                    values[k] = (v * self.factors[k]) as f32;
                    true
                }
                _ => false,
            },
            Some(&Role::Time(scale)) => match text::parse_f64_in(simd, line, a, b) {
                Some(t) if t.is_finite() => {
                    row.time_s = Some(scale.map_or(t, |f| t * f));
                    true
                }
                _ => false,
            },
            Some(Role::Label) => {
                row.label = Some((a, b));
                true
            }
            Some(Role::Subject) => {
                row.subject = Some((a, b));
                true
            }
        }
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
            Some((tc, unit)) => Some(match unit {
                TimeUnit::DateTime => {
                    let f = fields.get(line, tc);
                    text::parse_datetime(f).ok_or_else(|| {
                        DataError::parse(
                            path,
                            line_no,
                            format!(
                                "time `{}` is not a date-time YYYY-MM-DD HH:MM:SS[.fff]",
                                text::show(f)
                            ),
                        )
                    })?
                }
                TimeUnit::Seconds => finite_time(path, line_no, line, fields, tc)?,
                TimeUnit::Milliseconds => finite_time(path, line_no, line, fields, tc)? * 1e-3,
                TimeUnit::Microseconds => finite_time(path, line_no, line, fields, tc)? * 1e-6,
                TimeUnit::Nanoseconds => finite_time(path, line_no, line, fields, tc)? * 1e-9,
            }),
        };
        for (k, (&c, slot)) in self.chan_cols.iter().zip(values.iter_mut()).enumerate() {
            let parsed = match fields.range(c) {
                Some((a, b)) => text::parse_f64_at(line, a, b),
                None => text::parse_f64(fields.get(line, c)),
            };
            let v = match parsed {
                Some(v) if v.is_finite() => v,
                // The slow path only builds the message.
                _ => text::finite_f64(path, line_no, fields.get(line, c), &self.channel_what(k))?,
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
        // Lines of 0 to 150 bytes with separators at every position (so every word and 64-byte
        // boundary and the tail are exercised), bytes next to the separator's value, and a quote
        // anywhere.
        let mut f = Fields::default();
        let mut line = Vec::new();
        for len in 0..150usize {
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
    fn byte_mask_gathers_every_pattern_of_high_bits() {
        for pat in 0..=255u64 {
            let m: u64 = (0..8)
                .filter(|i| pat >> i & 1 == 1)
                .map(|i| 0x80u64 << (8 * i))
                .sum();
            assert_eq!(byte_mask(m), pat, "{m:#x}");
        }
    }

    /// `parse_plain` either declines (`None`) or gives exactly what `parse` gives: the same time
    /// and channel bits and the same label and subject fields, on generated lines of several
    /// layouts (header or not, `,` `;` tab, columns in any order and roles shared, every time
    /// unit) with plain numbers, spaces, quotes, exponents, NaN, missing and extra fields. It
    /// must also take the plain lines (else the fast path is dead code).
    #[test]
    fn parse_plain_declines_or_agrees_with_parse() {
        let mut next = text::test_lcg(0x0123_4567_89ab_cdefu64);
        let units = [
            TimeUnit::Seconds,
            TimeUnit::Milliseconds,
            TimeUnit::Microseconds,
            TimeUnit::Nanoseconds,
            TimeUnit::DateTime,
        ];
        let (mut taken, mut lines, mut block_taken) = (0usize, 0usize, 0usize);
        for layout_no in 0..40 {
            let sep = [b',', b';', b'\t'][layout_no % 3];
            let has_header = layout_no % 2 == 0;
            let ncols = 5 + (layout_no % 3);
            let mut cols: Vec<usize> = (0..ncols).collect();
            for i in (1..cols.len()).rev() {
                cols.swap(i, next(i as u64 + 1) as usize);
            }
            // Now and then two roles share a column (parse_plain must decline those rows).
            let label = if layout_no % 7 == 3 { cols[1] } else { cols[4] };
            let spec = LayoutSpec {
                delim: Delim::Byte(sep),
                has_header,
                channels: cols[1..4].iter().map(|&c| Col::Index(c)).collect(),
                factors: vec![1.0, 1e-3, 1.0 / 9.806_65],
                time: Some((Col::Index(cols[0]), units[layout_no % units.len()])),
                label: Some(Col::Index(label)),
                subject: (ncols > 5).then(|| Col::Index(cols[5])),
            };
            let header: Vec<String> = (0..ncols).map(|c| format!("c{c}")).collect();
            let text = if has_header {
                format!("{}\n", header.join(&(sep as char).to_string()))
            } else {
                String::new()
            };
            let mut reader = LineReader::from_reader(
                "t.csv".into(),
                Box::new(std::io::Cursor::new(text.into_bytes())),
                false,
            )
            .unwrap();
            let mut layout = Layout::read(&mut reader, &spec).unwrap();
            let mut fields = Fields::default();
            let mut block = Vec::new();
            for row in 0..400 {
                let mut f: Vec<String> = (0..ncols)
                    .map(|_| {
                        let v = next(2_000_000) as f64 / 1000.0 - 1000.0;
                        match next(40) {
                            0 => " 1.5 ".to_string(),
                            1 => "\"2.5\"".to_string(),
                            2 => "1e-3".to_string(),
                            3 => "NaN".to_string(),
                            4 => String::new(),
                            5 => "2024-01-02 03:04:05.250".to_string(),
                            6 => "walk".to_string(),
                            7 => format!("{}", next(10_000_000_000)),
                            _ => format!("{v}"),
                        }
                    })
                    .collect();
                match next(30) {
                    0 => {
                        f.pop();
                    }
                    1 => f.push("9".into()),
                    _ => {}
                }
                let line = f.join(&(sep as char).to_string());
                if next(25) == 0 {
                    block.push(b' ');
                }
                block.extend_from_slice(line.as_bytes());
                block.extend_from_slice(if next(3) == 0 { b"\r\n" } else { b"\n" });
                let line = text::trim(line.as_bytes());
                lines += 1;
                let mut v_gen = vec![0f32; 3];
                let general =
                    layout.parse(Path::new("t.csv"), row + 2, line, &mut fields, &mut v_gen);
                let mut v_plain = vec![0f32; 3];
                let Some(plain) = layout.parse_plain(line, &mut v_plain) else {
                    continue;
                };
                taken += 1;
                let want = general
                    .unwrap_or_else(|e| panic!("parse_plain took a line parse rejects: {e}"))
                    .unwrap_or_else(|| panic!("parse_plain took a blank line"));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&v_plain), bits(&v_gen), "{:?}", text::show(line));
                assert_eq!(
                    plain.time_s.map(f64::to_bits),
                    want.time_s.map(f64::to_bits),
                    "{:?}",
                    text::show(line)
                );
                let field = |r: Option<(usize, usize)>| r.map(|(a, b)| text::trim(&line[a..b]));
                assert_eq!(
                    field(plain.label),
                    layout.label_col.map(|c| fields.get(line, c))
                );
                assert_eq!(
                    field(plain.subject),
                    layout.subject_col.map(|c| fields.get(line, c))
                );
            }
            block_taken += check_plain_lines(&layout, &block, 1 + next(9) as usize);
        }
        assert!(
            taken > lines / 20,
            "the plain path took {taken} of {lines} lines"
        );
        // The block path runs only with AVX2 (else it takes nothing and the lines go one by one).
        #[cfg(target_arch = "x86_64")]
        if pulp::x86::V3::try_new().is_some() {
            assert!(
                block_taken > taken / 2,
                "the block path took {block_taken} of the {taken} plain lines"
            );
        }
    }

    /// [`Layout::parse_plain_lines`] over `buf` (whole lines), `max` rows a call, skipping each
    /// line it leaves: every row it takes is [`Layout::parse_plain`]'s of that line (its `\r`
    /// dropped) bit for bit, and every line it leaves is one that `parse_plain` declines, has
    /// blanks at an end, or lies too close to the buffer's end. Returns the rows taken.
    fn check_plain_lines(layout: &Layout, buf: &[u8], max: usize) -> usize {
        let (mut pos, mut taken) = (0usize, 0usize);
        let mut out = PlainLines::default();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        while pos < buf.len() {
            let used = layout.parse_plain_lines(&buf[pos..], max, &mut out);
            let mut at = pos;
            for (r, row) in out.rows.iter().enumerate() {
                let end = at + buf[at..].iter().position(|&b| b == b'\n').unwrap();
                let line = buf[at..end].strip_suffix(b"\r").unwrap_or(&buf[at..end]);
                let mut v = vec![0f32; 3];
                let want = layout.parse_plain(line, &mut v).unwrap_or_else(|| {
                    panic!("took a line parse_plain declines: {:?}", text::show(line))
                });
                assert_eq!(bits(&v), bits(&out.values[3 * r..3 * r + 3]));
                assert_eq!(row.time_s.map(f64::to_bits), want.time_s.map(f64::to_bits));
                let shift =
                    |f: Option<(usize, usize)>| f.map(|(a, b)| (a + at - pos, b + at - pos));
                assert_eq!(row.label, shift(want.label));
                assert_eq!(row.subject, shift(want.subject));
                at = end + 1;
            }
            assert_eq!(used, at - pos, "the bytes of the rows taken");
            taken += out.rows.len();
            pos = at;
            if pos >= buf.len() || out.rows.len() == max {
                continue;
            }
            // The line left: not plain, blanks at an end, or too near the end of the buffer.
            let end = pos + buf[pos..].iter().position(|&b| b == b'\n').unwrap();
            let line = buf[pos..end].strip_suffix(b"\r").unwrap_or(&buf[pos..end]);
            let mut v = vec![0f32; 3];
            let near_end = buf.len() - pos < 64 * (end - pos).div_ceil(64).max(1);
            let blanks = line.first().is_none_or(u8::is_ascii_whitespace)
                || line.last().is_none_or(u8::is_ascii_whitespace);
            assert!(
                near_end || blanks || layout.parse_plain(line, &mut v).is_none(),
                "left a plain line: {:?}",
                text::show(line)
            );
            pos = end + 1;
        }
        taken
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
