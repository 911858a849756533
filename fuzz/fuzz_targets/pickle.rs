//! Fuzzes the pickle and `.npy` decoders (in memory): the KCC2020 HAPT pickle and seglearn's
//! watch `.npy` (the first byte picks).

#![no_main]

use std::path::Path;

use flowfm_data::registry::{decode_hapt_pickle, decode_watch_npy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let source = Path::new("fuzz-input");
    let _ = if which % 2 == 0 {
        decode_hapt_pickle(body, source)
    } else {
        decode_watch_npy(body, source)
    };
});
