//! The pieces every family's forward pass is built from, so that a family file holds only
//! its loading and its block loop:
//!
//! - what a pass is asked for and gives back: capture [`Point`]s, [`Logits`], [`Output`];
//! - [`RmsNorm`], [`Rope`] tables, grouped-query [`attention`] with the causal / padding /
//!   sliding-window [`attention_bias`], and the [`KvCache`] it appends to;
//! - the token embedding with its (possibly tied) output head ([`embedding_and_head`]);
//! - [`Pass`]: the last-block early exit, the captures, and the tail (final norm — where the
//!   paper's probe reads — then the output head).
//!
//! Step 3 of Model Surgery edits rows of each block's MLP gate; those stay in the family
//! files, next to the activation they feed.

use super::config::ModelConfig;
use super::weights::{Embedding, Linear, Precision, WeightSource};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

/// A place in the network whose activations can be captured, each `[batch, seq, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Point {
    /// The residual stream after block `i` (0-based).
    Residual(usize),
    /// The input of block `i`'s MLP: the post-attention RMSNorm output, which is what the
    /// gate rows take their dot product with.
    MlpInput(usize),
    /// The output of the final RMSNorm (what HF calls `hidden_states[L]`; the paper's probe).
    FinalNorm,
}

/// Which logits to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: the output head (vocab × d, the largest matmul) is skipped.
    None,
    /// Only the last column (`[batch, vocab]`): with left padding, every sequence's last token.
    Last,
    /// Every position (`[batch, seq, vocab]`).
    All,
}

/// What a forward pass returns.
pub struct Output {
    /// Logits as requested.
    pub logits: Option<Tensor>,
    /// One `[batch, seq, d]` tensor per requested point, in request order.
    pub hidden: Vec<Tensor>,
}

/// RMSNorm with a gain vector (Gemma's `1 + w` is stored as such in GGUF, and added at
/// load from Hugging Face checkpoints).
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)
    }
}

