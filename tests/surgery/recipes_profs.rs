//! ProFS on tiny models, against direct computations: the toxic subspace it finds from
//! planted residuals, the projection of `ffn_down`, the blocks it edits, its control, and that
//! its edit's patch reverts bit-exactly. The other recipes are in `recipes.rs`, whose helpers
//! these tests share.

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::tiny::{self, TinySpec};
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::recipes::{plan_recipe, profs, Control, Measured, Recipe, RecipeOptions};
use scalpel::surgery::{Matrix, ModelFile};

use super::recipes::{opts, probe, rows, tiny_gguf, write_and_revert};

#[test]
fn profs_finds_a_planted_subspace_and_projects_it_out_of_ffn_down() {
    let d = 16;
    let n = 40;
    // Toxic = clean + a·e3 + b·e7 (+ a shared clean mean along e0): the centred differences
    // span exactly {e3, e7}.
    let mut x1 = Vec::new();
    let mut x0 = Vec::new();
    for i in 0..n {
        let clean = random_direction(d, 1.0, 100 + i as u64);
        let mut c: Vec<f32> = clean.clone();
        c[0] += 5.0;
        // Clean states have no e3 / e7 part, so the clean mean's direction μ̂ that centring
        // removes is orthogonal to the planted subspace.
        c[3] = 0.0;
        c[7] = 0.0;
        let mut t = c.clone();
        t[3] += 2.0 + (i % 5) as f32;
        t[7] += 1.0 - (i % 3) as f32;
        x0.extend_from_slice(&c);
        x1.extend_from_slice(&t);
    }
    let u = profs::subspace(&x1, &x0, d, 2).unwrap();
    // The projector onto span(u) is the projector onto {e3, e7}.
    for i in 0..d {
        for j in 0..d {
            let p: f64 = u.iter().map(|v| v[i] * v[j]).sum();
            let want = if i == j && (i == 3 || i == 7) {
                1.0
            } else {
                0.0
            };
            assert!((p - want).abs() < 1e-3, "P[{i}][{j}] = {p}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let (src, spec) = tiny_gguf(dir.path());
    let model = ModelFile::open(&src).unwrap();
    let basis = profs::random_subspace(spec.d, 2, 9).unwrap();
    let (plan, report) = {
        let p = profs::projection_plan(&model, &[(1, basis.clone())], 1.0, serde_json::Value::Null)
            .unwrap();
        let n = p.rows.len();
        (p, n)
    };
    assert_eq!(report, spec.d, "every row of ffn_down changes");
    let edited = write_and_revert(&src, &plan, dir.path());
    // Direct: W' = W − UUᵀW, so UᵀW' = 0.
    let w = rows(&model, Matrix::Down, 1);
    let w2 = rows(&edited, Matrix::Down, 1);
    for col in 0..spec.d_ff {
        for v in &basis {
            let before: f64 = (0..spec.d).map(|r| v[r] * w[r][col] as f64).sum();
            let after: f64 = (0..spec.d).map(|r| v[r] * w2[r][col] as f64).sum();
            assert!(after.abs() < 1e-5 * (1.0 + before.abs()), "{after}");
        }
    }
    // Block 0's ffn_down is untouched.
    assert_eq!(
        rows(&model, Matrix::Down, 0),
        rows(&edited, Matrix::Down, 0)
    );
}

/// The number of columns of `m` (rows × cols) that Gram–Schmidt finds independent: a column
/// counts when its residual after the earlier ones is above `tol`.
fn column_rank(m: &[Vec<f64>], tol: f64) -> usize {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for j in 0..m[0].len() {
        let mut v: Vec<f64> = m.iter().map(|r| r[j]).collect();
        for q in &basis {
            let c: f64 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(q).for_each(|(a, b)| *a -= c * b);
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > tol {
            basis.push(v.iter().map(|x| x / n).collect());
        }
    }
    basis.len()
}

#[test]
fn profs_recipe_edits_the_upper_half_from_measured_residuals() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec {
        blocks: 4,
        ..TinySpec::default()
    };
    let src = dir.path().join("m.gguf");
    tiny::write_gguf(&src, &spec, 3, GgmlType::F32).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let n = 12;
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let res: Vec<Option<Vec<f32>>> = (0..spec.blocks)
        .map(|b| {
            Some(
                (0..n)
                    .flat_map(|i| random_direction(spec.d, 1.0, (b * 100 + i) as u64))
                    .collect(),
            )
        })
        .collect();
    let m = Measured {
        labels: &labels,
        neurons: None,
        residuals: Some(&res[..]),
    };
    let (plan, report) =
        plan_recipe(&model, &probe(spec.d), &m, &opts(Recipe::Profs, 1.0, 1)).unwrap();
    assert_eq!(report.neurons, 0);
    let names: std::collections::BTreeSet<&str> =
        plan.rows.iter().map(|r| r.tensor.as_str()).collect();
    assert_eq!(
        names,
        ["blk.2.ffn_down.weight", "blk.3.ffn_down.weight"]
            .into_iter()
            .collect()
    );
    write_and_revert(&src, &plan, dir.path());
    // The random-subspace control changes the same rows by a different projection; there
    // is no random-neuron control for an edit of every row.
    let ctl = RecipeOptions {
        control: Control::RandomDirection(4),
        ..opts(Recipe::Profs, 1.0, 1)
    };
    let (cplan, _) = plan_recipe(&model, &probe(spec.d), &m, &ctl).unwrap();
    assert_eq!(cplan.rows.len(), plan.rows.len());
    assert_ne!(cplan.rows[0].delta, plan.rows[0].delta);
    // Per block, the control's change has the recipe's Frobenius norm, and lies in a rank-k
    // subspace of the residual (ΔW = −g·UUᵀW, k = 2 by default): its columns span 2
    // dimensions, found by Gram–Schmidt with a relative tolerance.
    for name in ["blk.2.ffn_down.weight", "blk.3.ffn_down.weight"] {
        let delta = |p: &scalpel::surgery::EditPlan| -> Vec<Vec<f64>> {
            let mut r: Vec<_> = p.rows.iter().filter(|r| r.tensor == name).collect();
            r.sort_by_key(|r| r.row);
            r.iter()
                .map(|r| r.delta.iter().map(|&x| x as f64).collect())
                .collect()
        };
        let (a, b) = (delta(&plan), delta(&cplan));
        let frob = |m: &[Vec<f64>]| m.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (frob(&a) - frob(&b)).abs() <= 1e-5 * frob(&a),
            "{name}: |ΔW| {} vs control {}",
            frob(&a),
            frob(&b)
        );
        assert_eq!(column_rank(&b, 1e-4 * frob(&b)), 2, "{name}");
        assert_eq!(column_rank(&a, 1e-4 * frob(&a)), 2, "{name}");
    }
    let bad = RecipeOptions {
        control: Control::RandomNeurons(4),
        ..opts(Recipe::Profs, 1.0, 1)
    };
    assert!(plan_recipe(&model, &probe(spec.d), &m, &bad).is_err());
    assert!(plan_recipe(
        &model,
        &probe(spec.d),
        &Measured::default(),
        &opts(Recipe::Profs, 1.0, 1)
    )
    .is_err());
}
