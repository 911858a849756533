//! sha256 verification of source files: against a dataset folder's `FILES.tsv` manifest, or an
//! embedded table of published checksums, according to a [`ChecksumPolicy`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// What a reader does with source-file checksums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// Hash every file, record it, and fail on a mismatch with a known checksum (from a
    /// `FILES.tsv` manifest in the dataset folder or one of its parents, else from the reader's
    /// embedded table of published checksums). Files with no known checksum are recorded only.
    #[default]
    Verify,
    /// Hash and record every file, compare with nothing (for fixtures and modified copies).
    RecordOnly,
    /// Do not hash at all (`RawDataset::source_checksums` stays empty).
    Skip,
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// A `FILES.tsv` manifest: `path<TAB>...sha256...` with a header naming the columns.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    root: PathBuf,
    sha: HashMap<String, String>,
}

impl Manifest {
    /// Parses the manifest at `path`. The digest column is `staged_sha256` when present (the
    /// files as staged, e.g. gzip-compressed), else `sha256`.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let mut lines = text.lines().enumerate();
        let (_, header) = lines
            .next()
            .ok_or_else(|| DataError::format(path, "empty manifest"))?;
        let cols: Vec<&str> = header.split('\t').collect();
        let path_col = cols
            .iter()
            .position(|c| *c == "path")
            .ok_or_else(|| DataError::parse(path, 1, "header has no `path` column"))?;
        let sha_col = cols
            .iter()
            .position(|c| *c == "staged_sha256")
            .or_else(|| cols.iter().position(|c| *c == "sha256"))
            .ok_or_else(|| DataError::parse(path, 1, "header has no sha256 column"))?;
        let mut sha = HashMap::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let (Some(p), Some(h)) = (f.get(path_col), f.get(sha_col)) else {
                return Err(DataError::parse(
                    path,
                    i + 1,
                    format!(
                        "expected {} tab-separated columns, found {}",
                        cols.len(),
                        f.len()
                    ),
                ));
            };
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DataError::parse(
                    path,
                    i + 1,
                    format!("`{h}` is not a sha256"),
                ));
            }
            sha.insert((*p).to_string(), h.to_ascii_lowercase());
        }
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self { root, sha })
    }

    /// The manifest in `dir` or its nearest ancestor (at most `levels` up), if any.
    pub(crate) fn find(dir: &Path, levels: usize) -> Result<Option<Self>> {
        let mut cur = Some(dir);
        for _ in 0..=levels {
            let Some(d) = cur else { break };
            let candidate = d.join("FILES.tsv");
            if candidate.is_file() {
                return Self::load(&candidate).map(Some);
            }
            cur = d.parent();
        }
        Ok(None)
    }

    /// The file's path relative to the manifest root, with `/` separators.
    fn relative(&self, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(&self.root).ok()?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(parts.join("/"))
    }
}

/// Checks a file's bytes according to `policy` and returns the `(name, sha256)` to record.
///
/// `name` is the path relative to the manifest root when a manifest is given, else the file
/// name. `known` holds embedded `(path suffix, sha256)` pairs of published files; a file matches
/// an entry when its path ends with that suffix.
pub(crate) fn check(
    policy: ChecksumPolicy,
    manifest: Option<&Manifest>,
    known: &[(&str, &str)],
    path: &Path,
    bytes: &[u8],
) -> Result<Option<(String, String)>> {
    if policy == ChecksumPolicy::Skip {
        return Ok(None);
    }
    let actual = sha256_hex(bytes);
    let rel = manifest.and_then(|m| m.relative(path));
    let name = rel.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if policy == ChecksumPolicy::Verify {
        let from_manifest = manifest.zip(rel.as_ref()).and_then(|(m, r)| m.sha.get(r));
        let slash_path = path.to_string_lossy().replace('\\', "/");
        let from_table = known
            .iter()
            .find(|(suffix, _)| {
                slash_path.ends_with(&format!("/{suffix}")) || slash_path == *suffix
            })
            .map(|(_, h)| h.to_string());
        if let Some(expected) = from_manifest.cloned().or(from_table) {
            if expected != actual {
                return Err(DataError::Checksum {
                    path: path.to_path_buf(),
                    expected,
                    actual,
                });
            }
        }
    }
    Ok(Some((name, actual)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc_matches_the_fips_test_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn embedded_table_mismatch_is_an_error_and_record_only_is_not() {
        let known = [("Protocol/subject101.dat", "00".repeat(32))];
        let known: Vec<(&str, &str)> = known.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let p = Path::new("/data/pamap2/Protocol/subject101.dat");
        let err = check(ChecksumPolicy::Verify, None, &known, p, b"x").unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        let rec = check(ChecksumPolicy::RecordOnly, None, &known, p, b"x").unwrap();
        assert_eq!(rec.map(|r| r.0), Some("subject101.dat".to_string()));
        assert!(check(ChecksumPolicy::Skip, None, &known, p, b"x")
            .unwrap()
            .is_none());
    }
}
