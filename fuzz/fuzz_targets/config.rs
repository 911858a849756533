//! Fuzzes the experiment config (`flowfm pretrain --config`, `configs/*.toml`): parse, validate,
//! and serialise back; whatever the text, `Ok` or `Err`, never a panic.

#![no_main]

use flowfm::train::config::ExperimentFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = ExperimentFile::parse(text, "fuzz.toml") else {
        return;
    };
    let _ = file.to_toml();
    let _ = file.validate();
});
