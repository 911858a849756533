//! Allocation-free text parsing shared by the readers: whole-file loading (gzip transparent), a
//! line iterator with 1-based line numbers, field splitting and fast number parsing.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// Reads a whole file into memory.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Whether `raw` starts with the gzip magic bytes.
pub(crate) fn is_gzip(raw: &[u8]) -> bool {
    raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b
}

/// Decompresses `raw` when it is gzip (by magic bytes), otherwise returns it unchanged.
///
/// A truncated or corrupt gzip stream is an error naming `path`.
pub(crate) fn maybe_gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    gunzip(path, &raw)
}

/// Decompresses a gzip stream (all members).
pub(crate) fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(path, format!("corrupt or truncated gzip stream: {e}")))?;
    Ok(out)
}

/// Iterates over the lines of a buffer as `(1-based line number, line)`, without the line end
/// (`\n`, `\r\n` or a lone trailing `\r`). A final line without a newline is yielded too.
pub(crate) struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
    line_no: usize,
}

impl<'a> Lines<'a> {
    /// Lines of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            line_no: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        let (mut line, advance) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        self.pos += advance;
        self.line_no += 1;
        Some((self.line_no, line))
    }
}

/// Trims ASCII whitespace (space, tab, `\r`) at both ends.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Splits `line` on a single separator byte (empty fields are kept).
pub(crate) fn split_on(line: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    line.split(move |&b| b == sep)
}

/// Splits `line` on runs of spaces and tabs (leading/trailing whitespace ignored).
pub(crate) fn split_ws(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
}

/// Collects up to `N` fields of `iter` into `out`; returns the total number of fields seen.
pub(crate) fn collect_fields<'a, const N: usize>(
    iter: impl Iterator<Item = &'a [u8]>,
    out: &mut [&'a [u8]; N],
) -> usize {
    let mut n = 0;
    for f in iter {
        if n < N {
            out[n] = f;
        }
        n += 1;
    }
    n
}

/// Exact powers of ten representable in f64 (Clinger's fast path).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses a decimal number (`-1.25`, `+3`, `.5`, `1e-3`, `NaN`, `inf`) from ASCII bytes.
///
/// Numbers of at most 19 digits whose digits, read as an integer, are exactly representable in
/// f64 (at most 2^53) and whose decimal exponent is small take an exact fast path (mantissa and
/// power of ten both exact in f64, so the one division or multiplication rounds correctly:
/// Clinger's fast path); everything else falls back to the standard library's correctly rounded
/// parser, so the result is always the correctly rounded value, bit for bit what `str::parse`
/// gives. Returns `None` for anything that is not a number. `NaN`/`inf` are returned as such:
/// callers decide whether non-finite values are allowed.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    let (neg, body) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    // Digits accumulate with wrapping arithmetic: more than 19 of them take the slow path.
    let mut mantissa: u64 = 0;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    let mut digits = i;
    let mut exp10: i32 = 0;
    if body.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while let Some(&b) = body.get(i) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        let frac = i - frac_start;
        digits += frac;
        exp10 = -(frac.min(1 << 20) as i32);
    }
    if digits == 0 {
        return parse_special(s);
    }
    if let Some(b'e' | b'E') = body.get(i) {
        i += 1;
        let (eneg, start) = match body.get(i) {
            Some(b'-') => (true, i + 1),
            Some(b'+') => (false, i + 1),
            _ => (false, i),
        };
        let mut e: i32 = 0;
        let mut j = start;
        while j < body.len() && body[j].is_ascii_digit() {
            e = e
                .saturating_mul(10)
                .saturating_add(i32::from(body[j] - b'0'));
            j += 1;
        }
        if j == start {
            return None;
        }
        exp10 = exp10.saturating_add(if eneg { -e } else { e });
        i = j;
    }
    if i != body.len() {
        return None;
    }
    if digits <= 19 && mantissa <= 1 << 53 && (-22..=22).contains(&exp10) {
        let m = mantissa as f64;
        let v = if exp10 >= 0 {
            m * POW10[exp10 as usize]
        } else {
            m / POW10[(-exp10) as usize]
        };
        return Some(if neg { -v } else { v });
    }
    std::str::from_utf8(s).ok()?.parse::<f64>().ok()
}

