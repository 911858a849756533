//! Analytic checks of the ODE solvers: exact quadrature of a time-only field, measured
//! convergence orders on dx/dt = a x, and Dormand-Prince efficiency against RK4.

use candle_core::{Device, Result, Tensor, Var};
use flowfm_core::{Conditioning, FlowTimes, Tolerance, VelocityField};
use flowfm_sampling::{solve, Dopri5Options, OdeMethod, TimeGrid};

/// Per-sample times as a `(batch, 1, 1)` tensor that broadcasts against `x`.
fn t_col(x: &Tensor, t: &FlowTimes) -> Result<Tensor> {
    t.tensor().reshape((x.dims()[0], 1, 1))
}

fn quadratic(x: &Tensor, t: &FlowTimes, _: &Conditioning) -> Result<Tensor> {
    x.ones_like()?
        .broadcast_mul(&t_col(x, t)?.sqr()?.affine(3.0, 0.0)?)
}

fn values(x: &Tensor) -> Vec<f64> {
    flowfm_core::tolerance::tensor_to_f64(x).unwrap()
}

fn x0() -> Tensor {
    Tensor::new(&[[[0.5f64, -1.0, 2.0]], [[0.0, 1.0, 0.25]]], &Device::Cpu).unwrap()
}

/// Runs the solver and returns the largest absolute change of x minus `shift`.
fn displacement(method: &OdeMethod, grid: &TimeGrid) -> (f64, usize) {
    let x = x0();
    let (x1, nfe) = solve(&quadratic, &x, &Conditioning::None, grid, method).unwrap();
    let d = values(&x1.sub(&x).unwrap());
    // Every element moves by the same amount for a field that ignores x.
    for w in d.windows(2) {
        assert!(Tolerance::F64.close(w[0], w[1]));
    }
    (d[0], nfe.0)
}

#[test]
fn rk4_and_dopri5_move_x_by_exactly_one_under_three_t_squared() {
    let grid = TimeGrid::noise_to_data(3).unwrap();
    let (d, nfe) = displacement(&OdeMethod::Rk4, &grid);
    assert!(Tolerance::F64.close(d, 1.0), "rk4 moved {d}");
    assert_eq!(nfe, 12);
    let uneven = TimeGrid::new(vec![0.0, 0.1, 0.5, 1.0]).unwrap();
    let (d, _) = displacement(&OdeMethod::Rk4, &uneven);
    assert!(
        Tolerance::F64.close(d, 1.0),
        "rk4 on an uneven grid moved {d}"
    );
    let (d, _) = displacement(&OdeMethod::Dopri5(Dopri5Options::default()), &uneven);
    assert!(
        Tolerance::new(1e-12, 1e-12).close(d, 1.0),
        "dopri5 moved {d}"
    );
}

#[test]
fn low_order_solvers_match_their_quadrature_rules_on_three_t_squared() {
    // n equal steps of h = 1/n over the integral of 3 t^2 on [0, 1]:
    // left Riemann sum (Euler) = (n-1)(2n-1) / (2 n^2), midpoint rule = 1 - 1/(4 n^2),
    // trapezoid rule (Heun) = 1 + 1/(2 n^2).
    for n in [1usize, 4, 7] {
        let nf = n as f64;
        let grid = TimeGrid::noise_to_data(n).unwrap();
        let cases = [
            (
                OdeMethod::Euler,
                (nf - 1.0) * (2.0 * nf - 1.0) / (2.0 * nf * nf),
                n,
            ),
            (OdeMethod::Midpoint, 1.0 - 1.0 / (4.0 * nf * nf), 2 * n),
            (OdeMethod::Heun, 1.0 + 1.0 / (2.0 * nf * nf), 2 * n),
        ];
        for (method, expected, expected_nfe) in cases {
            let (d, nfe) = displacement(&method, &grid);
            assert!(
                Tolerance::F64.close(d, expected),
                "{method:?} n={n}: {d} vs {expected}"
            );
            assert_eq!(nfe, expected_nfe, "{method:?} NFE");
        }
    }
}

const A: f64 = 1.5;

fn linear(x: &Tensor, _: &FlowTimes, _: &Conditioning) -> Result<Tensor> {
    x.affine(A, 0.0)
}

