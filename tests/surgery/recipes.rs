//! The output-side recipes (value vectors, AurA, ProFS, distributed) on tiny models, against
//! direct computations: which neurons each picks, the exact change it makes, the controls,
//! and that every edit's patch reverts bit-exactly (GGUF and HF).

use std::collections::BTreeMap;
use std::path::Path;

use scalpel::formats::ggml::GgmlType;
use scalpel::formats::patch::{sha256_hex, Patch};
use scalpel::formats::tiny::{self, HfDtype, TinySpec};
use scalpel::probe::Probe;
use scalpel::runtime::{LoadOptions, Logits, Model, Point, Precision};
use scalpel::surgery::edit::random_direction;
use scalpel::surgery::recipes::{
    aura, neurons::pooled_activations, plan_recipe, random_neurons, shuffle_within_blocks, value,
    Control, Measured, Neuron, Recipe, RecipeOptions,
};
use scalpel::surgery::{write_edited, Count, EditPlan, Matrix, ModelFile, WriteOptions};

pub(crate) fn tiny_gguf(dir: &Path) -> (std::path::PathBuf, TinySpec) {
    let spec = TinySpec::default();
    let p = dir.join("m.gguf");
    tiny::write_gguf(&p, &spec, 11, GgmlType::F32).unwrap();
    (p, spec)
}

/// A final-norm probe with a seeded direction.
pub(crate) fn probe(d: usize) -> Probe {
    let w1 = random_direction(d, 2.0, 7);
    let meta = BTreeMap::from([("point".to_string(), "final".to_string())]);
    Probe::new([vec![0f32; d], w1].concat(), [0.0, 0.0], meta).unwrap()
}

pub(crate) fn rows(model: &ModelFile, m: Matrix, block: usize) -> Vec<Vec<f32>> {
    let t = &model.matrix_tensors(m).unwrap()[block];
    (0..t.n_rows)
        .map(|r| {
            let mut g = vec![0f32; t.row_len];
            model.read_row(t, r, &mut g).unwrap();
            g
        })
        .collect()
}

/// The RMSNorm gain the final probe reads (`None`) or block b's MLP reads.
fn gain(model: &ModelFile, block: Option<usize>) -> Vec<f32> {
    model.norm_gain(block).unwrap()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

pub(crate) fn opts(recipe: Recipe, strength: f32, k: usize) -> RecipeOptions {
    RecipeOptions {
        recipe,
        strength,
        count: Count::Rows(k),
        ..RecipeOptions::default()
    }
}

/// Writes `plan` (F32 kept) with a patch, checks that only the planned rows changed, by
/// exactly their delta up to f32 rounding, and that the patch reverts bit-exactly; returns
/// the edited file.
pub(crate) fn write_and_revert(src: &Path, plan: &EditPlan, dir: &Path) -> ModelFile {
    let model = ModelFile::open(src).unwrap();
    let out = dir.join("e.gguf");
    let pfile = dir.join("e.patch");
    write_edited(
        &model,
        plan,
        &out,
        &WriteOptions {
            keep_precision: false,
            force: true,
            patch: Some(pfile.clone()),
        },
    )
    .unwrap();
    let edited = ModelFile::open(&out).unwrap();
    let by = plan.by_tensor().unwrap();
    for (name, changes) in &by {
        let (ta, tb) = (model.matrix(name).unwrap(), edited.matrix(name).unwrap());
        let changed: BTreeMap<usize, &[f32]> = changes.iter().copied().collect();
        let (mut x, mut y) = (vec![0f32; ta.row_len], vec![0f32; ta.row_len]);
        for r in 0..ta.n_rows {
            model.read_row(&ta, r, &mut x).unwrap();
            edited.read_row(&tb, r, &mut y).unwrap();
            match changed.get(&r) {
                None => assert_eq!(x, y, "{name} row {r} must be untouched"),
                Some(d) => {
                    let want: Vec<f32> = x.iter().zip(d.iter()).map(|(a, b)| a + b).collect();
                    assert_eq!(y, want, "{name} row {r}");
                }
            }
        }
    }
    let rev = dir.join("r.gguf");
    Patch::load(&pfile)
        .unwrap()
        .write(&out, &rev, true, false)
        .unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&rev).unwrap()),
        sha256_hex(&std::fs::read(src).unwrap())
    );
    edited
}