/// Parses the field `line[a..b]` as [`parse_f64`] parses it after [`trim`], with the same result
/// bit for bit. A field of at most eight bytes is read as one machine word (with its neighbours
/// in the line, masked off) and decoded without a branch per byte when it is a plain decimal
/// (`-0.5166`, `+12`, `.5`, `3.`); anything else takes [`parse_f64`].
#[inline(always)]
pub(crate) fn parse_f64_at(line: &[u8], a: usize, b: usize) -> Option<f64> {
    let n = b - a;
    if (1..=8).contains(&n) && line.len() >= 8 {
        let w = if a + 8 <= line.len() {
            word_at(line, a)
        } else {
            // The line's last eight bytes, shifted so the field starts at byte 0.
            let s = line.len() - 8;
            word_at(line, s) >> (8 * (a - s))
        };
        if let Some(v) = short_decimal(w & low_bytes(n), n) {
            return Some(v);
        }
    }
    parse_trimmed(&line[a..b])
}

/// The vector instructions [`parse_f64_in`] can use: AVX2-level x86 (SSE4.1 and SSSE3 with it).
#[cfg(target_arch = "x86_64")]
pub(crate) type Simd = pulp::x86::V3;
/// No vector path on other architectures.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Simd = std::convert::Infallible;

/// [`parse_f64_at`], with `simd` through [`sixteen_digits`] (fields of up to sixteen bytes in one
/// 16-byte register); call it inside a function compiled with those features (a `pulp`
/// `WithSimd`) so that the intrinsics inline. The same result as [`parse_f64_at`], bit for bit.
#[inline(always)]
pub(crate) fn parse_f64_in(simd: Option<Simd>, line: &[u8], a: usize, b: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = simd {
        if let Some(v) = sixteen_digits(v3, line, a, b) {
            return Some(v);
        }
        return parse_trimmed(&line[a..b]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    parse_f64_at(line, a, b)
}

/// The decimal `line[a..b]` (an optional sign, then at most sixteen digits with at most one `.`
/// among them, and an integer of the digits at most 2^53) in one 16-byte register: the field's
/// bytes minus `'0'` are shuffled into place (the point dropped, the digits right-aligned,
/// zeros in front), checked to be digits, and combined pairwise by multiply-adds into two
/// eight-digit halves. The value is [`parse_f64`]'s fast path (the integer divided by an exact
/// power of ten), so the bits are the same; `None` for anything else, which the caller parses
/// the slow way. Needs a line of at least sixteen bytes (the register is loaded from the line,
/// from the field or from the line's last sixteen bytes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sixteen_digits(v3: pulp::x86::V3, line: &[u8], a: usize, b: usize) -> Option<f64> {
    use std::arch::x86_64::__m128i;
    let first = *line.get(a)?;
    let neg = first == b'-';
    let a = a + usize::from(neg || first == b'+');
    let n = b.checked_sub(a)?;
    if !(1..=16).contains(&n) || line.len() < 16 {
        return None;
    }
    let at = a.min(line.len() - 16);
    let off = a - at;
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&line[at..at + 16]);
    let x: __m128i = pulp::cast(raw);
    let (sse2, ssse3) = (v3.sse2, v3.ssse3);
    let splat = |b: i8| sse2._mm_set1_epi8(b);
    let points = sse2._mm_movemask_epi8(sse2._mm_cmpeq_epi8(x, splat(b'.' as i8))) as u32;
    let points = (points >> off) & ((1u32 << n) - 1);
    if points & points.wrapping_sub(1) != 0 {
        return None;
    }
    let (dot, nd) = if points == 0 {
        (n, n)
    } else {
        (points.trailing_zeros() as usize, n - 1)
    };
    if nd == 0 {
        return None;
    }
    // Lane j receives digit i = j + nd - 16 (a zero where i < 0), which lies at byte
    // off + i of the register, one further once past the point.
    let iota = sse2._mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let i = sse2._mm_add_epi8(iota, splat(nd as i8 - 16));
    let past = sse2._mm_cmpgt_epi8(i, splat(dot as i8 - 1));
    let src = sse2._mm_add_epi8(sse2._mm_sub_epi8(i, past), splat(off as i8));
    let ctrl = sse2._mm_or_si128(src, sse2._mm_cmpgt_epi8(sse2._mm_setzero_si128(), i));
    let d = ssse3._mm_shuffle_epi8(sse2._mm_sub_epi8(x, splat(b'0' as i8)), ctrl);
    let digits = sse2._mm_cmpeq_epi8(sse2._mm_min_epu8(d, splat(9)), d);
    if sse2._mm_movemask_epi8(digits) != 0xFFFF {
        return None;
    }
    // Lanes (10, 1) -> two-digit pairs, (100, 1) -> four digits, then (10^4, 1) -> eight.
    let pairs = ssse3._mm_maddubs_epi16(d, sse2._mm_set1_epi16(0x010A));
    let quads = sse2._mm_madd_epi16(pairs, sse2._mm_set1_epi32(0x0001_0064));
    let quads = v3.sse4_1._mm_packus_epi32(quads, quads);
    let eights = sse2._mm_madd_epi16(quads, sse2._mm_set1_epi32(0x0001_2710));
    let [high, low, _, _]: [u32; 4] = pulp::cast(eights);
    let m = u64::from(high) * 100_000_000 + u64::from(low);
    if m > 1 << 53 {
        return None;
    }
    let v = m as f64 / POW10[nd - dot];
    Some(f64::from_bits(v.to_bits() ^ (u64::from(neg) << 63)))
}

