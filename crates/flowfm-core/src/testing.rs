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

/// The environment variable that turns a missing GPU into a test failure (set it on a GPU
/// machine, where a device test that skips would hide a broken driver or build).
pub const REQUIRE_GPU_ENV: &str = "FLOWFM_REQUIRE_GPU";

/// Reports that a device test found no GPU ([`crate::device::test_gpu`] gave `None`): prints
/// `SKIPPED: <what> (no CUDA GPU ...)` so the run log counts it, or panics when
/// `FLOWFM_REQUIRE_GPU=1`. Independent of [`REQUIRE_EXTERNAL_ENV`]: CI has the datasets but no
/// GPU. Call it and `return` from the test.
///
/// # Panics
/// When `FLOWFM_REQUIRE_GPU=1`.
pub fn skip_without_gpu(what: &str) {
    let why = if crate::device::CUDA_BUILD {
        "no CUDA GPU could be opened"
    } else {
        "this build has no `cuda` feature"
    };
    if std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1") {
        panic!("{what}: {why}, and {REQUIRE_GPU_ENV}=1 says the GPU tests must run");
    }
    eprintln!("SKIPPED: {what} ({why})");
}
