//! Fuzzes every raw dataset reader (and `prepare` on what they accept): the first byte picks the
//! reader, the rest is the content of one data file in that dataset's published layout.

#![no_main]

mod common;

use flowfm_data::readers::{read_dataset, DatasetKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let dir = common::scratch();
    let kind = match which % 7 {
        0 => {
            common::put(&dir, "data_1600_accel_watch.txt", body);
            DatasetKind::Wisdm2019
        }
        1 => {
            common::put(
                &dir,
                "HMP_Dataset/Walk/Accelerometer-2011-03-24-09-51-07-walk-f1.txt",
                body,
            );
            DatasetKind::AdlHmp
        }
        2 => {
            // labels.txt, then a NUL byte, then the accelerometer (and gyroscope) file.
            let cut = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            let (labels, acc) = (&body[..cut], body.get(cut + 1..).unwrap_or(&[]));
            common::put(&dir, "RawData/labels.txt", labels);
            common::put(&dir, "RawData/acc_exp01_user01.txt", acc);
            common::put(&dir, "RawData/gyro_exp01_user01.txt", acc);
            DatasetKind::UciHapt
        }
        3 => {
            common::put(&dir, "Protocol/subject110.dat", body);
            DatasetKind::Pamap2
        }
        4 => {
            common::put(&dir, "dataset/S5-ADL1.dat", body);
            DatasetKind::Opportunity
        }
        5 => {
            common::put(&dir, "proband1/data/acc_walking_csv.zip", body);
            DatasetKind::RealWorld2016
        }
        _ => {
            common::put(&dir, "P001.csv", body);
            DatasetKind::Capture24
        }
    };
    if let Ok(raw) = read_dataset(kind, &dir) {
        common::prepare_bounded(&raw);
    }
});
