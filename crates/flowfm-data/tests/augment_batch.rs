//! Batching: coverage, shapes, drop_last, and determinism under different thread counts and
//! prefetch depths; batches from an HDF5 store equal those from memory.

use std::sync::Arc;

use candle_core::{DType, Device};
use flowfm_core::SeededRng;
use flowfm_data::{Augmentation, BatchConfig, Batcher, Compose, WindowSet, WindowStore};

fn windows(n: usize) -> WindowSet {
    let mut rng = SeededRng::new(1);
    let mut w = WindowSet::empty(
        "synthetic",
        30.0,
        vec!["x".into(), "y".into(), "z".into()],
        60,
        vec!["a".into(), "b".into()],
    );
    w.x = rng
        .normal_vec(n * 180)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    w.y = (0..n).map(|i| [0, 1, -1][i % 3]).collect();
    w.subject = (0..n).map(|i| (i / 10) as i64).collect();
    w.start_time_s = vec![0.0; n];
    w
}

fn aug() -> Compose {
    Compose::new(vec![
        (
            Augmentation::Rotation {
                max_angle_rad: None,
            },
            0.8,
        ),
        (Augmentation::Jitter { sigma: 0.05 }, 0.5),
        (
            Augmentation::TimeWarp {
                sigma: 0.2,
                knots: 4,
            },
            0.5,
        ),
    ])
    .unwrap()
}

fn cfg(batch_size: usize, drop_last: bool, prefetch: usize) -> BatchConfig {
    BatchConfig {
        batch_size,
        shuffle: true,
        drop_last,
        prefetch,
        seed: 42,
    }
}

/// Every batch of an epoch as (indices, flattened x, y, subject, applied).
type Flat = (Vec<usize>, Vec<f32>, Vec<i64>, Vec<i64>, Vec<Vec<bool>>);

fn collect<S: flowfm_data::WindowSource + 'static>(b: &Batcher<S>, epoch: u64) -> Vec<Flat> {
    b.epoch(epoch)
        .map(|r| {
            let r = r.unwrap();
            (
                r.indices,
                r.x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                r.y.to_vec1::<i64>().unwrap(),
                r.subject.to_vec1::<i64>().unwrap(),
                r.applied,
            )
        })
        .collect()
}

