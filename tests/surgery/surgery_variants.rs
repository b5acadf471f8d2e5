//! The behaviour-specific variants of selection and edit (joint probe slices, norm-aware
//! ranking, activation scores, α scales) on a tiny model, against direct computations.

use std::collections::BTreeMap;

use scalpel::formats::tiny::TinySpec;
use scalpel::probe::{Direction, Probe};
use scalpel::surgery::activation::activation_scores;
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::{
    plan_edit, select, select_with, Count, EditOptions, Matrix, ModelFile, Ranking, Scale,
    SelectOptions,
};

fn tiny_model(dir: &std::path::Path) -> (ModelFile, TinySpec) {
    let spec = TinySpec::default();
    let p = crate::common::tiny_gguf(dir, &spec, 11);
    (ModelFile::open(&p).unwrap(), spec)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
}

fn gate_rows(model: &ModelFile, block: usize) -> Vec<Vec<f32>> {
    let t = &model.matrix_tensors(Matrix::Gate).unwrap()[block];
    (0..t.n_rows)
        .map(|r| {
            let mut g = vec![0f32; t.row_len];
            model.read_row(t, r, &mut g).unwrap();
            g
        })
        .collect()
}

fn opts(k: usize) -> SelectOptions {
    SelectOptions {
        count: Count::Rows(k),
        ..SelectOptions::default()
    }
}

#[test]
fn joint_probe_ranks_and_edits_each_block_with_its_slice() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = tiny_model(dir.path());
    let d = spec.d;
    let slices: Vec<Vec<f32>> = (0..spec.blocks)
        .map(|b| random_direction(d, 1.0 + b as f64, 20 + b as u64))
        .collect();
    let w1: Vec<f32> = slices.concat();
    let w0 = vec![0f32; w1.len()];
    let blocks: Vec<String> = (0..spec.blocks).map(|b| b.to_string()).collect();
    let meta = BTreeMap::from([("blocks".to_string(), blocks.join(","))]);
    let probe = Probe::new([w0, w1].concat(), [0.0, 0.0], meta).unwrap();
    assert_eq!(probe.width(), d);
    probe.check_width(d).unwrap();
    assert!(probe.check_width(d + 1).is_err());

    let k = 5;
    let sel = select(&model, &probe, &opts(k)).unwrap();
    // Direct: every row's cosine with its own block's slice, k lowest overall.
    let mut all: Vec<(f32, usize, usize)> = Vec::new();
    for (b, slice) in slices.iter().enumerate() {
        for (r, row) in gate_rows(&model, b).iter().enumerate() {
            all.push((cos(row, slice), b, r));
        }
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut want: Vec<(usize, usize)> = all[..k].iter().map(|x| (x.1, x.2)).collect();
    want.sort();
    let got: Vec<(usize, usize)> = sel.rows.iter().map(|r| (r.block, r.row)).collect();
    assert_eq!(got, want);

    let plan = plan_edit(
        &sel,
        &probe,
        &EditOptions {
            alpha: 2.0,
            ..Default::default()
        },
    )
    .unwrap();
    for (e, r) in plan.rows.iter().zip(&sel.rows) {
        let want: Vec<f32> = slices[r.block].iter().map(|x| 2.0 * x).collect();
        assert_eq!(&e.delta[..], &want[..], "block {} row {}", r.block, r.row);
    }
    // A joint probe over block 1 only leaves block 0 ineligible.
    let only1 = Probe::new(
        [vec![0f32; d], slices[1].clone()].concat(),
        [0.0, 0.0],
        BTreeMap::from([("blocks".to_string(), "1".to_string())]),
    )
    .unwrap();
    let sel = select(&model, &only1, &opts(3)).unwrap();
    assert!(sel.rows.iter().all(|r| r.block == 1));
}

#[test]
fn norm_aware_ranking_compares_through_the_gains_and_maps_the_edit_back() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = tiny_model(dir.path());
    let d = spec.d;
    let w1 = random_direction(d, 1.0, 5);
    let probe_at = |point: &str| {
        Probe::new(
            [vec![0f32; d], w1.clone()].concat(),
            [0.0, 0.0],
            BTreeMap::from([("point".to_string(), point.to_string())]),
        )
        .unwrap()
    };
    let g_final = model.norm_gain(None).unwrap();
    let o = SelectOptions {
        norm_aware: true,
        ..opts(4)
    };
    let sel = select(&model, &probe_at("final"), &o).unwrap();
    let u: Vec<f32> = g_final.iter().zip(&w1).map(|(g, w)| g * w).collect();
    for b in 0..spec.blocks {
        let g = model.norm_gain(Some(b)).unwrap();
        // Effective rows g ⊙ r against g_final ⊙ w.
        for r in sel.rows.iter().filter(|r| r.block == b) {
            let row = &gate_rows(&model, b)[r.row];
            let eff: Vec<f32> = row.iter().zip(&g).map(|(x, g)| x * g).collect();
            assert!((cos(&eff, &u) - r.cosine).abs() < 1e-5);
        }
        // The edit moves the effective row along u: g ⊙ v = u where the gain is not floored.
        let v = &sel.vectors[&b];
        let rms = (g.iter().map(|x| x * x).sum::<f32>() / d as f32).sqrt();
        for j in 0..d {
            if g[j].abs() >= 0.05 * rms {
                assert!((g[j] * v[j] - u[j]).abs() < 1e-4 * (1.0 + u[j].abs()));
            }
        }
    }
    // Read at block 1's own MLP input, block 1's edit is the paper's (w itself).
    let sel = select(&model, &probe_at("mlp:1"), &o).unwrap();
    let v = &sel.vectors[&1];
    let g1 = model.norm_gain(Some(1)).unwrap();
    let rms = (g1.iter().map(|x| x * x).sum::<f32>() / d as f32).sqrt();
    for j in 0..d {
        if g1[j].abs() >= 0.05 * rms {
            assert!((v[j] - w1[j]).abs() < 1e-5);
        }
    }
}