/// Direct: the residual-space direction g_f ⊙ w and each down column's cosine with it.
fn direct_value_cosines(model: &ModelFile, p: &Probe, blocks: usize) -> Vec<(f64, Neuron)> {
    let g = gain(model, None);
    let u: Vec<f32> = g.iter().zip(p.row(1)).map(|(a, b)| a * b).collect();
    let mut all = Vec::new();
    for b in 0..blocks {
        let down = rows(model, Matrix::Down, b); // d rows of n_ff
        for i in 0..down[0].len() {
            let col: Vec<f32> = down.iter().map(|r| r[i]).collect();
            let dot: f64 = col.iter().zip(&u).map(|(a, b)| *a as f64 * *b as f64).sum();
            all.push((dot / (norm(&col) * norm(&u)), Neuron { block: b, row: i }));
        }
    }
    all
}

#[test]
fn value_damp_picks_the_most_aligned_value_vectors_and_scales_their_up_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec) = tiny_gguf(dir.path());
    let model = ModelFile::open(&src).unwrap();
    let p = probe(spec.d);
    let k = 7;
    let mut all = direct_value_cosines(&model, &p, spec.blocks);
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut want: Vec<Neuron> = all[..k].iter().map(|x| x.1).collect();
    want.sort();

    let (plan, report) = plan_recipe(
        &model,
        &p,
        &Measured::default(),
        &opts(Recipe::ValueDamp, 0.75, k),
    )
    .unwrap();
    assert_eq!(report.neurons, k);
    let ups = model.matrix_tensors(Matrix::Up).unwrap();
    let got: Vec<Neuron> = plan
        .rows
        .iter()
        .map(|r| Neuron {
            block: ups.iter().position(|t| t.name == r.tensor).unwrap(),
            row: r.row,
        })
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
    // The exact change: up row × (1 − 0.75), i.e. delta = −0.75·row.
    for (r, n) in plan.rows.iter().zip(&got) {
        let up = &rows(&model, Matrix::Up, n.block)[n.row];
        let d: Vec<f32> = up.iter().map(|x| -0.75 * x).collect();
        assert_eq!(&r.delta[..], &d[..]);
    }
    write_and_revert(&src, &plan, dir.path());

    // The library's cosines agree with the direct ones to f32 precision.
    let g = gain(&model, None);
    let u: Vec<f32> = g.iter().zip(p.row(1)).map(|(a, b)| a * b).collect();
    let dirs: BTreeMap<usize, Vec<f32>> = (0..spec.blocks).map(|b| (b, u.clone())).collect();
    let cos = value::value_cosines(&model, &dirs).unwrap();
    for (c, n) in &all {
        assert!((cos[n.block][n.row] as f64 - c).abs() < 1e-5);
    }
}

#[test]
fn value_gate_pushes_the_chosen_gate_rows_against_the_direction() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec) = tiny_gguf(dir.path());
    let model = ModelFile::open(&src).unwrap();
    let p = probe(spec.d);
    let k = 5;
    let (plan, _) = plan_recipe(
        &model,
        &p,
        &Measured::default(),
        &opts(Recipe::ValueGate, 0.5, k),
    )
    .unwrap();
    assert_eq!(plan.rows.len(), k);
    let gf = gain(&model, None);
    let u: Vec<f32> = gf.iter().zip(p.row(1)).map(|(a, b)| a * b).collect();
    let gates = model.matrix_tensors(Matrix::Gate).unwrap();
    for r in &plan.rows {
        let b = gates.iter().position(|t| t.name == r.tensor).unwrap();
        // Direct: ê = unit(u ⊘ g_b) (the tiny model's gains are far above the floor).
        let gb = gain(&model, Some(b));
        let rms = (gb.iter().map(|v| v * v).sum::<f32>() / gb.len() as f32).sqrt();
        assert!(gb.iter().all(|g| g.abs() >= 0.05 * rms));
        let e: Vec<f32> = u.iter().zip(&gb).map(|(a, g)| a / g).collect();
        let ne = norm(&e);
        let row = &rows(&model, Matrix::Gate, b)[r.row];
        let nr = norm(row);
        for (d, x) in r.delta.iter().zip(&e) {
            let want = -0.5 * nr * (*x as f64) / ne;
            assert!(
                (*d as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{d} vs {want}"
            );
        }
    }
    write_and_revert(&src, &plan, dir.path());
}

