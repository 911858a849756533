//! Decoding numpy arrays from Python pickles and `.npy` files without Python: pickles are read
//! with `serde_pickle`'s value API (keeping the restore state of unknown classes), and the
//! `numpy.core.multiarray._reconstruct` state `(version, shape, dtype, fortran_order, data)` is
//! interpreted here.
//!
//! Because `serde_pickle` replaces an object by its `BUILD` state, a dtype arrives either as its
//! constructor arguments `("f8", 0, 1)` (when a memoised dtype is reused) or as its state
//! `(3, "<", None, None, None, -1, -1, flags)` (where the type letter is lost). In the second
//! case the element size follows from the byte count and the caller says whether to read
//! floats or integers ([`NumKind`]).

use serde_pickle::{DeOptions, HashableValue, Value};

pub mod budget;

/// How to interpret an array whose dtype letter was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumKind {
    /// IEEE floats (`f4`/`f8`).
    Float,
    /// Signed integers (`i1`..`i8`).
    Int,
}

/// An array's element type as far as the pickle tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DType {
    /// Known type letter (`f`, `i`, `u`, `b`, `O`) and item size in bytes.
    Known {
        /// numpy kind letter.
        kind: char,
        /// Bytes per element (8 for object references).
        itemsize: usize,
        /// Big-endian data.
        big_endian: bool,
    },
    /// Type letter lost (see the module docs).
    Unknown {
        /// Object array (dtype flags mark references).
        object: bool,
        /// Big-endian data.
        big_endian: bool,
    },
}

/// The payload of an array.
#[derive(Clone, Debug, PartialEq)]
pub enum NdData {
    /// Raw element bytes in the array's memory order.
    Bytes(Vec<u8>),
    /// Python objects of an object array.
    Objects(Vec<Value>),
}

/// A numpy array decoded from a pickle.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    /// Shape (empty for a 0-d array).
    pub shape: Vec<usize>,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// Element type.
    pub dtype: DType,
    /// Elements.
    pub data: NdData,
}

/// Decodes a pickle into a `serde_pickle` value, keeping the state of objects of unknown classes
/// and replacing the classes themselves by `None`.
///
/// A pickle that does not decode is an `Err` with serde_pickle's message; one whose decoding
/// would build more than [`budget::limit_bytes`] (memo references that `serde_pickle` copies,
/// nested to blow up exponentially) is an `Err` before any of it is built.
pub fn load_pickle(bytes: &[u8]) -> Result<Value, String> {
    budget::check(bytes)?;
    // `replace_recursive_structures` works around serde_pickle's memo reference counting, which
    // undercounts when restore states holding memo references are cloned (pandas frames): a
    // second visit of such a value reads `None` instead of failing. Every field the decoders use
    // is type-checked, so a value lost this way is an error, never silent.
    let opts = DeOptions::new()
        .keep_restore_state()
        .replace_unresolved_globals()
        .replace_recursive_structures();
    serde_pickle::value_from_slice(bytes, opts).map_err(|e| format!("pickle: {e}"))
}

/// `d[key]` for a pickle dict with a string key.
pub fn dict_get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Dict(m) => m.get(&HashableValue::String(key.to_string())),
        _ => None,
    }
}

/// An integer (or bool) value.
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I64(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// The items of a list or tuple.
pub fn as_seq(v: &Value) -> Option<&[Value]> {
    match v {
        Value::List(x) | Value::Tuple(x) => Some(x),
        _ => None,
    }
}

/// A string (or latin-1 bytes) value.
pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bytes(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
        _ => None,
    }
}

