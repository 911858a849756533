//! Fuzzes the UEA/UCR `.ts` parser (and `prepare` on what it accepts).

#![no_main]

mod common;

use flowfm_data::readers::{read_uea_ts, UeaOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch();
    common::put(&dir, "x.ts", data);
    if let Ok(raw) = read_uea_ts(&dir.join("x.ts"), &UeaOptions::default()) {
        common::prepare_bounded(&raw);
    }
});