#[test]
fn roc_auc_matches_pairwise_counting() {
    let scores = [0.1f32, 0.4, 0.35, 0.8, 0.4, 0.2, 0.9, 0.4];
    let labels = [0u8, 1, 0, 1, 0, 0, 1, 1];
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (si, li) in scores.iter().zip(labels) {
        for (sj, lj) in scores.iter().zip(labels) {
            if li == 1 && lj == 0 {
                pairs += 1.0;
                wins += match si.partial_cmp(sj).unwrap() {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
            }
        }
    }
    let auc = aura::roc_auc(&scores, &labels).unwrap();
    assert!(
        (auc - wins / pairs).abs() < 1e-12,
        "{auc} vs {}",
        wins / pairs
    );
    assert!(aura::roc_auc(&scores, &[0; 8]).is_err());
}

#[test]
fn aura_damps_each_neuron_above_half_by_one_minus_gini() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec) = tiny_gguf(dir.path());
    let model = ModelFile::open(&src).unwrap();
    let rt = Model::load(
        &src,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .unwrap();
    let texts = [
        "you are awful",
        "what a nice day",
        "i hate this",
        "thank you so much",
        "get lost now",
        "see you soon",
        "this is stupid",
        "lovely weather",
    ];
    let labels = [1u8, 0, 1, 0, 1, 0, 1, 0];
    let acts = pooled_activations(&rt, &model, &texts, 32, 3).unwrap();
    assert_eq!(acts.len(), spec.blocks);
    // Direct: per token, silu(gate·m)·(up·m) from the captured MLP input, averaged.
    for (t, text) in texts.iter().enumerate() {
        let ids = rt.tokenizer.encode(text).unwrap();
        let (out, _) = rt
            .forward_batch(
                std::slice::from_ref(&ids),
                &[Point::MlpInput(1)],
                Logits::None,
            )
            .unwrap();
        let h: Vec<f32> = out.hidden[0].flatten_all().unwrap().to_vec1().unwrap();
        let (g, u) = (rows(&model, Matrix::Gate, 1), rows(&model, Matrix::Up, 1));
        for i in (0..spec.d_ff).step_by(17) {
            let mut sum = 0f64;
            for m in h.chunks(spec.d) {
                let a: f64 = g[i].iter().zip(m).map(|(x, y)| *x as f64 * *y as f64).sum();
                let b: f64 = u[i].iter().zip(m).map(|(x, y)| *x as f64 * *y as f64).sum();
                sum += a / (1.0 + (-a).exp()) * b;
            }
            let want = sum / ids.len() as f64;
            let got = acts[1][t * spec.d_ff + i] as f64;
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }
    let n_ff = vec![spec.d_ff; spec.blocks];
    let aucs = aura::neuron_aucs(&acts, &n_ff, &labels).unwrap();
    let measured = Measured {
        labels: &labels,
        neurons: Some(&acts[..]),
        residuals: None,
    };
    let (plan, report) = plan_recipe(
        &model,
        &probe(spec.d),
        &measured,
        &opts(Recipe::Aura, 1.0, 1),
    )
    .unwrap();
    let ups = model.matrix_tensors(Matrix::Up).unwrap();
    let above: usize = aucs.iter().flatten().filter(|&&a| a > 0.5).count();
    // Neurons with AUC exactly 1 are zeroed (factor 0): still a change. Only factor 1 skips.
    assert_eq!(report.neurons, above);
    assert!(above > 0 && above < spec.blocks * spec.d_ff);
    for r in &plan.rows {
        let b = ups.iter().position(|t| t.name == r.tensor).unwrap();
        let auc = aucs[b][r.row];
        assert!(auc > 0.5);
        let f = (1.0 - 2.0 * (auc - 0.5)).max(0.0) as f32;
        let up = &rows(&model, Matrix::Up, b)[r.row];
        let want: Vec<f32> = up.iter().map(|x| (f - 1.0) * x).collect();
        assert_eq!(&r.delta[..], &want[..]);
    }
    write_and_revert(&src, &plan, dir.path());

    // Control: the same factors per block on random rows.
    let f = aura::damp_factors(&aucs, 1.0);
    let c = shuffle_within_blocks(&f, &n_ff, 3);
    for (a, b) in f.iter().zip(&c) {
        let mut x: Vec<f32> = a.iter().map(|p| p.1).collect();
        let mut y: Vec<f32> = b.iter().map(|p| p.1).collect();
        x.sort_by(f32::total_cmp);
        y.sort_by(f32::total_cmp);
        assert_eq!(x, y);
    }
    assert_ne!(f, c);
    assert_eq!(c, shuffle_within_blocks(&f, &n_ff, 3));
}

#[test]
fn distributed_spreads_the_total_change_over_every_gate_row() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec) = tiny_gguf(dir.path());
    let model = ModelFile::open(&src).unwrap();
    let p = probe(spec.d);
    let total = 3.0f32;
    let (plan, report) = plan_recipe(
        &model,
        &p,
        &Measured::default(),
        &opts(Recipe::Distributed, total, 1),
    )
    .unwrap();
    assert_eq!(plan.rows.len(), spec.blocks * spec.d_ff);
    assert_eq!(report.neurons, spec.blocks * spec.d_ff);
    assert!((plan.delta_norm() - total as f64).abs() < 1e-4);
    // Every row of a block gets the same vector, c·ê_b with c = total/√N.
    let c = total as f64 / ((spec.blocks * spec.d_ff) as f64).sqrt();
    for r in &plan.rows {
        assert!((norm(&r.delta) - c).abs() < 1e-5);
    }
    write_and_revert(&src, &plan, dir.path());
}

