//! flowfm-sampling: ODE solvers for flow matching and DDPM / DDIM samplers for the diffusion
//! baseline, plus the seeded, batched generation API.
//!
//! - [`grid`]: strictly increasing flow-time grids ([`TimeGrid`]);
//! - [`ode`]: Euler, midpoint, Heun, RK4 and adaptive Dormand-Prince 5(4) ([`solve`]), each
//!   reporting its number of field evaluations ([`Nfe`]);
//! - [`diffusion`]: ancestral DDPM and DDIM steps and samplers;
//! - [`generate`]: windows from noise conditioned on representations ([`generate_flow`],
//!   [`generate_diffusion`]).
//!
//! **Invariant**: this crate sees networks only through `flowfm_core::{VelocityField, Denoiser}`
//! and depends on nothing but `flowfm-core` and `candle-core`. Sampling detaches its inputs, so it
//! never builds an autograd graph.
//!
//! ```
//! use candle_core::{Result, Tensor};
//! use flowfm_core::{Conditioning, FlowTimes};
//! use flowfm_sampling::{solve, OdeMethod, TimeGrid};
//! // dx/dt = 3 t^2 moves x by exactly 1 under RK4.
//! let field = |x: &Tensor, t: &FlowTimes, _: &Conditioning| -> Result<Tensor> {
//!     x.ones_like()?.broadcast_mul(&t.tensor().sqr()?.affine(3.0, 0.0)?.reshape((x.dims()[0], 1, 1))?)
//! };
//! let x0 = Tensor::zeros((2, 3, 4), candle_core::DType::F64, &candle_core::Device::Cpu)?;
//! let grid = TimeGrid::noise_to_data(4)?;
//! let (x1, nfe) = solve(&field, &x0, &Conditioning::None, &grid, &OdeMethod::Rk4)?;
//! assert_eq!(nfe.0, 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod diffusion;
pub mod generate;
pub mod grid;
pub mod ode;

pub use diffusion::{
    ddim_sample, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step, DdimOptions, DdpmOptions,
    PosteriorVariance, StepSpacing,
};
pub use generate::{
    generate_diffusion, generate_flow, DiffusionMethod, GenerateOptions, Generated, SampleShape,
};
pub use grid::TimeGrid;
pub use ode::{solve, Dopri5Options, Nfe, OdeMethod};