/// [`parse_f64`] of the trimmed field: the rare fields the word path does not take.
#[cold]
#[inline(never)]
fn parse_trimmed(field: &[u8]) -> Option<f64> {
    parse_f64(trim(field))
}

/// The eight bytes of `line` from `at` as a little-endian word (`at + 8 <= line.len()`).
#[inline(always)]
pub(crate) fn word_at(line: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&line[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A mask of the `n` low bytes of a word, `1 <= n <= 8`.
#[inline(always)]
pub(crate) fn low_bytes(n: usize) -> u64 {
    u64::MAX >> (64 - 8 * n)
}

/// The high bit of each byte of `w` that equals `b`, nothing else (no borrow crosses bytes).
#[inline(always)]
pub(crate) fn bytes_equal(w: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = w ^ (0x0101_0101_0101_0101 * u64::from(b));
    // A byte's high bit ends up clear exactly when the byte of `x` is zero.
    !(((x & LOW7) + LOW7) | x) & !LOW7
}

/// A fixed LCG for the tests' generated inputs: `next(n)` is uniform-ish in `0..n`.
#[cfg(test)]
pub(crate) fn test_lcg(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    }
}

/// The decimal in the `n` low bytes of `w` (`1 <= n <= 8`; the rest zero), first character in
/// the lowest byte: an optional sign, then at most eight digits with at most one `.` among them.
/// `None` for anything else (exponents, `NaN`, spaces, a lone sign or point), which the caller
/// parses the slow way. The value is Clinger's exact fast path of [`parse_f64`]: the digits as an
/// integer (below 10^8, exact in f64) divided by an exact power of ten, one correctly rounded
/// operation.
#[inline(always)]
fn short_decimal(w: u64, n: usize) -> Option<f64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let first = (w & 0xff) as u8;
    let neg = first == b'-';
    let signed = usize::from(neg || first == b'+');
    let n = n - signed;
    if n == 0 {
        return None;
    }
    let w = w >> (8 * signed);
    let valid = low_bytes(n);
    let dots = bytes_equal(w, b'.') & valid;
    if dots & dots.wrapping_sub(1) != 0 {
        return None;
    }
    // Close the gap of the point (the bytes after it move down one); without a point the
    // digits are the field.
    let (digits, dot, nd) = if dots == 0 {
        (w, n, n)
    } else {
        let dot = dots.trailing_zeros() as usize / 8;
        let below = (dots >> 7) - 1;
        ((w & below) | ((w >> 8) & !below), dot, n - 1)
    };
    if nd == 0 {
        return None;
    }
    // Each of the nd bytes minus '0' must be below 10: no high nibble, and none after adding 6
    // (a carry out of a byte only reaches bytes above it, which are rejected or masked anyway).
    let t = digits ^ ZEROS;
    if (t | t.wrapping_add(0x0606_0606_0606_0606)) & HIGH_NIBBLES & low_bytes(nd) != 0 {
        return None;
    }
    // Right-align the digits (leading zeros in the low bytes), then combine them pairwise:
    // 8 one-digit lanes -> 4 two-digit -> one 8-digit integer.
    let v = t << (8 * (8 - nd));
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v = ((v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32))))
        >> 32;
    let m = (v as u32) as f64 / POW10[(nd - dot) & 15];
    Some(f64::from_bits(m.to_bits() ^ (u64::from(neg) << 63)))
}

