//! Fuzzes the HDF5 window-store opener: open, read every window, check for non-finite values.

#![no_main]

mod common;

use flowfm_data::{NonFinite, WindowStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch();
    common::put(&dir, "s.h5", data);
    if let Ok(store) = WindowStore::open(dir.join("s.h5")) {
        let _ = store.read_x();
        let _ = store.check_finite(NonFinite::Skip);
    }
});
