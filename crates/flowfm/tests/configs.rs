//! Every experiment config shipped under `configs/` parses and validates.

use flowfm::train::config::Experiment;
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

fn configs_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn every_profile_of_the_study_reads_its_three_configs_from_configs() {
    use flowfm::study::{Profile, METHODS};
    for profile in [Profile::Quick, Profile::Default, Profile::Full] {
        for method in METHODS {
            let exp = profile
                .experiment(&configs_dir(), method, 7)
                .unwrap_or_else(|e| panic!("{} / {method}: {e:#}", profile.name()));
            assert_eq!(exp.method.name(), method);
            assert_eq!(exp.seed, 7, "the study's seed overrides the file's");
            // What the study runs is exactly the file, but for the seed.
            let file = Experiment::load(&profile.config_path(&configs_dir(), method)).unwrap();
            let mut expected = file.file.clone();
            expected.run.seed = 7;
            assert_eq!(exp.file, expected, "{} / {method}", profile.name());
        }
    }
}

#[test]
fn editing_a_config_file_changes_the_study() {
    use flowfm::study::Profile;
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let before = Profile::Quick
        .experiment(dir.path(), "diffusion", 0)
        .unwrap();
    let path = Profile::Quick.config_path(dir.path(), "diffusion");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("steps = 40"),
        "the quick profile trains 40 steps"
    );
    std::fs::write(&path, text.replace("steps = 40", "steps = 17")).unwrap();
    let after = Profile::Quick
        .experiment(dir.path(), "diffusion", 0)
        .unwrap();
    assert_eq!(before.file.train.steps, Some(40));
    assert_eq!(after.file.train.steps, Some(17));
    // A file that names another method is refused, naming the file.
    std::fs::write(
        &path,
        text.replace("method = \"diffusion\"", "method = \"flowfm\""),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        Profile::Quick
            .experiment(dir.path(), "diffusion", 0)
            .unwrap_err()
    );
    assert!(
        err.contains("diffusion-quick.toml") && err.contains("run.method"),
        "{err}"
    );
}