/// RoPE tables `[max_pos, head_dim/2]` for one set of inverse frequencies.
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub(crate) fn new(inv_freq: Vec<f32>, max_pos: usize) -> Result<Self> {
        let half = inv_freq.len();
        let inv = Tensor::from_vec(inv_freq, (1, half), &Device::Cpu)?;
        let pos = Tensor::arange(0u32, max_pos as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.matmul(&inv).context("RoPE table")?;
        Ok(Rope {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// The rotation at `positions` (`[b, t]` u32, which differ between rows under left
    /// padding).
    pub(crate) fn at(&self, positions: &Tensor) -> candle_core::Result<RopeAt> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.cos.dim(1)?;
        Ok(RopeAt {
            cos: self.cos.index_select(&flat, 0)?.reshape((b, t, half))?,
            sin: self.sin.index_select(&flat, 0)?.reshape((b, t, half))?,
        })
    }
}

/// `[b, t, head_dim/2]` cos and sin for one batch's positions.
pub(crate) struct RopeAt {
    cos: Tensor,
    sin: Tensor,
}

impl RopeAt {
    /// Rotates `[b, heads, t, head_dim]`; `interleaved` pairs dimensions (2i, 2i+1) as
    /// GGUF's Llama layout does, otherwise (i, i + head_dim/2) as Hugging Face's does.
    pub(crate) fn rotate(&self, y: &Tensor, interleaved: bool) -> candle_core::Result<Tensor> {
        if interleaved {
            candle_nn::rotary_emb::rope_i(y, &self.cos, &self.sin)
        } else {
            candle_nn::rotary_emb::rope(y, &self.cos, &self.sin)
        }
    }
}

/// `[b, t, heads·hd]` to `[b, heads, t, hd]`, with an RMSNorm per head first when given
/// (Gemma's q/k norms).
pub(crate) fn split_heads(
    y: Tensor,
    heads: usize,
    hd: usize,
    norm: Option<&RmsNorm>,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = y.dims3()?;
    let y = y.reshape((b, t, heads, hd))?;
    let y = match norm {
        Some(n) => n.forward(&y.contiguous()?)?,
        None => y,
    };
    y.transpose(1, 2)?.contiguous()
}

/// Queries per block of a long pass's attention ([`attention`]).
const QUERY_BLOCK: usize = 128;

/// Softmax attention of rotated queries `[b, nh, t, hd]` over keys and values
/// `[b, nkv, t, hd]` (appended to `cache` at `layer` first, when given); queries are scaled
/// by `scale`, `bias` is [`attention_bias`]'s (required when `t > 1`: it carries the causal
/// mask). Returns `[b, t, nh·hd]`, before the output projection.
///
/// A pass of many positions (a WikiText window of 1,024 tokens) takes its queries in blocks
/// of [`QUERY_BLOCK`], each against the keys up to its last query only: the keys after it
/// are masked for every query of the block, so their scores, exponentials and products are
/// never computed (at 1,024 positions the blocks do 56 % of the work of one pass over every
/// key). Dropping a masked key removes an exact zero from each sum.
///
/// ```text
///            keys →
///   block 0  ■ · · ·        ■ computed (the diagonal block masked inside by the bias)
///   block 1  ■ ■ · ·        · skipped: causally masked for the whole block
///   block 2  ■ ■ ■ ·
///   block 3  ■ ■ ■ ■
/// ```
pub(crate) fn attention(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    scale: f64,
    bias: Option<&Tensor>,
    cache: Option<(&mut KvCache, usize)>,
) -> candle_core::Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let (k, v) = match cache {
        Some((cache, layer)) => cache.append(layer, &k, &v)?,
        None => (k, v),
    };
    let past = k.dim(2)? - t;
    let y = match bias {
        Some(bias) if t >= 2 * QUERY_BLOCK => {
            let mut blocks = Vec::with_capacity(t.div_ceil(QUERY_BLOCK));
            for q0 in (0..t).step_by(QUERY_BLOCK) {
                let n = QUERY_BLOCK.min(t - q0);
                let keys = past + q0 + n;
                blocks.push(attend(
                    &q.narrow(2, q0, n)?.contiguous()?,
                    &k.narrow(2, 0, keys)?,
                    &v.narrow(2, 0, keys)?,
                    scale,
                    Some(&bias.narrow(2, q0, n)?.narrow(3, 0, keys)?),
                )?);
            }
            Tensor::cat(&blocks, 2)?
        }
        _ => attend(q, &k, &v, scale, bias)?,
    };
    y.transpose(1, 2)?.reshape((b, t, nh * hd))
}

/// Softmax attention of contiguous queries `[b, nh, t, hd]` over every key and value given,
/// `[b, nkv, keys, hd]`, with `bias` `[b, 1, t, keys]`; returns `[b, nh, t, hd]`.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let nkv = k.dim(1)?;
    let rep = nh / nkv;
    let keys = k.dim(2)?;
    // Grouped-query attention without copying keys: the `rep` query heads that share a
    // key/value head are stacked along the sequence axis of one matmul.
    let q = (q.reshape((b, nkv, rep * t, hd))? * scale)?;
    let att = q.matmul(&k.t()?)?.reshape((b, nkv, rep, t, keys))?;
    let att = match bias {
        Some(bias) => att.broadcast_add(&bias.unsqueeze(1)?)?,
        None => att,
    };
    let att = candle_nn::ops::softmax_last_dim(&att.reshape((b, nkv, rep * t, keys))?)?;
    att.matmul(v)?.reshape((b, nh, t, hd))
}

