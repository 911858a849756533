//! What a test does when something outside the repository that it needs (the shared raw
//! datasets, a Python package) is missing: skip with a message, or fail when the environment
//! says nothing may be skipped (`FLOWFM_REQUIRE_EXTERNAL=1`, set by `cargo xtask test` whenever
//! `../shared/datasets` is present, and so in CI).

/// The environment variable that turns a missing external input into a test failure.
pub const REQUIRE_EXTERNAL_ENV: &str = "FLOWFM_REQUIRE_EXTERNAL";

/// Whether missing external inputs must fail tests instead of skipping them.
pub fn external_required() -> bool {
    std::env::var(REQUIRE_EXTERNAL_ENV).is_ok_and(|v| v == "1")
}

/// Reports that `what` is missing: panics (failing the test) when [`external_required`], else
/// prints `SKIPPED: <what>` so the run log counts it. Call it and `return` from the test.
///
/// # Panics
/// When `FLOWFM_REQUIRE_EXTERNAL=1`.
pub fn skip_or_fail(what: &str) {
    if external_required() {
        panic!("{what}, and {REQUIRE_EXTERNAL_ENV}=1 says nothing may be skipped");
    }
    eprintln!("SKIPPED: {what}");
}
