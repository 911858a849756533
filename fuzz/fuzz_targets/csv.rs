//! Fuzzes the generic CSV reader with a fixed-rate spec and a spec with a time column in ms
//! (the first byte picks), and `prepare` on what it accepts.

#![no_main]

mod common;

use flowfm_data::readers::{read_csv, ColumnRef, CsvSpec, TimeSpec, TimeUnit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let dir = common::scratch();
    common::put(&dir, "x.csv", body);
    let mut spec = CsvSpec::xyz_fixed_rate(50.0);
    if which % 2 == 1 {
        spec.time = TimeSpec::Column {
            column: ColumnRef::Name("t".into()),
            unit: TimeUnit::Milliseconds,
            nominal_rate_hz: 50.0,
        };
        spec.label_column = Some(ColumnRef::Name("label".into()));
    }
    if let Ok(raw) = read_csv(&dir.join("x.csv"), &spec) {
        common::prepare_bounded(&raw);
    }
});
