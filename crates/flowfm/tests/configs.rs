//! Every experiment config shipped under `configs/` parses and validates.

use flowfm::config::Experiment;
use std::path::Path;

#[test]
fn every_shipped_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let exp = Experiment::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            assert!(
                stem.starts_with(exp.method.name()),
                "{stem}: file name should start with its method"
            );
            count += 1;
        }
    }
    assert!(count >= 6, "expected the shipped configs, found {count}");
}
