//! AdamW with and without AMSGrad against PyTorch's `torch.optim.AdamW` (float64).
//!
//! The numbers below were produced by `tests/fixtures/make_amsgrad_reference.py` (PyTorch 2.15.0+cu132);
//! rerun with `python3 tests/fixtures/make_amsgrad_reference.py`, output pasted verbatim.

use candle_core::{DType, Device, Tensor, Var};
use flowfm_ops::optim::{AdamW, AdamWConfig};

const INIT: [[f64; 2]; 2] = [[0.5, -1.0], [2.0, 0.25]];
const GRADS: [[[f64; 2]; 2]; 6] = [
    [[0.1, -0.2], [0.3, 0.05]],
    [[3.0, -2.5], [4.0, 1.5]],
    [[0.2, 0.1], [-0.3, 0.05]],
    [[-0.05, 0.02], [0.1, -0.4]],
    [[0.01, -0.01], [0.02, 0.03]],
    [[-0.5, 0.3], [0.0, 0.2]],
];
const LR: f64 = 0.05;
const WD: f64 = 0.1;

/// PyTorch, betas (0.9, 0.999), amsgrad=True: the parameter after each step.
const TORCH_B999_AMSGRAD: [[f64; 4]; 6] = [
    [
        0.44750000499999953,
        -0.9450000024999998,
        1.9400000016666665,
        0.198750009999998,
    ],
    [
        0.4069607103421489,
        -0.9005161675014114,
        1.890692826726151,
        0.15945446549755854,
    ],
    [
        0.37325952989821726,
        -0.8665775050079142,
        1.8530916372993913,
        0.12800218772986657,
    ],
    [
        0.3459502108422223,
        -0.8383760731661165,
        1.8200580866445222,
        0.11058513942770071,
    ],
    [
        0.32263535167502294,
        -0.8139112011973959,
        1.7907427060600913,
        0.09533186659143071,
    ],
    [
        0.3069435107078361,
        -0.7955804405478412,
        1.7643749133959148,
        0.0789474454711419,
    ],
];

/// PyTorch, betas (0.9, 0.999), amsgrad=False: the parameter after each step.
const TORCH_B999_PLAIN: [[f64; 4]; 6] = [
    [
        0.44750000499999953,
        -0.9450000024999998,
        1.9400000016666665,
        0.198750009999998,
    ],
    [
        0.4069607103421489,
        -0.9005161675014114,
        1.890692826726151,
        0.15945446549755854,
    ],
    [
        0.37325952989821726,
        -0.8665775050079142,
        1.8530916372993913,
        0.12800218772986657,
    ],
    [
        0.34594100207004475,
        -0.8383648895324646,
        1.8200535535527966,
        0.11058513942770071,
    ],
    [
        0.32260769161386826,
        -0.8138805872165196,
        1.790724473757664,
        0.09532725856971552,
    ],
    [
        0.30691598894698724,
        -0.7955499796368692,
        1.7643362321975617,
        0.07894286048953528,
    ],
];

/// PyTorch, betas (0.8, 0.9), amsgrad=True: the parameter after each step.
const TORCH_B9_AMSGRAD: [[f64; 4]; 6] = [
    [
        0.4475000049999995,
        -0.9450000024999998,
        1.9400000016666665,
        0.198750009999998,
    ],
    [
        0.4059720804992507,
        -0.8996523062224416,
        1.889815981835088,
        0.15846583565468614,
    ],
    [
        0.37400160293908297,
        -0.8678676860580659,
        1.8543564570134528,
        0.12885678651724305,
    ],
    [
        0.35035222757342754,
        -0.843453443317697,
        1.82492635825811,
        0.11511892952048379,
    ],
    [
        0.33180382819506243,
        -0.8237264312024282,
        1.8001979716371135,
        0.10390393979031756,
    ],
    [
        0.3219349637574134,
        -0.811024687245626,
        1.779030264714831,
        0.09117896462461027,
    ],
];

/// PyTorch, betas (0.8, 0.9), amsgrad=False: the parameter after each step.
const TORCH_B9_PLAIN: [[f64; 4]; 6] = [
    [
        0.4475000049999995,
        -0.9450000024999998,
        1.9400000016666665,
        0.198750009999998,
    ],
    [
        0.4059720804992507,
        -0.8996523062224416,
        1.889815981835088,
        0.15846583565468614,
    ],
    [
        0.3724596001808736,
        -0.8664170837183333,
        1.8530343379603043,
        0.12731673083405728,
    ],
    [
        0.34646159055878906,
        -0.8398001102918462,
        1.8214488686149617,
        0.11273849435277825,
    ],
    [
        0.32510866504524283,
        -0.8174528226030529,
        1.7941301028823682,
        0.10023650185821488,
    ],
    [
        0.3135803905249845,
        -0.8028924528014983,
        1.770191263166838,
        0.08547500702532689,
    ],
];

/// Our optimiser over the same parameter and gradients; the parameter after each step.
fn ours(beta1: f64, beta2: f64, amsgrad: bool) -> Vec<Vec<f64>> {
    let dev = Device::Cpu;
    let p = Var::from_tensor(&Tensor::new(&INIT, &dev).unwrap()).unwrap();
    let cfg = AdamWConfig {
        beta1,
        beta2,
        eps: 1e-8,
        weight_decay: WD,
        amsgrad,
    };
    let mut opt = AdamW::new(vec![("p".into(), p.clone())], cfg).unwrap();
    let mut out = Vec::new();
    for g in GRADS {
        let g = Tensor::new(&g, &dev).unwrap();
        // d/dp sum(p * g) = g.
        let loss = p.as_tensor().mul(&g).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), LR).unwrap();
        assert_eq!(p.dtype(), DType::F64);
        out.push(p.as_tensor().flatten_all().unwrap().to_vec1().unwrap());
    }
    out
}

fn max_abs_diff(a: &[Vec<f64>], b: &[[f64; 4]; 6]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn adamw_and_amsgrad_match_pytorch() {
    for (beta1, beta2, ams, plain) in [
        (0.9, 0.999, &TORCH_B999_AMSGRAD, &TORCH_B999_PLAIN),
        (0.8, 0.9, &TORCH_B9_AMSGRAD, &TORCH_B9_PLAIN),
    ] {
        let with = ours(beta1, beta2, true);
        let without = ours(beta1, beta2, false);
        let (e_with, e_without) = (max_abs_diff(&with, ams), max_abs_diff(&without, plain));
        assert!(
            e_with < 1e-12,
            "betas ({beta1}, {beta2}), AMSGrad: off by {e_with:e}"
        );
        assert!(
            e_without < 1e-12,
            "betas ({beta1}, {beta2}), plain: off by {e_without:e}"
        );
        // The fixture separates the two updates far beyond the tolerance, so a build that
        // ignored the flag would fail above.
        let apart = max_abs_diff(&with, plain);
        assert!(
            apart > 1e-6,
            "betas ({beta1}, {beta2}): AMSGrad and plain agree ({apart:e})"
        );
    }
}