#[test]
fn scales_set_the_size_of_every_row_change() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = tiny_model(dir.path());
    let d = spec.d;
    let w1 = random_direction(d, 3.0, 6);
    let probe = Probe::new([vec![0f32; d], w1].concat(), [0.0, 0.0], BTreeMap::new()).unwrap();
    let sel = select(&model, &probe, &opts(6)).unwrap();
    let plan = |scale| {
        plan_edit(
            &sel,
            &probe,
            &EditOptions {
                alpha: 0.5,
                scale,
                ..Default::default()
            },
        )
        .unwrap()
    };
    for (e, r) in plan(Scale::Absolute).rows.iter().zip(&sel.rows) {
        assert!((norm(&e.delta) - 1.5).abs() < 1e-4, "{}", r.row);
    }
    for e in &plan(Scale::Unit).rows {
        assert!((norm(&e.delta) - 0.5).abs() < 1e-5);
    }
    for (e, r) in plan(Scale::RowNorm).rows.iter().zip(&sel.rows) {
        let row = &gate_rows(&model, r.block)[r.row];
        assert!((norm(&e.delta) - 0.5 * norm(row)).abs() < 1e-4);
    }
    for (e, r) in plan(Scale::MedianRowNorm).rows.iter().zip(&sel.rows) {
        let mut norms: Vec<f32> = gate_rows(&model, r.block).iter().map(|x| norm(x)).collect();
        norms.sort_by(f32::total_cmp);
        assert!((norm(&e.delta) - 0.5 * norms[norms.len() / 2]).abs() < 1e-4);
    }
}

#[test]
fn activation_scores_match_a_direct_computation_and_rank_lowest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = tiny_model(dir.path());
    let (d, n) = (spec.d, 40);
    // Pooled MLP inputs: class 1 shifted along a known vector in block 0.
    let shift = random_direction(d, 2.0, 8);
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let inputs: Vec<Vec<f32>> = (0..spec.blocks)
        .map(|b| {
            (0..n)
                .flat_map(|i| {
                    let noise = random_direction(d, 1.0, 100 * b as u64 + i as u64);
                    let s = if b == 0 && labels[i] == 1 { 1.0 } else { 0.0 };
                    noise
                        .iter()
                        .zip(&shift)
                        .map(|(x, v)| x + s * v)
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    let xs: Vec<&[f32]> = inputs.iter().map(|v| &v[..]).collect();
    let scores = activation_scores(&model, Matrix::Gate, &xs, &labels).unwrap();
    let rows = gate_rows(&model, 0);
    for (j, row) in rows.iter().enumerate().take(8) {
        let z: Vec<f64> = (0..n)
            .map(|i| {
                row.iter()
                    .zip(&inputs[0][i * d..(i + 1) * d])
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum()
            })
            .collect();
        let mean = |c: u8| {
            let v: Vec<f64> = (0..n).filter(|&i| labels[i] == c).map(|i| z[i]).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (m0, m1) = (mean(0), mean(1));
        let ss: f64 = (0..n)
            .map(|i| z[i] - if labels[i] == 1 { m1 } else { m0 })
            .map(|e| e * e)
            .sum();
        let want = (m1 - m0) / (ss / (n - 2) as f64).sqrt();
        assert!(
            (scores[0][j] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()),
            "row {j}: {} vs {want}",
            scores[0][j]
        );
    }
    let probe = Probe::new(
        [vec![0f32; d], random_direction(d, 1.0, 9)].concat(),
        [0.0, 0.0],
        BTreeMap::new(),
    )
    .unwrap();
    let o = SelectOptions {
        ranking: Ranking::Activation,
        direction: Direction::Undesirable,
        ..opts(3)
    };
    assert!(select(&model, &probe, &o).is_err(), "needs scores");
    let sel = select_with(&model, &probe, &o, Some(&scores)).unwrap();
    let mut flat: Vec<(f32, usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(b, s)| s.iter().enumerate().map(move |(r, &v)| (v, b, r)))
        .collect();
    flat.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut want: Vec<(usize, usize)> = flat[..3].iter().map(|x| (x.1, x.2)).collect();
    want.sort();
    let got: Vec<(usize, usize)> = sel.rows.iter().map(|r| (r.block, r.row)).collect();
    assert_eq!(got, want);
    // Wrong shapes are errors, not panics.
    assert!(activation_scores(&model, Matrix::Gate, &xs[..1], &labels).is_err());
    assert!(activation_scores(&model, Matrix::Gate, &xs, &labels[..n - 1]).is_err());
}
