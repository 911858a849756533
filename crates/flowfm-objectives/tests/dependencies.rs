//! Architecture invariant: flowfm-objectives depends only on flowfm-core and candle (never on
//! flowfm-models; networks are seen through the core traits).

#[test]
fn objectives_depend_only_on_core_and_candle() {
    let manifest = include_str!("../Cargo.toml");
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            deps.push(line.split(['=', '.', ' ']).next().unwrap_or("").to_string());
        }
    }
    deps.sort();
    assert_eq!(deps, vec!["candle-core", "candle-nn", "flowfm-core"]);
}
