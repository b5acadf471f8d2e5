//! `scalpel edit --recipe NAME`: an output-side recipe (value vectors, AurA, ProFS, the
//! distributed edit) instead of the paper's selection, through the same writers and patch.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use scalpel::data::load_tsv;
use scalpel::probe::{collect, CollectOptions, Pool, Probe};
use scalpel::runtime::{LoadOptions, Model, Point, Precision};
use scalpel::surgery::recipes::{
    neurons::pooled_activations, plan_recipe, Control, Measured, Recipe, RecipeOptions,
};
use scalpel::surgery::{EditPlan, ModelFile};

use super::edit::EditArgs;

/// The plan of `a.recipe` for `model`, and a one-line description of what it chose.
pub fn recipe_plan(a: &EditArgs, model: &ModelFile, probe: &Probe) -> Result<(EditPlan, String)> {
    let recipe = a.recipe.recipe;
    let control = match (a.edit.random_direction, a.random_neurons) {
        (Some(_), Some(_)) => bail!("--random-direction and --random-neurons are exclusive"),
        (Some(s), None) => Control::RandomDirection(s),
        (None, Some(s)) => Control::RandomNeurons(s),
        (None, None) => Control::None,
    };
    if !recipe.has_control(control) {
        bail!("recipe {} has no such control", recipe.name());
    }
    let Some(strength) = a.recipe.strength_or_default(a.edit.alpha) else {
        bail!("--recipe distributed needs --strength (the total Frobenius change)")
    };
    let opts = RecipeOptions {
        recipe,
        strength,
        count: a.sel.count,
        direction: a.sel.direction,
        rank: a.recipe.profs_rank,
        blocks: a.sel.blocks.clone(),
        control,
    };
    let (labels, neurons, residuals) = if recipe.needs_activations() {
        let Some(data) = &a.data else {
            bail!("--recipe {} measures the model on labelled text: give --data FILE (label<TAB>text, 1 = undesirable)", recipe.name());
        };
        measure(recipe, model.path(), data, a.max_tokens)?
    } else {
        (Vec::new(), None, None)
    };
    let measured = Measured {
        labels: &labels,
        neurons: neurons.as_deref(),
        residuals: residuals.as_deref(),
    };
    let (plan, report) = plan_recipe(model, probe, &measured, &opts)?;
    let per_block: Vec<String> = report
        .per_block
        .iter()
        .enumerate()
        .map(|(b, n)| format!("{b}:{n}"))
        .collect();
    Ok((
        plan,
        format!(
            "recipe {} (strength {strength}), {} neurons changed; per block {}",
            recipe.name(),
            report.neurons,
            per_block.join(" ")
        ),
    ))
}

type Measures = (
    Vec<u8>,
    Option<Vec<Vec<f32>>>,
    Option<Vec<Option<Vec<f32>>>>,
);

/// Labels and the measurement the recipe needs, from running the model over `data`.
fn measure(recipe: Recipe, model_path: &Path, data: &Path, max_tokens: usize) -> Result<Measures> {
    let ds = load_tsv(data)?;
    ds.validate()?;
    let labels: Vec<u8> = ds.items.iter().map(|(_, l)| *l).collect();
    let model = Model::load(
        model_path,
        &LoadOptions {
            precision: Precision::F32,
        },
    )
    .with_context(|| format!("loading {}", model_path.display()))?;
    if recipe == Recipe::Aura {
        let file = ModelFile::open(model_path)?;
        let texts: Vec<&str> = ds.items.iter().map(|(t, _)| t.as_str()).collect();
        let acts = pooled_activations(&model, &file, &texts, max_tokens, 16)?;
        return Ok((labels, Some(acts), None));
    }
    let n = model.config().num_layers;
    let wanted: BTreeSet<usize> = (n / 2..n).collect();
    let opts = CollectOptions {
        points: wanted.iter().map(|&b| Point::Residual(b)).collect(),
        pool: Pool::Mean,
        max_tokens,
        batch_size: 16,
        cache_dir: None,
        progress: true,
    };
    let (acts, _) = collect(&model, &ds, &opts)?;
    let mut res = vec![None; n];
    for a in acts {
        if let Point::Residual(b) = a.point {
            res[b] = Some(a.data);
        }
    }
    Ok((labels, None, Some(res)))
}
