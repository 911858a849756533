//! Who is used for what: each dataset's subjects split once into a pretraining half and a
//! downstream half ([`plan_subjects`]; a transfer dataset gives every subject to downstream), the
//! unlabelled pretraining pool, the validation probe (labelled windows of subjects outside the
//! pool) and the held-out windows of the generation study (downstream subjects only).
//!
//! **Invariant:** pretraining never sees a downstream subject, nor any subject of a transfer
//! dataset.

use super::profile::Profile;
use crate::datasets::{DatasetSpec, PreparedStore};
use crate::generation::StudySets;
use crate::train::pretrain::ValidationProbe;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use flowfm_core::SeededRng;
use serde::Serialize;
use std::collections::BTreeSet;

/// The subjects of a dataset split into a pretraining part and a downstream part.
#[derive(Clone, Debug, Serialize)]
pub struct SubjectPlan {
    /// Dataset name.
    pub dataset: String,
    /// Subjects whose windows (labelled or not) form the pretraining pool.
    pub pretrain_subjects: Vec<i64>,
    /// Subjects used only by the downstream protocols (never seen in pretraining).
    pub downstream_subjects: Vec<i64>,
    /// A transfer dataset: no subject of it is in the pretraining pool.
    pub transfer: bool,
}

/// Splits subjects in half (seeded): pretraining never sees a downstream subject. With
/// `transfer`, every subject is downstream.
pub fn plan_subjects(dataset: &str, subjects: &[i64], seed: u64, transfer: bool) -> SubjectPlan {
    let mut unique: Vec<i64> = subjects
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    SeededRng::new(seed)
        .derive(&format!("subject-plan/{dataset}"))
        .shuffle(&mut unique);
    let half = if transfer { 0 } else { unique.len() / 2 };
    let mut pre = unique[..half].to_vec();
    let mut down = unique[half..].to_vec();
    pre.sort_unstable();
    down.sort_unstable();
    SubjectPlan {
        dataset: dataset.into(),
        pretrain_subjects: pre,
        downstream_subjects: down,
        transfer,
    }
}

/// The labelled validation probe watched during pretraining: labelled windows of subjects
/// *outside* the pretraining pool (downstream subjects of the dataset with the most of them), its
/// subjects split in half (seeded) into a kNN memory and a scored half. The probe only measures
/// (no checkpoint is chosen by it), so nothing of these subjects reaches the encoders.
pub fn validation_probe(
    prepared: &[(DatasetSpec, PreparedStore)],
    plans: &[SubjectPlan],
    profile: Profile,
    steps: u64,
    seed: u64,
) -> Result<Option<ValidationProbe>> {
    let mut best: Option<(usize, Vec<usize>)> = None;
    for (d, ((_, p), plan)) in prepared.iter().zip(plans).enumerate() {
        let keep: BTreeSet<i64> = plan.downstream_subjects.iter().copied().collect();
        let idx: Vec<usize> = (0..p.store.num_windows())
            .filter(|&i| p.store.y[i] >= 0 && keep.contains(&p.store.subject[i]))
            .collect();
        if best.as_ref().map(|b| idx.len() > b.1.len()).unwrap_or(true) {
            best = Some((d, idx));
        }
    }
    let Some((d, idx)) = best else {
        return Ok(None);
    };
    let (spec, p) = &prepared[d];
    let mut subjects: Vec<i64> = idx
        .iter()
        .map(|&i| p.store.subject[i])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if subjects.len() < 2 {
        return Ok(None);
    }
    let rng = SeededRng::new(seed).derive("validation-probe");
    rng.derive("subjects").shuffle(&mut subjects);
    let fit_subjects: BTreeSet<i64> = subjects[..subjects.len() / 2].iter().copied().collect();
    let (n_fit, n_eval) = profile.probe_windows();
    let side = |fit: bool, n: usize, name: &str| -> Result<(Tensor, Vec<usize>)> {
        let mut rows: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| fit_subjects.contains(&p.store.subject[i]) == fit)
            .collect();
        rng.derive(name).shuffle(&mut rows);
        rows.truncate(n);
        rows.sort_unstable();
        let ws = p.store.load_subset(&rows)?;
        let y = ws.y.iter().map(|&v| v as usize).collect();
        let x = Tensor::from_vec(
            ws.x,
            (rows.len(), ws.channels, ws.window_len),
            &candle_core::Device::Cpu,
        )?;
        Ok((x, y))
    };
    let (fit_x, fit_y) = side(true, n_fit, "fit")?;
    let (eval_x, eval_y) = side(false, n_eval, "eval")?;
    if fit_y.len() < 5 || eval_y.is_empty() {
        return Ok(None);
    }
    let num_classes = p.store.meta.class_names.len().max(
        fit_y
            .iter()
            .chain(&eval_y)
            .max()
            .map(|m| m + 1)
            .unwrap_or(0),
    );
    let (every, dense_every, dense_until) = ((steps / 10).max(1), (steps / 60).max(1), steps / 5);
    Ok(Some(ValidationProbe {
        name: format!(
            "{}: {} windows of {} subjects outside the pretraining pool memorised, {} windows of {} others scored, \
             every {dense_every} steps up to step {dense_until} and every {every} steps after",
            spec.name,
            fit_y.len(),
            fit_subjects.len(),
            eval_y.len(),
            subjects.len() - fit_subjects.len()
        ),
        fit_x,
        fit_y,
        eval_x,
        eval_y,
        num_classes,
        every,
        dense_every,
        dense_until,
    }))
}