/// The additive attention bias `[b, 1, t, past + t]`: 0 where query i may attend key j
/// (causal, key not padding, and with a `window` fewer than `window` positions back), −∞
/// elsewhere. A query always sees itself, so padded query rows never become all −∞
/// (which would give NaN). Within a row, padding only precedes or follows the real tokens,
/// so index distance equals position distance between real tokens.
pub(crate) fn attention_bias(
    b: usize,
    t: usize,
    past: usize,
    key_mask: Option<&Tensor>,
    window: Option<usize>,
) -> candle_core::Result<Option<Tensor>> {
    let total = past + t;
    let window_bites = window.is_some_and(|w| total > w);
    if key_mask.is_none() && t == 1 && !window_bites {
        return Ok(None);
    }
    let keys: Vec<u8> = match key_mask {
        Some(m) => m.to_dtype(DType::U8)?.flatten_all()?.to_vec1()?,
        None => vec![1; b * total],
    };
    if keys.len() != b * total {
        candle_core::bail!("key mask has {} entries, expected {b}×{total}", keys.len());
    }
    let mut bias = vec![0f32; b * t * total];
    for s in 0..b {
        for i in 0..t {
            let row = &mut bias[(s * t + i) * total..(s * t + i + 1) * total];
            for (j, v) in row.iter_mut().enumerate() {
                let causal = j <= past + i && window.is_none_or(|w| past + i - j < w);
                let visible = keys[s * total + j] != 0 || j == past + i;
                if !(causal && visible) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Some(
        Tensor::from_vec(bias, (b, t, total), &Device::Cpu)?.unsqueeze(1)?,
    ))
}

/// Per-layer key/value cache, preallocated so that each decoding step writes in place.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// A cache for `capacity` positions (prompt + generated tokens).
    pub fn new(num_layers: usize, capacity: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            capacity,
        }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the given batch rows (sequences that are still generating).
    pub fn retain_rows(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }

    /// A cache of `capacity` positions holding the rows of `parts` in order, each part's
    /// positions ending at `filled` and zeros before them (left padding, which the attention
    /// bias masks out): the cache one left-padded pass over all the rows would have left,
    /// but at padding. The next pass attends to it as if it had run those positions itself.
    pub fn stacked(parts: &[&KvRows], filled: usize, capacity: usize) -> candle_core::Result<Self> {
        let Some(first) = parts.first() else {
            candle_core::bail!("key/value cache: nothing to stack");
        };
        let (h, d, layers) = (first.heads, first.head_dim, first.layers.len());
        for p in parts {
            if (p.heads, p.head_dim, p.layers.len(), p.dtype) != (h, d, layers, first.dtype) {
                candle_core::bail!(
                    "key/value rows disagree: {} layers × {} heads × {} dims ({:?}) against {layers} × {h} × {d} ({:?})",
                    p.layers.len(), p.heads, p.head_dim, p.dtype, first.dtype
                );
            }
            let floats = p.rows * h * p.len * d;
            if p.layers.iter().flatten().any(|x| x.len() != floats) {
                candle_core::bail!(
                    "key/value rows: a layer does not hold {} rows × {h} heads × {} positions × {d}",
                    p.rows,
                    p.len
                );
            }
            if p.len > filled || filled > capacity {
                candle_core::bail!(
                    "key/value rows of {} positions do not fit {filled} filled of {capacity}",
                    p.len
                );
            }
        }
        let b: usize = parts.iter().map(|p| p.rows).sum();
        let dev = Device::Cpu;
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            // `which`: 0 keys, 1 values.
            let fill = |which: usize| -> candle_core::Result<Tensor> {
                let mut x = vec![0f32; b * h * capacity * d];
                let mut row = 0;
                for p in parts {
                    let src = &p.layers[l][which];
                    let n = p.len;
                    for r in 0..p.rows * h {
                        // Row `row`, head j (r = row-in-part · h + j): its n positions end at `filled`.
                        let at = ((row * h + r) * capacity + filled - n) * d;
                        x[at..at + n * d].copy_from_slice(&src[r * n * d..(r + 1) * n * d]);
                    }
                    row += p.rows;
                }
                Tensor::from_vec(x, (b, h, capacity, d), &dev)?.to_dtype(first.dtype)
            };
            out.push(Some((fill(0)?, fill(1)?)));
        }
        Ok(KvCache {
            layers: out,
            len: filled,
            capacity,
        })
    }

    /// Every layer's keys and values so far, `[b, h, len, d]` each (views into the cache);
    /// an error before the first pass.
    pub fn layers(&self) -> candle_core::Result<Vec<(Tensor, Tensor)>> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, slot)| match slot {
                Some((k, v)) => Ok((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?)),
                None => candle_core::bail!("key/value cache layer {i} was never written"),
            })
            .collect()
    }

    /// Records that a forward pass of `t` positions has appended to every layer.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Writes a layer's new keys and values; returns all of them so far.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, h, t, d) = k.dims4()?;
        let start = self.len;
        if start + t > self.capacity {
            candle_core::bail!(
                "key/value cache full: {} + {t} positions > capacity {}",
                start,
                self.capacity
            );
        }
        let slot = &mut self.layers[layer];
        if slot.is_none() {
            let z = Tensor::zeros((b, h, self.capacity, d), k.dtype(), k.device())?;
            *slot = Some((z.clone(), z.copy()?));
        }
        let (kc, vc) = slot.as_ref().expect("allocated above");
        kc.slice_set(&k.contiguous()?, 2, start)?;
        vc.slice_set(&v.contiguous()?, 2, start)?;
        Ok((kc.narrow(2, 0, start + t)?, vc.narrow(2, 0, start + t)?))
    }
}

/// Keys and values that some rows left in an earlier pass, as plain f32 buffers, to be
/// stacked into one cache ([`KvCache::stacked`]): a generation batch's groups
/// ([`super::prefill`]), or the stored prompts of `eval::prompt_states`.
#[derive(Debug, Clone)]
pub struct KvRows {
    /// Batch rows.
    pub rows: usize,
    /// Key/value heads.
    pub heads: usize,
    /// Positions per row: each row's tokens end here, left padding before them.
    pub len: usize,
    /// Dimension of a head.
    pub head_dim: usize,
    /// What the cache held them in (restored on stacking).
    pub dtype: DType,
    /// Per layer, keys and values `[rows, heads, len, head_dim]` row-major.
    pub layers: Vec<[Vec<f32>; 2]>,
}

