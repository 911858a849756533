//! The study statistics against scipy / numpy: bootstrap intervals, Wilcoxon p-values and the
//! area under a validation curve (the normal tail, `erfc`, is checked inside the crate).
//!
//! The numbers come from `tests/fixtures/make_stats_reference.py` (scipy 1.17.1, numpy 2.4.6),
//! which wrote `tests/fixtures/stats_reference.json`; rerun it there to regenerate.

use flowfm_core::{SeededRng, Tolerance};
use flowfm_eval::stats::{
    bootstrap_mean, bootstrap_paired_difference, bootstrap_ratio_of_means, wilcoxon_signed_rank,
    BootstrapConfig, Interval, WilcoxonMethod,
};
use flowfm_eval::{CurveAxis, ValidationCurve};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    bootstrap_mean: Vec<BootMean>,
    bootstrap_paired_difference: BootTwo,
    bootstrap_ratio_of_means: BootTwo,
    wilcoxon: Vec<Wilcoxon>,
    area: Vec<Area>,
}

#[derive(Deserialize)]
struct BootMean {
    name: String,
    data: Vec<f64>,
    low: f64,
    high: f64,
    se: f64,
}

#[derive(Deserialize)]
struct BootTwo {
    a: Vec<f64>,
    b: Vec<f64>,
    low: f64,
    high: f64,
    se: f64,
}

#[derive(Deserialize)]
struct Wilcoxon {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    statistic: f64,
    pvalue: f64,
    method: String,
}

#[derive(Deserialize)]
struct Area {
    name: String,
    steps: Vec<u64>,
    secs: Vec<f64>,
    values: Vec<f64>,
    area_steps: f64,
    area_secs: f64,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("fixtures/stats_reference.json")).unwrap()
}

/// 20,000 resamples here against scipy's 200,000: the Monte Carlo sd of a 2.5 % or 97.5 %
/// quantile is about 0.02 bootstrap standard errors, so 0.1 of a standard error is a 5-sigma
/// tolerance. On the skewed and heavy-tailed cases the basic interval misses scipy's ends by about
/// 0.3 standard errors and the normal interval by about 0.18, so a wrong method fails.
const RESAMPLES: usize = 20_000;

fn assert_matches_scipy(name: &str, got: &Interval, low: f64, high: f64, se: f64) {
    let tol = 0.1 * se;
    assert!(
        (got.lower - low).abs() < tol && (got.upper - high).abs() < tol,
        "{name}: [{}, {}] vs scipy [{low}, {high}] (tolerance {tol})",
        got.lower,
        got.upper
    );
    assert!(
        Tolerance::new(0.03, 0.0).close(got.standard_error, se),
        "{name}: standard error {} vs scipy {se}",
        got.standard_error
    );
    assert!(
        got.lower <= got.estimate && got.estimate <= got.upper,
        "{name}"
    );
}

fn cfg() -> BootstrapConfig {
    BootstrapConfig {
        resamples: RESAMPLES,
        confidence: 0.95,
    }
}

#[test]
fn bootstrap_intervals_of_a_mean_match_scipy_percentile() {
    let r = reference();
    assert_eq!(r.bootstrap_mean.len(), 4);
    for (i, case) in r.bootstrap_mean.iter().enumerate() {
        let got = bootstrap_mean(&case.data, &cfg(), &mut SeededRng::new(100 + i as u64)).unwrap();
        let mean = case.data.iter().sum::<f64>() / case.data.len() as f64;
        assert!(Tolerance::F64.close(got.estimate, mean));
        assert_matches_scipy(&case.name, &got, case.low, case.high, case.se);
    }
}

#[test]
fn bootstrap_interval_of_a_paired_difference_matches_scipy() {
    let c = reference().bootstrap_paired_difference;
    let got = bootstrap_paired_difference(&c.a, &c.b, &cfg(), &mut SeededRng::new(7)).unwrap();
    assert_matches_scipy("paired difference", &got, c.low, c.high, c.se);
}

#[test]
fn bootstrap_interval_of_a_ratio_of_means_matches_scipy_unpaired() {
    let c = reference().bootstrap_ratio_of_means;
    let got = bootstrap_ratio_of_means(&c.a, &c.b, &cfg(), &mut SeededRng::new(8)).unwrap();
    assert_eq!(got.sizes, vec![c.a.len(), c.b.len()]);
    assert_matches_scipy("ratio of means", &got, c.low, c.high, c.se);
}

#[test]
fn wilcoxon_matches_scipy_statistic_p_value_and_method() {
    let r = reference();
    let mut methods = Vec::new();
    for c in &r.wilcoxon {
        let got = wilcoxon_signed_rank(&c.x, &c.y).unwrap();
        let method = match got.method {
            WilcoxonMethod::Exact => "exact",
            WilcoxonMethod::Permutation => "permutation",
            WilcoxonMethod::Asymptotic => "asymptotic",
        };
        assert_eq!(method, c.method, "{}: method", c.name);
        assert!(
            Tolerance::new(0.0, 1e-12).close(got.statistic, c.statistic),
            "{}: statistic {} vs {}",
            c.name,
            got.statistic,
            c.statistic
        );
        assert!(
            Tolerance::new(1e-9, 1e-12).close(got.p_value, c.pvalue),
            "{}: p {} vs scipy {}",
            c.name,
            got.p_value,
            c.pvalue
        );
        methods.push(got.method);
    }
    // the fixture exercises every branch of the rule, with ties and zeros, n from 5 to 55
    for m in [
        WilcoxonMethod::Exact,
        WilcoxonMethod::Permutation,
        WilcoxonMethod::Asymptotic,
    ] {
        assert!(methods.contains(&m), "{m:?} not exercised");
    }
    assert!(
        r.wilcoxon.iter().any(|c| c.x.len() == 5) && r.wilcoxon.iter().any(|c| c.x.len() == 40)
    );
}

#[test]
fn normalised_area_matches_numpy_trapezoid() {
    for c in reference().area {
        let curve = ValidationCurve::from_columns(&c.steps, &c.secs, &c.values).unwrap();
        let t = Tolerance::new(1e-12, 1e-14);
        let steps = curve.normalised_area(CurveAxis::Steps).unwrap();
        let secs = curve.normalised_area(CurveAxis::Secs).unwrap();
        assert!(
            t.close(steps, c.area_steps),
            "{}: {steps} vs {}",
            c.name,
            c.area_steps
        );
        assert!(
            t.close(secs, c.area_secs),
            "{}: {secs} vs {}",
            c.name,
            c.area_secs
        );
    }
}