#[test]
fn an_epoch_covers_every_index_once_with_shaped_tensors() {
    let ws = Arc::new(windows(103));
    let idx: Vec<usize> = (0..103).filter(|i| i % 5 != 0).collect(); // 82 windows
    let b = Batcher::new(
        ws.clone(),
        idx.clone(),
        None,
        cfg(16, false, 2),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(b.num_batches(), 6);
    let mut seen = Vec::new();
    for (k, batch) in b.epoch(0).enumerate() {
        let batch = batch.unwrap();
        let n = if k < 5 { 16 } else { 82 - 80 };
        assert_eq!(batch.x.dims(), &[n, 3, 60]);
        assert_eq!(batch.x.dtype(), DType::F32);
        assert_eq!(batch.y.dims(), &[n]);
        // Without augmentation the tensors are the source windows.
        let x = batch.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (j, &i) in batch.indices.iter().enumerate() {
            assert_eq!(&x[j * 180..(j + 1) * 180], ws.window(i));
        }
        assert_eq!(
            batch.y.to_vec1::<i64>().unwrap(),
            batch.indices.iter().map(|&i| ws.y[i]).collect::<Vec<_>>()
        );
        assert_eq!(
            batch.subject.to_vec1::<i64>().unwrap(),
            batch
                .indices
                .iter()
                .map(|&i| ws.subject[i])
                .collect::<Vec<_>>()
        );
        seen.extend(batch.indices);
    }
    assert_ne!(seen, idx, "shuffled");
    seen.sort_unstable();
    assert_eq!(seen, idx);
}

#[test]
fn drop_last_drops_the_short_batch() {
    let ws = Arc::new(windows(50));
    let b = Batcher::new(ws, (0..50).collect(), None, cfg(16, true, 1), Device::Cpu).unwrap();
    assert_eq!(b.num_batches(), 3);
    let sizes: Vec<usize> = collect(&b, 3).iter().map(|f| f.0.len()).collect();
    assert_eq!(sizes, vec![16, 16, 16]);
}

#[test]
fn same_seed_gives_the_same_batches_whatever_the_threads_and_prefetch() {
    let ws = Arc::new(windows(90));
    let make = |prefetch| {
        Batcher::new(
            ws.clone(),
            (0..90).collect(),
            Some(aug()),
            cfg(8, false, prefetch),
            Device::Cpu,
        )
        .unwrap()
    };
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let a = one_thread.install(|| collect(&make(1), 2));
    let four_threads = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let b = four_threads.install(|| collect(&make(5), 2));
    assert_eq!(a, b);
    // The synchronous path builds the same batches.
    let batcher = make(2);
    let c = batcher.batch(2, 3).unwrap();
    assert_eq!(c.indices, a[3].0);
    assert_eq!(c.x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a[3].1);
    // Another epoch: another order and other augmentations.
    let d = collect(&make(2), 3);
    assert_ne!(a[0].0, d[0].0);
    assert!(
        a[0].4.iter().any(|f| f.iter().any(|&x| x)),
        "augmentations were applied"
    );
}

#[test]
fn augmentation_of_a_window_does_not_depend_on_its_batch() {
    // The same window gets the same augmentation in an epoch whatever the batch size.
    let ws = Arc::new(windows(40));
    let small = Batcher::new(
        ws.clone(),
        (0..40).collect(),
        Some(aug()),
        cfg(3, false, 2),
        Device::Cpu,
    )
    .unwrap();
    let large = Batcher::new(
        ws,
        (0..40).collect(),
        Some(aug()),
        cfg(40, false, 2),
        Device::Cpu,
    )
    .unwrap();
    let per_window = |flat: Vec<Flat>| {
        let mut m = std::collections::BTreeMap::new();
        for (idx, x, ..) in flat {
            for (j, i) in idx.into_iter().enumerate() {
                m.insert(i, x[j * 180..(j + 1) * 180].to_vec());
            }
        }
        m
    };
    assert_eq!(
        per_window(collect(&small, 1)),
        per_window(collect(&large, 1))
    );
}

#[test]
fn batches_from_an_hdf5_store_equal_batches_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.h5");
    let ws = windows(45);
    flowfm_data::write_store(&path, &ws, 1, "fp", "").unwrap();
    let store = Arc::new(WindowStore::open(&path).unwrap());
    let idx: Vec<usize> = (0..45).rev().collect();
    let mem = Batcher::new(
        Arc::new(ws),
        idx.clone(),
        Some(aug()),
        cfg(7, false, 2),
        Device::Cpu,
    )
    .unwrap();
    let disk = Batcher::new(store, idx, Some(aug()), cfg(7, false, 2), Device::Cpu).unwrap();
    assert_eq!(collect(&mem, 0), collect(&disk, 0));
}

#[test]
fn stopping_early_and_bad_settings_are_handled() {
    let ws = Arc::new(windows(100));
    let b = Batcher::new(
        ws.clone(),
        (0..100).collect(),
        None,
        cfg(4, false, 1),
        Device::Cpu,
    )
    .unwrap();
    // Dropping the iterator after one batch stops the producer (the test would hang otherwise).
    let first = b.epoch(0).next().unwrap().unwrap();
    assert_eq!(first.indices.len(), 4);
    let unshuffled = BatchConfig {
        shuffle: false,
        ..cfg(4, false, 1)
    };
    let b = Batcher::new(ws.clone(), vec![5, 3, 9], None, unshuffled, Device::Cpu).unwrap();
    assert_eq!(b.order(7), vec![5, 3, 9]);
    assert!(Batcher::new(ws.clone(), vec![100], None, cfg(4, false, 1), Device::Cpu).is_err());
    assert!(Batcher::new(ws.clone(), vec![0], None, cfg(0, false, 1), Device::Cpu).is_err());
    assert!(Batcher::new(ws.clone(), vec![0], None, cfg(4, false, 0), Device::Cpu).is_err());
    // Segment permutation that cannot fit a 60-sample window is refused up front.
    let too_long = Compose::new(vec![(
        Augmentation::SegmentPermutation {
            segments: 8,
            min_segment_len: 10,
        },
        1.0,
    )])
    .unwrap();
    assert!(Batcher::new(ws, vec![0], Some(too_long), cfg(4, false, 1), Device::Cpu).is_err());
}
