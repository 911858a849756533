//! The report's SVG plots. Every plot is drawn through [`Report::svg`] (white canvas, written
//! atomically, listed with its caption), and every curve plot through [`draw_lines`]: one colour
//! per method, a legend, axis titles clear of the tick labels.

use super::Report;
use crate::downstream::compare::RunSummary;
use crate::generation::{ExampleWindow, GenerationStudy, StudyRow};
use crate::output::write_file;
use crate::study::rows::PretrainRow;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// A drawing area of an SVG held in memory.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The colour of the `i`-th method (or channel) in every plot.
fn colour(i: usize) -> RGBAColor {
    Palette99::pick(i).to_rgba()
}

/// The smallest and largest finite value, or `fallback` when there is none or they coincide.
fn finite_range(values: impl IntoIterator<Item = f64>, fallback: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        fallback
    }
}

/// One named curve of a line plot.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
    colour: RGBAColor,
}

/// A line plot: axes, curves and horizontal reference lines (targets, noise floors).
struct Lines<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x: Range<f64>,
    y: Range<f64>,
    curves: Vec<Curve>,
    /// Horizontal lines `(label, y)`, drawn grey.
    references: Vec<(String, f64)>,
    /// Dots on the points as well as lines.
    markers: bool,
    /// Tick labels of the x axis (e.g. `10^x` on a log axis).
    x_label: &'a dyn Fn(&f64) -> String,
    legend: SeriesLabelPosition,
}

