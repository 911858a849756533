//! Welch's t-test against scipy: `tests/fixtures/make_welch_reference.py` (scipy 1.17.1, numpy
//! 2.4.6) wrote `tests/fixtures/welch_reference.json`; rerun it there to regenerate.

use flowfm_eval::stats::{log_ratio_test, welch_t_test};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    a: Vec<f64>,
    b: Vec<f64>,
    log: bool,
    t: f64,
    df: f64,
    pvalue: f64,
    low: f64,
    high: f64,
}

fn close(name: &str, what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{name}: {what} {got} != scipy's {want}"
    );
}

#[test]
fn welch_matches_scipy() {
    let text = include_str!("fixtures/welch_reference.json");
    let r: Reference = serde_json::from_str(text).unwrap();
    assert!(r.cases.len() >= 5);
    for c in &r.cases {
        let w = if c.log {
            let l = log_ratio_test(&c.a, &c.b).unwrap();
            close(&c.name, "ratio", l.ratio, l.welch.difference.exp());
            close(&c.name, "ratio low", l.low, c.low.exp());
            close(&c.name, "ratio high", l.high, c.high.exp());
            l.welch
        } else {
            welch_t_test(&c.a, &c.b).unwrap()
        };
        close(&c.name, "t", w.t, c.t);
        close(&c.name, "df", w.df, c.df);
        close(&c.name, "p", w.p_value, c.pvalue);
        close(&c.name, "low", w.low, c.low);
        close(&c.name, "high", w.high, c.high);
    }
}