#[test]
fn random_neuron_controls_match_count_and_change_size() {
    let dir = tempfile::tempdir().unwrap();
    let (src, spec) = tiny_gguf(dir.path());
    let model = ModelFile::open(&src).unwrap();
    let p = probe(spec.d);
    let k = 9;
    let real = opts(Recipe::ValueDamp, 1.0, k);
    let ctl = RecipeOptions {
        control: Control::RandomNeurons(5),
        ..real.clone()
    };
    let (a, _) = plan_recipe(&model, &p, &Measured::default(), &real).unwrap();
    let (b, _) = plan_recipe(&model, &p, &Measured::default(), &ctl).unwrap();
    let (b2, _) = plan_recipe(&model, &p, &Measured::default(), &ctl).unwrap();
    assert_eq!(a.rows.len(), k);
    assert_eq!(b.rows.len(), k);
    assert_eq!(b.rows, b2.rows, "seeded control is deterministic");
    let key = |pl: &EditPlan| -> Vec<(String, usize)> {
        pl.rows.iter().map(|r| (r.tensor.clone(), r.row)).collect()
    };
    assert_ne!(key(&a), key(&b));
    let n = random_neurons(&[5, 3, 4], 12, 1).unwrap();
    assert_eq!(n.len(), 12);
    assert!(random_neurons(&[5, 3, 4], 13, 1).is_err());
    // The value-gate random-direction control: same rows, a different push, same size.
    let g = opts(Recipe::ValueGate, 0.5, k);
    let gd = RecipeOptions {
        control: Control::RandomDirection(2),
        ..g.clone()
    };
    let (x, _) = plan_recipe(&model, &p, &Measured::default(), &g).unwrap();
    let (y, _) = plan_recipe(&model, &p, &Measured::default(), &gd).unwrap();
    assert_eq!(key(&x), key(&y));
    for (r, s) in x.rows.iter().zip(&y.rows) {
        assert!((norm(&r.delta) - norm(&s.delta)).abs() < 1e-4);
        assert_ne!(r.delta, s.delta);
    }
    assert!(plan_recipe(
        &model,
        &p,
        &Measured::default(),
        &opts(Recipe::Aura, 1.0, 1)
    )
    .is_err());
}

#[test]
fn hf_folder_recipe_edit_reverts_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let src = dir.path().join("hf");
    tiny::write_hf_folder(&src, &spec, 5, HfDtype::BF16).unwrap();
    let model = ModelFile::open(&src).unwrap();
    let p = probe(spec.d);
    for recipe in [Recipe::ValueDamp, Recipe::ValueGate, Recipe::Distributed] {
        let (plan, _) =
            plan_recipe(&model, &p, &Measured::default(), &opts(recipe, 0.5, 6)).unwrap();
        let out = dir.path().join(format!("out-{}", recipe.name()));
        let pfile = dir.path().join(format!("{}.patch", recipe.name()));
        write_edited(
            &model,
            &plan,
            &out,
            &WriteOptions {
                keep_precision: false,
                force: true,
                patch: Some(pfile.clone()),
            },
        )
        .unwrap();
        let rev = dir.path().join(format!("rev-{}", recipe.name()));
        Patch::load(&pfile)
            .unwrap()
            .write(&out, &rev, true, false)
            .unwrap();
        assert_eq!(
            sha256_hex(&std::fs::read(src.join("model.safetensors")).unwrap()),
            sha256_hex(&std::fs::read(rev.join("model.safetensors")).unwrap()),
            "{}",
            recipe.name()
        );
    }
}