impl KvRows {
    /// Every row and position of `cache` so far; an error before its first pass.
    pub fn of_cache(cache: &KvCache) -> candle_core::Result<Self> {
        let mut out = KvRows {
            rows: 0,
            heads: 0,
            len: cache.len(),
            head_dim: 0,
            dtype: DType::F32,
            layers: Vec::new(),
        };
        for (k, v) in cache.layers()? {
            (out.rows, out.heads, _, out.head_dim) = k.dims4()?;
            out.dtype = k.dtype();
            let flat = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
            out.layers.push([flat(&k)?, flat(&v)?]);
        }
        Ok(out)
    }

    /// Row `r`'s last `n` positions (a prompt of `n` tokens, without its padding), as rows
    /// of their own. Panics, as slice indexing does, when `r ≥ rows` or `n > len`.
    pub fn row(&self, r: usize, n: usize) -> KvRows {
        let (h, d, len) = (self.heads, self.head_dim, self.len);
        let cut = |x: &[f32]| -> Vec<f32> {
            (0..h)
                .flat_map(|j| {
                    let at = ((r * h + j) * len + len - n) * d;
                    x[at..at + n * d].iter().copied()
                })
                .collect()
        };
        KvRows {
            rows: 1,
            len: n,
            layers: self.layers.iter().map(|[k, v]| [cut(k), cut(v)]).collect(),
            ..*self
        }
    }

    /// Bytes of its buffers.
    pub fn bytes(&self) -> usize {
        let floats: usize = self.layers.iter().flatten().map(Vec::len).sum();
        floats * std::mem::size_of::<f32>()
    }
}

/// The token embedding and the output head: its own `output` matrix when the file has one,
/// otherwise the embedding itself (tied; sets `cfg.tie_word_embeddings` accordingly).
pub(crate) fn embedding_and_head(
    src: &mut WeightSource,
    cfg: &mut ModelConfig,
    precision: Precision,
) -> Result<(Embedding, Linear)> {
    let d = cfg.hidden_size;
    let (embed, tied_head) = src.embedding(cfg.vocab_size, d, precision)?;
    cfg.tie_word_embeddings = !src.has("output", "weight");
    let lm_head = if cfg.tie_word_embeddings {
        tied_head
    } else {
        src.linear("output", cfg.vocab_size, d, false, precision)?
    };
    Ok((embed, lm_head))
}

/// One forward pass's plan and captures: how many blocks to run, and the requested points
/// as the block loop passes them.
pub(crate) struct Pass<'a> {
    points: &'a [Point],
    logits: Logits,
    num_blocks: usize,
    /// Blocks to run: all of them when logits or the final norm are wanted, otherwise up to
    /// the deepest requested point (the rest could not change what is returned).
    pub(crate) blocks: usize,
    hidden: Vec<Option<Tensor>>,
}

impl<'a> Pass<'a> {
    pub(crate) fn new(points: &'a [Point], logits: Logits, num_blocks: usize) -> Self {
        let blocks = if logits != Logits::None || points.contains(&Point::FinalNorm) {
            num_blocks
        } else {
            points
                .iter()
                .map(|p| match p {
                    Point::Residual(i) | Point::MlpInput(i) => i + 1,
                    Point::FinalNorm => num_blocks,
                })
                .max()
                .unwrap_or(0)
        };
        Pass {
            points,
            logits,
            num_blocks,
            blocks,
            hidden: vec![None; points.len()],
        }
    }

    /// Keeps `x` for every request of `p`.
    pub(crate) fn capture(&mut self, p: Point, x: &Tensor) {
        for (slot, want) in self.hidden.iter_mut().zip(self.points) {
            if *want == p {
                *slot = Some(x.clone());
            }
        }
    }

    /// The tail after the block loop, given the residual stream `x` `[b, t, d]`: the final
    /// norm (captured as [`Point::FinalNorm`]) and the requested logits, when every block
    /// ran.
    pub(crate) fn finish(mut self, x: &Tensor, norm: &RmsNorm, head: &Linear) -> Result<Output> {
        let mut logits = None;
        if self.blocks == self.num_blocks {
            let h = norm.forward(x)?;
            self.capture(Point::FinalNorm, &h);
            let t = h.dim(1)?;
            logits = match self.logits {
                Logits::None => None,
                Logits::Last => {
                    Some(head.forward(&h.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?)?)
                }
                Logits::All => Some(head.forward(&h)?),
            };
        }
        let hidden = self
            .hidden
            .into_iter()
            .map(|h| h.context("requested hidden state was not computed"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Output { logits, hidden })
    }
}