/// The real windows of the generation study: labelled windows of one dataset's downstream
/// subjects (never seen in pretraining), split by subject into a conditioning set and a reference
/// set of the same size (up to `n` each, all that exist on the smaller side when fewer).
///
/// One dataset, so one label space for the label-agreement classifier: among the datasets that
/// take part in pretraining (held-out subjects of the distribution the generators learned;
/// transfer datasets only when no other has labelled downstream windows), the one whose smaller
/// side is largest. Its downstream subjects are shuffled (seeded) and dealt one by one to
/// the side holding fewer labelled windows so far; each side's windows are then drawn with a
/// seeded shuffle.
pub fn held_out_windows(
    prepared: &[(DatasetSpec, PreparedStore)],
    plans: &[SubjectPlan],
    n: usize,
    seed: u64,
) -> Result<StudySets> {
    let rng = SeededRng::new(seed).derive("generation-windows");
    // (dataset, [conditioning windows, reference windows], subjects per side, downstream subjects)
    type Candidate = (usize, [Vec<usize>; 2], [usize; 2], usize);
    let mut best: Option<Candidate> = None;
    for (d, ((spec, p), plan)) in prepared.iter().zip(plans).enumerate() {
        let mut subjects = plan.downstream_subjects.clone();
        rng.derive(&format!("subjects/{}", spec.name))
            .shuffle(&mut subjects);
        let mut sides: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        let mut counts = [0usize; 2];
        for s in &subjects {
            let idx: Vec<usize> = (0..p.store.num_windows())
                .filter(|&i| p.store.y[i] >= 0 && p.store.subject[i] == *s)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let side = usize::from(sides[1].len() < sides[0].len());
            sides[side].extend(idx);
            counts[side] += 1;
        }
        // a dataset of the pretraining distribution beats any transfer dataset
        let size = (!plan.transfer, sides[0].len().min(sides[1].len()));
        let better = best.as_ref().map_or(size.1 > 0, |b| {
            let bs = (!plans[b.0].transfer, b.1[0].len().min(b.1[1].len()));
            size.1 > 0 && size > bs
        });
        if better {
            best = Some((d, sides, counts, subjects.len()));
        }
    }
    let Some((d, mut sides, counts, downstream)) = best else {
        bail!("generation: no dataset has labelled windows of two downstream subjects")
    };
    let (spec, p) = &prepared[d];
    let available = sides[0].len().min(sides[1].len());
    let take = n.min(available);
    let mut sets = Vec::with_capacity(2);
    for (side, name) in sides.iter_mut().zip(["conditioning", "reference"]) {
        rng.derive(name).shuffle(side);
        side.truncate(take);
        side.sort_unstable();
        let mut ws = p.store.load_subset(side)?;
        ws.dataset = spec.name.clone();
        sets.push(ws);
    }
    let reference = sets.pop().context("internal: no reference set")?;
    let conditioning = sets.pop().context("internal: no conditioning set")?;
    Ok(StudySets {
        description: format!(
            "labelled windows of {}{}: conditioning windows from {} of its {} downstream subjects, reference windows from {} others (subject-disjoint; none seen in pretraining); {} of {} available per side{}",
            spec.name,
            if plans[d].transfer {
                " (a transfer dataset: no other dataset had labelled downstream windows)"
            } else {
                ""
            },
            counts[0],
            downstream,
            counts[1],
            take,
            available,
            if take < n {
                format!(", fewer than the {n} asked for")
            } else {
                String::new()
            }
        ),
        conditioning,
        reference,
        requested: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_dataset_gives_every_subject_to_downstream() {
        let subjects = [3, 1, 2, 2, 5, 4, 6, 1];
        let t = plan_subjects("adl_hmp5", &subjects, 0, true);
        assert!(t.transfer && t.pretrain_subjects.is_empty());
        assert_eq!(t.downstream_subjects, vec![1, 2, 3, 4, 5, 6]);
        let w = plan_subjects("wisdm_watch", &subjects, 0, false);
        assert_eq!(
            (w.pretrain_subjects.len(), w.downstream_subjects.len()),
            (3, 3)
        );
        assert!(w
            .pretrain_subjects
            .iter()
            .all(|s| !w.downstream_subjects.contains(s)));
    }
}