/// `NaN`, `nan`, `inf`, `-Infinity` and friends.
fn parse_special(s: &[u8]) -> Option<f64> {
    let txt = std::str::from_utf8(s).ok()?;
    match txt.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Parses a signed decimal integer; `None` on anything else or on overflow.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, body) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in body {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// A short, printable rendering of a field for error messages.
pub(crate) fn show(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    if s.chars().count() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head}...")
    } else {
        s.into_owned()
    }
}

/// Parses a finite float field, or returns a parse error naming `what`.
pub(crate) fn finite_f64(path: &Path, line: usize, field: &[u8], what: &str) -> Result<f64> {
    match parse_f64(trim(field)) {
        Some(v) if v.is_finite() => Ok(v),
        Some(v) => Err(DataError::parse(
            path,
            line,
            format!("{what}: non-finite value {v}"),
        )),
        None => Err(DataError::parse(
            path,
            line,
            format!("{what}: `{}` is not a number", show(field)),
        )),
    }
}

/// Parses columns `cols` (0-based) of a row into `out`, for datasets that mark missing values with
/// NaN (PAMAP2, Opportunity): returns whether any of them was NaN. A non-number or an infinity is
/// a parse error naming the 1-based column.
pub(crate) fn columns_allowing_nan(
    path: &Path,
    line: usize,
    fields: &[&[u8]],
    cols: &[usize],
    out: &mut [f64],
) -> Result<bool> {
    let mut has_nan = false;
    for (slot, &c) in out.iter_mut().zip(cols) {
        let v = parse_f64(fields[c]).ok_or_else(|| {
            DataError::parse(
                path,
                line,
                format!("column {}: `{}` is not a number", c + 1, show(fields[c])),
            )
        })?;
        if v.is_nan() {
            has_nan = true;
        } else if v.is_infinite() {
            return Err(DataError::parse(
                path,
                line,
                format!("column {}: infinite value", c + 1),
            ));
        }
        *slot = v;
    }
    Ok(has_nan)
}