/// Draws a [`Lines`] plot on `area`.
fn draw_lines(area: &Area<'_>, plot: &Lines<'_>) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(plot.caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(plot.x.clone(), plot.y.clone())?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc)
        .y_desc(plot.y_desc)
        .x_label_formatter(plot.x_label)
        .axis_desc_style(("sans-serif", 13))
        .draw()?;
    for c in &plot.curves {
        let colour = c.colour;
        chart
            .draw_series(LineSeries::new(c.points.iter().copied(), colour))?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        if plot.markers {
            chart.draw_series(c.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    for (label, y) in &plot.references {
        let grey = BLACK.mix(0.45);
        chart
            .draw_series(LineSeries::new(
                vec![(plot.x.start, *y), (plot.x.end, *y)],
                grey,
            ))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(plot.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn plain(v: &f64) -> String {
    format!("{v}")
}

impl Report {
    /// Draws an SVG of `size` pixels on a white canvas with `draw`, writes it atomically as
    /// `dir/file`, and lists it in the report under `caption`.
    fn svg(
        &mut self,
        dir: &Path,
        file: &str,
        size: (u32, u32),
        caption: &str,
        draw: impl FnOnce(&Area<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            root.fill(&WHITE)?;
            draw(&root)?;
            root.present()?;
        }
        write_file(&dir.join(file), svg.as_bytes())?;
        self.plots.push((file.into(), caption.into()));
        Ok(())
    }

    /// Loss curves of the pretraining runs, one panel per method (`loss_curves.svg`).
    pub fn plot_losses(&mut self, dir: &Path, rows: &[PretrainRow]) -> Result<()> {
        let size = (320 * rows.len().max(1) as u32, 320);
        self.svg(
            dir,
            "loss_curves.svg",
            size,
            "Pretraining loss per step",
            |root| {
                let panels = root.split_evenly((1, rows.len().max(1)));
                for (i, (panel, r)) in panels.iter().zip(rows).enumerate() {
                    let (lo, hi) = finite_range(r.losses.iter().copied(), (0.0, 1.0));
                    let n = r.losses.len().max(2) as f64;
                    draw_lines(
                        panel,
                        &Lines {
                            caption: &r.method,
                            x_desc: "step",
                            y_desc: "loss",
                            x: 1.0..n,
                            y: lo..hi,
                            curves: vec![Curve {
                                name: r.method.clone(),
                                points: (r.losses.iter().enumerate())
                                    .map(|(s, &l)| ((s + 1) as f64, l))
                                    .collect(),
                                colour: colour(i),
                            }],
                            references: vec![],
                            markers: false,
                            x_label: &plain,
                            legend: SeriesLabelPosition::UpperRight,
                        },
                    )?;
                }
                Ok(())
            },
        )
    }

    /// RankMe of each encoder over pretraining (`rankme.svg`).
    pub fn plot_rankme(&mut self, dir: &Path, rows: &[PretrainRow]) -> Result<()> {
        let max_step = (rows.iter())
            .flat_map(|r| r.rankme.iter().map(|(s, _)| *s as f64))
            .fold(1.0, f64::max);
        let max_rank = (rows.iter())
            .flat_map(|r| r.rankme.iter().map(|(_, v)| *v))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        let curves = (rows.iter().enumerate())
            .map(|(i, r)| Curve {
                name: r.method.clone(),
                points: r.rankme.iter().map(|&(s, v)| (s as f64, v)).collect(),
                colour: colour(i),
            })
            .collect();
        self.svg(
            dir,
            "rankme.svg",
            (640, 360),
            "RankMe over pretraining",
            |root| {
                draw_lines(
                    root,
                    &Lines {
                        caption: "RankMe of the representations over pretraining",
                        x_desc: "step",
                        y_desc: "RankMe",
                        x: 0.0..max_step,
                        y: 0.0..max_rank * 1.05,
                        curves,
                        references: vec![],
                        markers: true,
                        x_label: &plain,
                        legend: SeriesLabelPosition::UpperLeft,
                    },
                )
            },
        )
    }

    /// Validation score over training time: one thin line per seed and a thick line for the
    /// mean over seeds at each probe, one colour per method (`validation.svg`).
    pub fn plot_validation(&mut self, dir: &Path, rows: &[PretrainRow]) -> Result<()> {
        let max_t = (rows.iter())
            .flat_map(|r| r.validation.iter().map(|p| p.1))
            .fold(1e-3f64, f64::max);
        let max_v = (rows.iter())
            .flat_map(|r| r.validation.iter().map(|p| p.2))
            .filter(|v| v.is_finite())
            .fold(0.05f64, f64::max);
        let mut methods: Vec<String> = Vec::new();
        for r in rows {
            index_of(&mut methods, &r.method);
        }
        let mut curves = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let runs: Vec<&PretrainRow> = rows.iter().filter(|r| &r.method == m).collect();
            for r in &runs {
                curves.push(Curve {
                    name: format!("{m} seed {}", r.seed),
                    points: r.validation.iter().map(|p| (p.1, p.2)).collect(),
                    colour: colour(i).mix(0.35),
                });
            }
            // The mean over seeds at each probe index (same cadence in every run).
            let probes = runs.iter().map(|r| r.validation.len()).min().unwrap_or(0);
            let mean: Vec<(f64, f64)> = (0..probes)
                .map(|k| {
                    let n = runs.len() as f64;
                    let t = runs.iter().map(|r| r.validation[k].1).sum::<f64>() / n;
                    let v = runs.iter().map(|r| r.validation[k].2).sum::<f64>() / n;
                    (t, v)
                })
                .collect();
            curves.push(Curve {
                name: format!("{m} mean of {} seeds", runs.len()),
                points: mean,
                colour: colour(i),
            });
        }
        self.svg(
            dir,
            "validation.svg",
            (720, 420),
            "Validation score over training time, per seed (thin) and mean over seeds (bold)",
            |root| {
                draw_lines(
                    root,
                    &Lines {
                        caption: "validation kNN macro F1 over training time",
                        x_desc: "training time (s)",
                        y_desc: "val macro F1",
                        x: 0.0..max_t * 1.02,
                        y: 0.0..(max_v * 1.1).min(1.0),
                        curves,
                        references: Vec::new(),
                        markers: false,
                        x_label: &plain,
                        legend: SeriesLabelPosition::LowerRight,
                    },
                )
            },
        )
    }

    /// Macro F1 per dataset, one panel per mode of the pretrained encoders: bars grouped by
    /// dataset, one colour per method (the supervised and random-forest baselines in every
    /// panel), whiskers at the 95 % bootstrap interval over seeds x folds, and a legend
    /// (`f1.svg`).
    pub fn plot_f1(&mut self, dir: &Path, summaries: &[RunSummary]) -> Result<()> {
        let mut datasets: Vec<String> = Vec::new();
        for r in summaries {
            index_of(&mut datasets, &r.dataset);
        }
        let pretrained = |l: &str| {
            ["flowfm ", "diffusion ", "ssl_multitask "]
                .iter()
                .any(|p| l.starts_with(p))
        };
        let mut modes: Vec<String> = Vec::new();
        for r in summaries.iter().filter(|r| pretrained(&r.label)) {
            index_of(&mut modes, r.label.rsplit(' ').next().unwrap_or(""));
        }
        if modes.is_empty() {
            modes.push("all".into());
        }
        let mut methods: Vec<String> = Vec::new();
        for r in summaries {
            index_of(&mut methods, r.label.split(' ').next().unwrap_or(""));
        }
        let nd = datasets.len().max(1);
        let width = (170 * nd as u32).max(720);
        let height = 300 * modes.len() as u32;
        self.svg(
            dir,
            "f1.svg",
            (width, height),
            "Downstream macro F1 per dataset and method, one panel per mode (whiskers: 95 % bootstrap interval)",
            |root| {
                let panels = root.split_evenly((modes.len(), 1));
                for (panel, mode) in panels.iter().zip(&modes) {
                    let bars: Vec<(usize, usize, &RunSummary)> = summaries
                        .iter()
                        .filter(|r| !pretrained(&r.label) || r.label.ends_with(&format!(" {mode}")) || mode == "all")
                        .filter_map(|r| {
                            let d = datasets.iter().position(|x| *x == r.dataset)?;
                            let m = methods.iter().position(|x| r.label.starts_with(&format!("{x} ")))?;
                            Some((d, m, r))
                        })
                        .collect();
                    let shown: Vec<usize> = {
                        let mut v: Vec<usize> = bars.iter().map(|b| b.1).collect();
                        v.sort_unstable();
                        v.dedup();
                        v
                    };
                    let slot = 1.0 / (shown.len() as f64 + 1.0);
                    let mut chart = ChartBuilder::on(panel)
                        .caption(format!("macro F1, pretrained encoders: {mode}"), ("sans-serif", 15))
                        .margin(10)
                        .x_label_area_size(36)
                        .y_label_area_size(56)
                        .build_cartesian_2d(0f64..nd as f64, 0f64..1.05f64)?;
                    chart
                        .configure_mesh()
                        .disable_x_mesh()
                        .x_labels(nd * 2 + 1)
                        .x_label_formatter(&|v| {
                            let i = v.floor() as usize;
                            if (v - v.floor() - 0.5).abs() < 1e-6 {
                                datasets.get(i).cloned().unwrap_or_default()
                            } else {
                                String::new()
                            }
                        })
                        .y_desc("macro F1")
                        .axis_desc_style(("sans-serif", 13))
                        .draw()?;
                    for (pos, &m) in shown.iter().enumerate() {
                        let c = colour(m);
                        let mine: Vec<&(usize, usize, &RunSummary)> =
                            bars.iter().filter(|b| b.1 == m).collect();
                        let x0 = |d: usize| d as f64 + slot * (pos as f64 + 0.5);
                        chart
                            .draw_series(mine.iter().map(|&&(d, _, r)| {
                                Rectangle::new(
                                    [(x0(d), 0.0), (x0(d) + slot, r.macro_f1.mean.clamp(0.0, 1.0))],
                                    c.filled(),
                                )
                            }))?
                            .label(mine.first().map(|b| b.2.label.clone()).unwrap_or_default())
                            .legend(move |(x, y)| {
                                Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
                            });
                        chart.draw_series(mine.iter().map(|&&(d, _, r)| {
                            let x = x0(d) + slot / 2.0;
                            let iv = &r.macro_f1_interval;
                            PathElement::new(
                                vec![(x, iv.lower.clamp(0.0, 1.0)), (x, iv.upper.clamp(0.0, 1.0))],
                                BLACK,
                            )
                        }))?;
                    }
                    chart
                        .configure_series_labels()
                        .position(SeriesLabelPosition::UpperRight)
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK)
                        .label_font(("sans-serif", 11))
                        .draw()?;
                }
                Ok(())
            },
        )
    }

    /// Frechet distance (encoder features) against network evaluations per window (log axis),
    /// flow vs diffusion, with the real-vs-real floor at the same sizes and the upper end of its
    /// interval (`nfe_quality.svg`).
    pub fn plot_nfe_quality(&mut self, dir: &Path, study: &GenerationStudy) -> Result<()> {
        let finite: Vec<&StudyRow> = (study.rows.iter())
            .filter(|r| r.quality.frechet.estimate.is_finite() && r.nfe > 0)
            .collect();
        let max_nfe = finite.iter().map(|r| r.nfe).max().unwrap_or(1).max(2) as f64;
        let floor = study.floor.frechet.estimate;
        let hi = (finite.iter().map(|r| r.quality.frechet.upper))
            .chain(
                [floor, study.floor.frechet.upper]
                    .into_iter()
                    .filter(|v| v.is_finite()),
            )
            .fold(1e-6f64, f64::max);
        let curves = (["flowfm", "diffusion"].iter().enumerate())
            .map(|(i, method)| {
                let mut points: Vec<(f64, f64)> = (finite.iter())
                    .filter(|r| r.method == *method)
                    .map(|r| ((r.nfe as f64).log10(), r.quality.frechet.estimate))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Curve {
                    name: method.to_string(),
                    points,
                    colour: colour(i),
                }
            })
            .collect();
        let references = if floor.is_finite() {
            vec![
                ("real vs real (floor)".to_string(), floor),
                (
                    "floor, upper end of its interval".to_string(),
                    study.floor.frechet.upper,
                ),
            ]
        } else {
            vec![]
        };
        self.svg(
            dir,
            "nfe_quality.svg",
            (680, 400),
            "Frechet distance vs NFE, flow vs diffusion",
            |root| {
                draw_lines(
                    root,
                    &Lines {
                        caption: "generation quality vs network evaluations",
                        x_desc: "NFE per window (log scale)",
                        y_desc: "Frechet distance",
                        x: -0.1..(max_nfe * 1.5).log10(),
                        y: 0.0..hi * 1.1,
                        curves,
                        references,
                        markers: true,
                        x_label: &|v| format!("{:.0}", 10f64.powf(*v)),
                        legend: SeriesLabelPosition::UpperRight,
                    },
                )
            },
        )
    }

    /// A real conditioning window next to the windows generated from its representation by the
    /// matched (or best) flow setting and by DDPM (`examples.svg`): one panel per window, one
    /// line per channel. The encoder is shift-invariant, so the generated windows need not be
    /// in phase with the real one.
    pub fn plot_examples(&mut self, dir: &Path, study: &GenerationStudy) -> Result<()> {
        let pick = |method: &str, prefer: Option<&str>| -> Option<&ExampleWindow> {
            let rows: Vec<(&StudyRow, &ExampleWindow)> = (study.rows.iter())
                .zip(study.examples.iter().skip(1))
                .filter(|(r, _)| r.method == method)
                .collect();
            let fd = |r: &StudyRow| r.quality.frechet.estimate;
            prefer
                .and_then(|p| rows.iter().find(|(r, _)| r.sampler == p))
                .or_else(|| {
                    (rows.iter())
                        .filter(|(r, _)| fd(r).is_finite())
                        .min_by(|a, b| fd(a.0).total_cmp(&fd(b.0)))
                })
                .map(|(_, e)| *e)
        };
        let flow_pref = study.speedup.as_ref().map(|s| s.flow_sampler.as_str());
        let ddpm = (study.rows.iter())
            .find(|r| r.method == "diffusion" && r.sampler.starts_with("ddpm"))
            .map(|r| r.sampler.as_str());
        let mut panels: Vec<(String, &ExampleWindow)> = Vec::new();
        if let Some(real) = study.examples.first() {
            panels.push(("real window".into(), real));
        }
        if let Some(e) = pick("flowfm", flow_pref) {
            panels.push((format!("flowfm {} (from its representation)", e.sampler), e));
        }
        if let Some(e) = pick("diffusion", ddpm) {
            panels.push((
                format!("diffusion {} (from its representation)", e.sampler),
                e,
            ));
        }
        let size = (800, 190 * panels.len().max(1) as u32);
        self.svg(
            dir,
            "examples.svg",
            size,
            "A real window and windows generated from its representation (one line per axis)",
            |root| {
                let areas = root.split_evenly((panels.len().max(1), 1));
                for (area, (title, e)) in areas.iter().zip(&panels) {
                    let c = e.channels.max(1);
                    let len = e.values.len() / c;
                    // Each panel has its own range (a diverged sample would flatten the others);
                    // the caption gives it so amplitudes stay comparable.
                    let (lo, hi) =
                        finite_range(e.values.iter().map(|&v| f64::from(v)), (-1.0, 1.0));
                    let caption = format!("{title}: range {lo:.2} to {hi:.2} g");
                    let curves = (0..c)
                        .map(|ch| Curve {
                            name: format!("axis {ch}"),
                            points: (e.values[ch * len..(ch + 1) * len].iter())
                                .enumerate()
                                .map(|(i, &v)| (i as f64, f64::from(v)))
                                .collect(),
                            colour: colour(ch),
                        })
                        .collect();
                    draw_lines(
                        area,
                        &Lines {
                            caption: &caption,
                            x_desc: "sample",
                            y_desc: "g",
                            x: 0.0..len.max(2) as f64,
                            y: lo..hi,
                            curves,
                            references: vec![],
                            markers: false,
                            x_label: &plain,
                            legend: SeriesLabelPosition::UpperRight,
                        },
                    )?;
                }
                Ok(())
            },
        )
    }
}

/// The position of `name` in `names`, appended if new.
fn index_of(names: &mut Vec<String>, name: &str) -> usize {
    match names.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            names.push(name.to_string());
            names.len() - 1
        }
    }
}
