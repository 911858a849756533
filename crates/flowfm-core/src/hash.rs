//! FNV-1a, the one non-cryptographic hash of flowfm (seed derivation, short fingerprints).
//!
//! Stable across platforms, Rust versions and runs (unlike `std::hash`), which is what seed
//! labels and cache fingerprints need. Not collision resistant: use sha256 where an adversary or
//! a large number of inputs matters.

/// FNV-1a offset basis (64 bit).
const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV prime (64 bit).
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of `bytes` (Fowler, Noll and Vo).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// [`fnv1a64`] as 16 lower-case hex digits (the form fingerprints are printed in).
pub fn fnv1a64_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published FNV-1a 64 test vectors (the FNV reference test suite, `fnv_test_str`).
    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hex_form_is_sixteen_digits_of_the_hash() {
        assert_eq!(fnv1a64_hex(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fnv1a64_hex(b"").len(), 16);
    }
}