/// Parses an integer field, or returns a parse error naming `what`.
pub(crate) fn int_field(path: &Path, line: usize, field: &[u8], what: &str) -> Result<i64> {
    parse_i64(trim(field)).ok_or_else(|| {
        DataError::parse(
            path,
            line,
            format!("{what}: `{}` is not an integer", show(field)),
        )
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff...]` (or with `T`) into seconds since 1970-01-01 00:00:00
/// of the same (unspecified) time zone. `None` if malformed or out of range.
pub(crate) fn parse_datetime(s: &[u8]) -> Option<f64> {
    let s = trim(s);
    if s.len() < 19 {
        return None;
    }
    let num = |a: usize, b: usize| -> Option<i64> {
        let f = &s[a..b];
        if f.iter().all(u8::is_ascii_digit) {
            parse_i64(f)
        } else {
            None
        }
    };
    if s[4] != b'-'
        || s[7] != b'-'
        || !(s[10] == b' ' || s[10] == b'T')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut frac = 0.0;
    if s.len() > 19 {
        if s[19] != b'.' || s.len() == 20 {
            return None;
        }
        let digits = &s[20..];
        if !digits.iter().all(u8::is_ascii_digit) || digits.len() > 12 {
            return None;
        }
        frac = parse_i64(digits)? as f64 / 10f64.powi(digits.len() as i32);
    }
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) as f64 + frac)
}

/// Splits a CSV line on `sep`, honouring double quotes (`""` inside quotes is a quote). Fields
/// are appended to `out` (unquoted); returns `false` on an unterminated quote.
pub(crate) fn split_csv(line: &[u8], sep: u8, out: &mut Vec<Vec<u8>>) -> bool {
    out.clear();
    let mut field = Vec::new();
    let mut in_quotes = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if in_quotes {
            if b == b'"' {
                if line.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(b);
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            out.push(std::mem::take(&mut field));
        } else {
            field.push(b);
        }
        i += 1;
    }
    out.push(field);
    !in_quotes
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn parse_f64_agrees_with_std_on_typical_sensor_values() {
        let cases = [
            "7.091625",
            "-0.5916671",
            "8.195502",
            "0.918055589766518",
            "-1.2e-3",
            "1E5",
            ".5",
            "-.25",
            "+3",
            "123456789012345678901234",
            "0.000000000000000000000000001",
            "9.80665",
        ];
        for c in cases {
            let ours = parse_f64(c.as_bytes()).expect(c);
            let std: f64 = c.parse().expect(c);
            Tolerance::new(1e-15, 0.0).assert_close(&[ours], &[std]);
        }
    }

    /// Every field form the word path takes or refuses, inside lines with other bytes around it
    /// (so masking the neighbours is tested) and at the end of lines of every length: the result
    /// equals `parse_f64` of the trimmed field, bit for bit (`None` alike).
    #[test]
    fn parse_f64_at_equals_parse_f64_of_the_trimmed_field() {
        let mut next = test_lcg(0x9e37_79b9_7f4a_7c15u64);
        let alphabet = b"0123456789012345678901234567890123456789.-+e x";
        let fixed: [&[u8]; 32] = [
            b"596160000",
            b"-596160000",
            b"1234567.891",
            b"0.0000000000001",
            b"9007199254740992",
            b"9007199254740993",
            b"12345678.1234567",
            b"123456789012345678",
            b"1.2.3.4.5.6",
            b"12345678e5",
            b"0",
            b"-0",
            b"+0",
            b"0.5166",
            b"-0.4867",
            b"12345678",
            b"99999999",
            b"-9999999",
            b".5",
            b"-.25",
            b"5.",
            b"-",
            b"+",
            b".",
            b"-.",
            b"1.2.3",
            b"1e5",
            b" 7",
            b"7 ",
            b"00000001",
            b"0.000001",
            b"9.9999999",
        ];
        let mut checked = 0;
        for round in 0..60_000 {
            let field: Vec<u8> = if round < fixed.len() {
                fixed[round].to_vec()
            } else {
                let len = 1 + next(18) as usize;
                (0..len)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                    .collect()
            };
            let before = next(12) as usize;
            let after = next(12) as usize;
            let mut line: Vec<u8> = (0..before).map(|_| b"9,.-"[next(4) as usize]).collect();
            let a = line.len();
            line.extend_from_slice(&field);
            let b = line.len();
            line.extend((0..after).map(|_| b"7,-."[next(4) as usize]));
            let want = parse_f64(trim(&field)).map(f64::to_bits);
            let got = parse_f64_at(&line, a, b).map(f64::to_bits);
            assert_eq!(got, want, "{:?} in {:?}", show(&field), show(&line));
            #[cfg(target_arch = "x86_64")]
            if let Some(v3) = pulp::x86::V3::try_new() {
                let got = parse_f64_in(Some(v3), &line, a, b).map(f64::to_bits);
                assert_eq!(got, want, "SIMD: {:?} in {:?}", show(&field), show(&line));
            }
            checked += usize::from(want.is_some());
        }
        assert!(checked > 10_000, "only {checked} numbers among the fields");
    }

    /// The word path itself (not its fallback) decodes plain decimals: every value of up to
    /// eight characters that `short_decimal` accepts equals `str::parse`'s.
    #[test]
    fn short_decimal_takes_plain_decimals_and_refuses_the_rest() {
        let cases: [(&str, Option<f64>); 12] = [
            ("0.5166", Some(0.5166)),
            ("-0.4867", Some(-0.4867)),
            ("12345678", Some(12_345_678.0)),
            ("+3", Some(3.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("-0", Some(-0.0)),
            ("1e5", None),
            ("NaN", None),
            ("1.2.3", None),
            ("-", None),
            ("1 2", None),
        ];
        for (s, want) in cases {
            let mut w = [0u8; 8];
            w[..s.len()].copy_from_slice(s.as_bytes());
            let got = short_decimal(u64::from_le_bytes(w), s.len());
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{s}");
        }
    }

    /// The 16-byte register path itself (not its fallback) decodes plain decimals of up to
    /// sixteen characters after the sign, at the start, inside and at the end of a line.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_digits_takes_decimals_of_up_to_sixteen_digits_and_refuses_the_rest() {
        let Some(v3) = pulp::x86::V3::try_new() else {
            return;
        };
        let cases: [(&str, Option<f64>); 16] = [
            ("0.5166", Some(0.5166)),
            ("-0.4867", Some(-0.4867)),
            ("596160000", Some(596_160_000.0)),
            ("-604799990", Some(-604_799_990.0)),
            ("+1234567.891", Some(1_234_567.891)),
            ("-0.000000000001", Some(-1e-12)),
            ("9007199254740992", Some(9_007_199_254_740_992.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("-0", Some(-0.0)),
            ("9007199254740993", None),
            ("12345678901234567", None),
            ("123456789e1", None),
            ("12345.678.9", None),
            ("-.", None),
            ("1 2", None),
        ];
        for (s, want) in cases {
            for (before, after) in [("", ",0.25,0.5,sit"), ("17,", ",sit"), ("0.5,0.25,1,", "")] {
                let line = format!("{before}{s}{after}");
                let (a, b) = (before.len(), before.len() + s.len());
                if line.len() < 16 {
                    continue;
                }
                let got = sixteen_digits(v3, line.as_bytes(), a, b);
                assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{line}");
            }
        }
    }

    #[test]
    fn parse_f64_is_bit_identical_to_std_on_generated_decimals() {
        // A fixed LCG: mantissas of 1 to 22 digits, leading zeros, signs, decimal points and
        // exponents, so both the fast path and the fallback are exercised.
        let mut next = test_lcg(0x2545_f491_4f6c_dd1du64);
        let mut fast = 0;
        for _ in 0..200_000 {
            let mut c = String::new();
            match next(3) {
                0 => c.push('-'),
                1 => c.push('+'),
                _ => {}
            }
            let int_digits = next(12) as usize;
            let frac_digits = next(12) as usize;
            for _ in 0..int_digits {
                c.push(char::from(b'0' + next(10) as u8));
            }
            if frac_digits > 0 || int_digits == 0 {
                c.push('.');
                for _ in 0..frac_digits.max(1) {
                    c.push(char::from(b'0' + next(10) as u8));
                }
            }
            if next(4) == 0 {
                c.push_str(&format!("e{}", next(60) as i64 - 30));
            }
            let std: f64 = c.parse().expect(&c);
            let ours = parse_f64(c.as_bytes()).expect(&c);
            assert_eq!(ours.to_bits(), std.to_bits(), "{c}: {ours} vs {std}");
            fast += usize::from(int_digits + frac_digits <= 15);
        }
        assert!(fast > 100_000, "the fast path was exercised {fast} times");
    }

    #[test]
    fn parse_f64_rejects_garbage_and_reads_special_values() {
        for bad in ["", "-", "1.2.3", "abc", "1e", "1,5", "0x10", "1 2"] {
            assert!(parse_f64(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(parse_f64(b"NaN").is_some_and(f64::is_nan));
        assert!(parse_f64(b"-inf").is_some_and(|v| v.is_infinite() && v < 0.0));
    }

    #[test]
    fn parse_i64_handles_signs_and_overflow() {
        assert_eq!(parse_i64(b"90426708196641"), Some(90_426_708_196_641));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"12a"), None);
        assert_eq!(parse_i64(b""), None);
    }

    #[test]
    fn lines_strip_crlf_and_count_from_one() {
        let got: Vec<(usize, &[u8])> = Lines::new(b"a b\r\nc\n\nd").collect();
        assert_eq!(
            got,
            vec![
                (1, &b"a b"[..]),
                (2, &b"c"[..]),
                (3, &b""[..]),
                (4, &b"d"[..])
            ]
        );
    }

    #[test]
    fn parse_datetime_matches_known_unix_times() {
        // 2000-03-01 00:00:00 UTC is 951868800 s; 1970-01-01 is 0.
        let t = parse_datetime(b"2000-03-01 00:00:00").unwrap();
        Tolerance::F64.assert_close(&[t], &[951_868_800.0]);
        let t = parse_datetime(b"1970-01-01 00:00:01.250000").unwrap();
        Tolerance::F64.assert_close(&[t], &[1.25]);
        assert!(parse_datetime(b"2016-13-01 00:00:00").is_none());
        assert!(parse_datetime(b"2016-11-13 10:00").is_none());
    }

    #[test]
    fn split_csv_unquotes_fields_with_separators() {
        let mut out = Vec::new();
        assert!(split_csv(br#"a,"b,c","say ""hi""",,"#, b',', &mut out));
        let got: Vec<&[u8]> = out.iter().map(Vec::as_slice).collect();
        assert_eq!(got, vec![&b"a"[..], b"b,c", b"say \"hi\"", b"", b""]);
        assert!(!split_csv(br#"a,"open"#, b',', &mut out));
    }
}
