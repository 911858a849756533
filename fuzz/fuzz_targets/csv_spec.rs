//! Fuzzes the CSV dataset spec (`--spec FILE`, TOML): parse and validate, then (when valid) the
//! compiled reading plan through `read_csv_folder` on a small file, so every accepted spec is
//! also usable without a panic.

#![no_main]

mod common;

use flowfm_data::readers::{read_csv_folder, CsvFolderSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = CsvFolderSpec::from_toml_str(text) else {
        return;
    };
    let dir = common::scratch();
    common::put(
        &dir,
        "1_walk.csv",
        b"t,acc_x,acc_y,acc_z,label\n0,0.1,0.2,1.0,walk\n20,0.1,0.2,1.0,walk\n40,0.1,0.2,1.0,walk\n",
    );
    let _ = read_csv_folder(&dir, &spec);
});
