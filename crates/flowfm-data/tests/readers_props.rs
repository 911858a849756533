//! Property tests: every text reader, fed random bytes or randomly damaged valid files, returns
//! `Ok` or `Err` and never panics.

use std::path::Path;

use flowfm_data::readers::{
    read_adl, read_capture24, read_csv, read_hapt, read_opportunity, read_pamap2, read_uea_ts,
    read_wisdm, AdlOptions, Capture24Options, ChecksumPolicy, CsvSpec, HaptOptions,
    OpportunityOptions, Pamap2Options, UeaOptions, WisdmOptions,
};
use proptest::prelude::*;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Runs every reader on `bytes` placed where it looks for its files.
fn run_all(bytes: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("wisdm/data_1600_accel_watch.txt"), bytes);
    let _ = read_wisdm(&root.join("wisdm"), &WisdmOptions::default());
    write(
        &root.join("adl/Walk/Accelerometer-2011-01-01-00-00-00-walk-f1.txt"),
        bytes,
    );
    let _ = read_adl(&root.join("adl"), &AdlOptions::default());
    write(&root.join("hapt/RawData/labels.txt"), b"1 1 1 1 2\n");
    write(&root.join("hapt/RawData/acc_exp01_user01.txt"), bytes);
    write(&root.join("hapt/RawData/gyro_exp01_user01.txt"), bytes);
    let _ = read_hapt(&root.join("hapt"), &HaptOptions::default());
    write(&root.join("hapt2/RawData/labels.txt"), bytes);
    write(&root.join("hapt2/RawData/acc_exp01_user01.txt"), b"1 2 3\n");
    write(
        &root.join("hapt2/RawData/gyro_exp01_user01.txt"),
        b"1 2 3\n",
    );
    let _ = read_hapt(&root.join("hapt2"), &HaptOptions::default());
    write(&root.join("pamap2/Protocol/subject101.dat"), bytes);
    let p = Pamap2Options {
        checksums: ChecksumPolicy::RecordOnly,
        ..Pamap2Options::default()
    };
    let _ = read_pamap2(&root.join("pamap2"), &p);
    write(&root.join("opp/dataset/S1-ADL1.dat"), bytes);
    let o = OpportunityOptions {
        checksums: ChecksumPolicy::RecordOnly,
        ..OpportunityOptions::default()
    };
    let _ = read_opportunity(&root.join("opp"), &o);
    write(&root.join("c24/P001.csv"), bytes);
    let _ = read_capture24(&root.join("c24"), &Capture24Options::default());
    write(&root.join("uea/x.ts"), bytes);
    let _ = read_uea_ts(&root.join("uea/x.ts"), &UeaOptions::default());
    write(&root.join("csv/x.csv"), bytes);
    let _ = read_csv(&root.join("csv/x.csv"), &CsvSpec::xyz_fixed_rate(50.0));
}

/// Valid-looking lines of every format, to be damaged by the strategies.
const SEED: &str = "1600,A,90426708196641,7.0916,-0.59,8.19;\n\
time,x,y,z,annotation\n\
2016-11-13 10:00:00.000000,0.5,-0.25,1.0,7030 sleeping\n\
32 47 40\r\n0.918 -0.112 0.509\n\
@problemName T\n@classLabel true a b\n@data\n1,2:3,4:a\n\
8.38 0 104 30.0 NaN 1 2 3\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn readers_never_panic_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        run_all(&bytes);
    }

    #[test]
    fn readers_never_panic_on_damaged_valid_lines(
        cut in 0usize..SEED.len(),
        edits in proptest::collection::vec((0usize..SEED.len(), any::<u8>()), 0..8),
    ) {
        let mut b = SEED.as_bytes()[..cut.max(1)].to_vec();
        for (i, v) in edits {
            if i < b.len() {
                b[i] = v;
            }
        }
        run_all(&b);
    }

    #[test]
    fn readers_never_panic_on_number_soup(text in "[0-9A-Sa-z,;:.@?\\- \\n\\r+eE]{0,400}") {
        run_all(text.as_bytes());
    }
}