fn linear_error(method: &OdeMethod, steps: usize) -> f64 {
    let x = x0();
    let grid = TimeGrid::noise_to_data(steps).unwrap();
    let (x1, _) = solve(&linear, &x, &Conditioning::None, &grid, method).unwrap();
    let exact = x.affine(A.exp(), 0.0).unwrap();
    let e = values(&x1.sub(&exact).unwrap());
    e.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

#[test]
fn halving_the_step_cuts_the_error_by_two_to_the_order() {
    for (method, order) in [
        (OdeMethod::Euler, 1.0),
        (OdeMethod::Midpoint, 2.0),
        (OdeMethod::Heun, 2.0),
        (OdeMethod::Rk4, 4.0),
    ] {
        let (e1, e2) = (linear_error(&method, 32), linear_error(&method, 64));
        let measured = (e1 / e2).log2();
        eprintln!(
            "{method:?}: error {e1:.3e} -> {e2:.3e}, ratio {:.2}, order {measured:.3}",
            e1 / e2
        );
        assert!(
            (measured - order).abs() < 0.1,
            "{method:?}: measured order {measured}, expected {order}"
        );
    }
}

/// dx/dt = cos(w t) x has x(1) = x(0) exp(sin(w) / w).
const W: f64 = 8.0;

fn oscillating(x: &Tensor, t: &FlowTimes, _: &Conditioning) -> Result<Tensor> {
    x.broadcast_mul(&t_col(x, t)?.affine(W, 0.0)?.cos()?)
}

fn oscillating_error(method: &OdeMethod, steps: usize) -> (f64, usize) {
    let x = x0();
    let grid = TimeGrid::noise_to_data(steps).unwrap();
    let (x1, nfe) = solve(&oscillating, &x, &Conditioning::None, &grid, method).unwrap();
    let exact = x.affine((W.sin() / W).exp(), 0.0).unwrap();
    let e = values(&x1.sub(&exact).unwrap());
    (e.iter().fold(0.0f64, |m, v| m.max(v.abs())), nfe.0)
}

#[test]
fn dopri5_meets_its_tolerance_with_fewer_evaluations_than_rk4() {
    let opts = Dopri5Options {
        rtol: 1e-9,
        atol: 1e-9,
        ..Dopri5Options::default()
    };
    let (err, nfe) = oscillating_error(&OdeMethod::Dopri5(opts), 1);
    assert!(
        err < 1e-7,
        "dopri5 error {err:e} misses rtol = atol = 1e-9 by far"
    );
    // Smallest RK4 step count reaching the same error.
    let mut n = 1;
    while oscillating_error(&OdeMethod::Rk4, n).0 > err {
        n += 1;
        assert!(n < 2000, "RK4 never reached {err:e}");
    }
    let rk4_nfe = oscillating_error(&OdeMethod::Rk4, n).1;
    eprintln!("dopri5: error {err:.3e} with NFE {nfe}; RK4 needs {n} steps = NFE {rk4_nfe}");
    assert!(
        nfe < rk4_nfe,
        "dopri5 NFE {nfe} vs RK4 NFE {rk4_nfe} at error {err:e}"
    );
}

#[test]
fn dopri5_tightening_the_tolerance_lowers_the_error() {
    let mut last = f64::INFINITY;
    for tol in [1e-4, 1e-6, 1e-8] {
        let opts = Dopri5Options {
            rtol: tol,
            atol: tol,
            ..Dopri5Options::default()
        };
        let (err, _) = oscillating_error(&OdeMethod::Dopri5(opts), 1);
        assert!(err < last, "tol {tol}: error {err:e} not below {last:e}");
        assert!(err < 100.0 * tol, "tol {tol}: error {err:e}");
        last = err;
    }
}

#[test]
fn dopri5_gives_up_with_an_error_after_max_steps() {
    let opts = Dopri5Options {
        rtol: 1e-12,
        atol: 1e-12,
        max_steps: 3,
        initial_step: Some(1e-3),
    };
    let grid = TimeGrid::noise_to_data(1).unwrap();
    let err = solve(
        &oscillating,
        &x0(),
        &Conditioning::None,
        &grid,
        &OdeMethod::Dopri5(opts),
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_steps"), "{err}");
}

#[test]
fn the_conditioning_reaches_the_field_and_sampling_builds_no_graph() {
    // v(x, t | z) = z: the flow moves each sample by its own z.
    let field = |x: &Tensor, _: &FlowTimes, c: &Conditioning| -> Result<Tensor> {
        let z = c
            .representation()
            .expect("conditioned")
            .reshape((x.dims()[0], 1, 1))?;
        x.zeros_like()?.broadcast_add(&z)
    };
    let z = Var::from_tensor(&Tensor::new(&[2.0f64, -3.0], &Device::Cpu).unwrap()).unwrap();
    let x = Var::from_tensor(&x0()).unwrap();
    let grid = TimeGrid::noise_to_data(5).unwrap();
    let cond = Conditioning::Representation(z.as_tensor().clone());
    let (x1, nfe) = solve(&field, x.as_tensor(), &cond, &grid, &OdeMethod::Heun).unwrap();
    assert_eq!(nfe.0, 10);
    let d = values(&x1.sub(x.as_tensor()).unwrap());
    Tolerance::F64.assert_close(&d, &[2.0, 2.0, 2.0, -3.0, -3.0, -3.0]);
    let grads = x1.sum_all().unwrap().backward().unwrap();
    assert!(
        grads.get(z.as_tensor()).is_none(),
        "gradient reached z through the sampler"
    );
    assert!(
        grads.get(x.as_tensor()).is_none(),
        "gradient reached x_0 through the sampler"
    );
}

#[test]
fn a_field_returning_the_wrong_shape_is_an_error() {
    let bad = |x: &Tensor, _: &FlowTimes, _: &Conditioning| -> Result<Tensor> { x.narrow(2, 0, 1) };
    let grid = TimeGrid::noise_to_data(2).unwrap();
    let f: &dyn VelocityField = &bad;
    assert!(solve(f, &x0(), &Conditioning::None, &grid, &OdeMethod::Euler).is_err());
}