fn parse_dtype(v: &Value) -> Result<DType, String> {
    let items = as_seq(v).ok_or("dtype is not a tuple")?;
    match items.first() {
        Some(Value::String(typestr)) => {
            let t = typestr.as_str();
            let big_endian = t.starts_with('>');
            let t = t.trim_start_matches(['<', '>', '|', '=']);
            let mut chars = t.chars();
            let kind = chars.next().ok_or("empty dtype string")?;
            let itemsize: usize = chars
                .as_str()
                .parse()
                .map_err(|_| format!("unsupported dtype `{typestr}`"))?;
            Ok(DType::Known {
                kind,
                itemsize,
                big_endian,
            })
        }
        Some(Value::I64(_)) if items.len() >= 8 => {
            let order = as_string(&items[1]).unwrap_or_default();
            let flags = items.last().and_then(as_i64).unwrap_or(0);
            Ok(DType::Unknown {
                object: flags & 1 != 0,
                big_endian: order == ">",
            })
        }
        _ => Err(format!("unrecognised dtype {v:?}")),
    }
}

impl NdArray {
    /// Interprets a `_reconstruct` state tuple `(1, shape, dtype, fortran, data)`.
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let items = as_seq(v).ok_or("ndarray state is not a tuple")?;
        if items.len() != 5 || as_i64(&items[0]) != Some(1) {
            return Err(format!(
                "not an ndarray state (expected (1, shape, dtype, fortran, data), got {} items)",
                items.len()
            ));
        }
        let shape = as_seq(&items[1])
            .ok_or("ndarray shape is not a tuple")?
            .iter()
            .map(|d| {
                as_i64(d)
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or("bad dimension")
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let dtype = parse_dtype(&items[2])?;
        let fortran_order = as_i64(&items[3]).ok_or("fortran flag is not a bool")? != 0;
        let data = match &items[4] {
            Value::Bytes(b) => NdData::Bytes(b.clone()),
            Value::String(s) => NdData::Bytes(s.chars().map(|c| c as u32 as u8).collect()),
            Value::List(l) => NdData::Objects(l.clone()),
            other => return Err(format!("unexpected ndarray data {}", short(other))),
        };
        let n: usize = shape.iter().product();
        match &data {
            NdData::Objects(o) if o.len() != n => {
                return Err(format!(
                    "object array of shape {shape:?} holds {} items",
                    o.len()
                ))
            }
            NdData::Bytes(b) if n > 0 && b.len() % n != 0 => {
                return Err(format!("{} bytes do not divide into {n} elements", b.len()))
            }
            _ => {}
        }
        Ok(Self {
            shape,
            fortran_order,
            dtype,
            data,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects of an object array.
    pub fn objects(&self) -> Result<&[Value], String> {
        match &self.data {
            NdData::Objects(o) => Ok(o),
            NdData::Bytes(_) => Err("expected an object array".into()),
        }
    }

    /// All elements as f64 in row-major (C) order, whatever the memory order.
    pub fn to_f64(&self, hint: NumKind) -> Result<Vec<f64>, String> {
        let NdData::Bytes(bytes) = &self.data else {
            return Err("expected a numeric array, found an object array".into());
        };
        let n = self.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let itemsize = bytes.len() / n;
        let (kind, big) = match &self.dtype {
            DType::Known {
                kind,
                itemsize: s,
                big_endian,
            } => {
                if *s != itemsize {
                    return Err(format!(
                        "dtype says {s} bytes per element, data has {itemsize}"
                    ));
                }
                (*kind, *big_endian)
            }
            DType::Unknown { object: true, .. } => return Err("object dtype with raw data".into()),
            DType::Unknown { big_endian, .. } => (
                match hint {
                    NumKind::Float => 'f',
                    NumKind::Int => 'i',
                },
                *big_endian,
            ),
        };
        let mut flat = Vec::with_capacity(n);
        for chunk in bytes.chunks_exact(itemsize) {
            let mut b = [0u8; 8];
            b[..itemsize.min(8)].copy_from_slice(&chunk[..itemsize.min(8)]);
            if big {
                b[..itemsize].reverse();
            }
            let v = match (kind, itemsize) {
                ('f', 8) => f64::from_le_bytes(b),
                ('f', 4) => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ('i', 8) => i64::from_le_bytes(b) as f64,
                ('i', 4) => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ('i', 2) => f64::from(i16::from_le_bytes([b[0], b[1]])),
                ('i', 1) => f64::from(b[0] as i8),
                ('u', 8) => u64::from_le_bytes(b) as f64,
                ('u', 4) => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ('u', 2) => f64::from(u16::from_le_bytes([b[0], b[1]])),
                ('u' | 'b', 1) => f64::from(b[0]),
                (k, s) => return Err(format!("unsupported element type {k}{s}")),
            };
            flat.push(v);
        }
        if self.fortran_order && self.shape.len() > 1 {
            Ok(fortran_to_c(&flat, &self.shape))
        } else {
            Ok(flat)
        }
    }
}

/// Reorders column-major data of `shape` into row-major order.
fn fortran_to_c(flat: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = flat.len();
    let rank = shape.len();
    // Strides of the Fortran layout.
    let mut fstride = vec![1usize; rank];
    for d in 1..rank {
        fstride[d] = fstride[d - 1] * shape[d - 1];
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let off: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        out.push(flat[off]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.len() > 80 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(80).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// The header of a `.npy` file and the offset of its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// `descr`, e.g. `"<f8"` or `"|O"`.
    pub descr: String,
    /// `fortran_order`.
    pub fortran_order: bool,
    /// `shape`.
    pub shape: Vec<usize>,
    /// Byte offset of the data (or of the pickle, for object arrays).
    pub data_offset: usize,
}

/// Parses the header of a `.npy` file (format versions 1, 2 and 3).
pub fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or(".npy header runs past the end of the file (truncated)")?;
    let header = String::from_utf8_lossy(&bytes[start..end]);
    let field = |key: &str| -> Result<&str, String> {
        let pat = format!("'{key}':");
        let at = header
            .find(&pat)
            .ok_or(format!(".npy header has no {key}"))?;
        Ok(header[at + pat.len()..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("unsupported descr (structured dtype?)")?
        .to_string();
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape_txt = field("shape")?
        .strip_prefix('(')
        .ok_or("bad shape (no opening parenthesis)")?;
    let close = shape_txt.find(')').ok_or("bad shape")?;
    let shape = shape_txt[..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension `{s}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
        data_offset: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_transposed_into_row_major() {
        // 2x3 matrix [[1,2,3],[4,5,6]] stored column-major: 1,4,2,5,3,6.
        let c = fortran_to_c(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0], &[2, 3]);
        assert_eq!(c, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    /// A `.npy` version-1 file whose header is `header` (padded like numpy's).
    fn npy_with_header(header: &str) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b
    }

    #[test]
    fn malformed_npy_shapes_are_errors_not_panics() {
        // Found by reading the slicing code: `shape_txt[1..close]` panicked when `)` came first
        // or the first character was wider than one byte.
        for shape in [")", "\u{e9})", "", "(", "(1, x)"] {
            let h = format!("{{'descr': '|O', 'fortran_order': False, 'shape': {shape}, }}");
            assert!(parse_npy_header(&npy_with_header(&h)).is_err(), "{h}");
        }
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(
            parse_npy_header(&npy_with_header(h)).unwrap().shape,
            vec![2, 3]
        );
    }

    #[test]
    fn npy_header_of_a_version_one_file_is_parsed() {
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let h = b"{'descr': '<f8', 'fortran_order': True, 'shape': (3, 2), }          \n";
        f.extend((h.len() as u16).to_le_bytes());
        f.extend_from_slice(h);
        let p = parse_npy_header(&f).unwrap();
        assert_eq!(p.descr, "<f8");
        assert!(p.fortran_order);
        assert_eq!(p.shape, vec![3, 2]);
        assert_eq!(p.data_offset, f.len());
        assert!(parse_npy_header(&f[..20]).is_err());
    }
}
