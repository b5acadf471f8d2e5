//! Hugging Face model folders: `config.json` plus `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`.
//!
//! Shards are memory-mapped; reading a tensor touches only its bytes. The writer
//! ([`HfRewrite`]) keeps each shard's header and layout: a replaced tensor is written in its
//! own dtype and shape, so every offset, the index and `total_size` stay valid and every
//! other byte is copied unchanged.

mod write;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::SafeTensors;

pub use safetensors::Dtype;
pub use write::{HfProducer, HfRewrite, HfSlotProducer};

/// File name of the single-file layout.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor of the folder.
#[derive(Clone, Debug)]
pub struct HfTensor {
    /// Tensor name, e.g. `model.layers.0.mlp.gate_proj.weight`.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, slowest axis first (`[d_ff, d]` for `gate_proj`).
    pub shape: Vec<usize>,
    /// Index into [`HfFolder::shard_files`].
    pub shard: usize,
    /// Absolute byte range in the shard file.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

struct Shard {
    file: String,
    mmap: Mmap,
    /// The mapped file, for file-to-file copies.
    handle: File,
}

/// An opened Hugging Face model folder.
pub struct HfFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Parsed `config.json`.
    pub config: serde_json::Value,
    /// Every tensor, in file order (shard, then offset).
    pub tensors: Vec<HfTensor>,
    /// Whether the weights are sharded (an index file is present).
    pub sharded: bool,
    shards: Vec<Shard>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for HfFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfFolder")
            .field("dir", &self.dir)
            .field("tensors", &self.tensors.len())
            .field("shards", &self.shard_files())
            .finish()
    }
}

impl HfFolder {
    /// Opens a folder: reads `config.json`, the index if present, and every shard's header.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfFolder> {
        let dir = dir.as_ref();
        open_inner(dir).with_context(|| format!("reading HF model folder {}", dir.display()))
    }

    /// Shard file names, in index order (one entry for the single-file layout).
    pub fn shard_files(&self) -> Vec<&str> {
        self.shards.iter().map(|s| s.file.as_str()).collect()
    }

    /// `config.json`'s first `architectures` entry, e.g. `LlamaForCausalLM`.
    pub fn architecture(&self) -> Option<&str> {
        self.config.get("architectures")?.get(0)?.as_str()
    }

    /// An integer from `config.json`.
    pub fn config_u64(&self, key: &str) -> Result<u64> {
        self.config
            .get(key)
            .and_then(|v| v.as_u64())
            .with_context(|| format!("{}: config.json has no integer {key}", self.dir.display()))
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&HfTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, or an error naming folder and tensor.
    pub fn require_tensor(&self, name: &str) -> Result<&HfTensor> {
        self.tensor(name)
            .with_context(|| format!("{}: no tensor {name}", self.dir.display()))
    }

    /// The raw bytes of a tensor (little-endian, row-major).
    pub fn tensor_bytes(&self, t: &HfTensor) -> &[u8] {
        &self.shards[t.shard].mmap[t.start..t.end]
    }

    /// Drops this process's mapping of a tensor's pages (see
    /// [`crate::formats::gguf::GgufFile::release`]).
    pub fn release(&self, t: &HfTensor) {
        crate::formats::io::release_range(&self.shards[t.shard].mmap, t.start, t.end - t.start);
    }

    /// A tensor's values as f32 (F32, F16 and BF16 tensors).
    pub fn tensor_f32(&self, t: &HfTensor) -> Result<Vec<f32>> {
        decode_values(t.dtype, self.tensor_bytes(t))
            .with_context(|| format!("{}: tensor {}", self.dir.display(), t.name))
    }

    fn shard_bytes(&self, shard: usize) -> &[u8] {
        &self.shards[shard].mmap
    }

    /// The open file of shard `shard` (index into [`HfFolder::shard_files`]).
    fn shard_handle(&self, shard: usize) -> &File {
        &self.shards[shard].handle
    }
}

/// Decodes little-endian F32 / F16 / BF16 bytes to f32.
pub fn decode_values(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!("dtype {other:?} is not supported (F32, F16, BF16 are)"),
    })
}

/// Encodes f32 values as little-endian F32 / F16 / BF16 (round to nearest even).
pub fn encode_values(dtype: Dtype, xs: &[f32]) -> Result<Vec<u8>> {
    if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
        bail!("cannot encode {dtype:?}: element {i} is {}", xs[i]);
    }
    Ok(match dtype {
        Dtype::F32 => xs.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => xs
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => xs
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => bail!("dtype {other:?} is not supported (F32, F16, BF16 are)"),
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display()))
}

fn open_inner(dir: &Path) -> Result<HfFolder> {
    if !dir.is_dir() {
        bail!("not a folder");
    }
    let config = read_json(&dir.join("config.json"))?;
    let index_path = dir.join(INDEX_FILE);
    let sharded = index_path.exists();
    let files: Vec<String> = if sharded {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{INDEX_FILE} has no weight_map"))?;
        let mut files: Vec<String> = Vec::new();
        for v in map.values() {
            let f = v
                .as_str()
                .with_context(|| format!("{INDEX_FILE}: weight_map value {v} is not a string"))?;
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                bail!("{INDEX_FILE}: shard name {f:?} is not a plain file name");
            }
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
        files.sort();
        files
    } else if dir.join(SINGLE_FILE).exists() {
        vec![SINGLE_FILE.to_string()]
    } else {
        bail!("neither {SINGLE_FILE} nor {INDEX_FILE} found");
    };

    let mut shards = Vec::new();
    let mut tensors = Vec::new();
    for (si, f) in files.iter().enumerate() {
        let path = dir.join(f);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: read-only map; see GgufFile::open.
        let mmap =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let (n, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            let hint = match e {
                safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                    " (file truncated or extended)"
                }
                _ => "",
            };
            anyhow::anyhow!("{f}: invalid safetensors: {e}{hint}")
        })?;
        let header_end = 8 + n;
        let mut list: Vec<HfTensor> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| HfTensor {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                shard: si,
                start: header_end + info.data_offsets.0,
                end: header_end + info.data_offsets.1,
            })
            .collect();
        list.sort_by_key(|t| t.start);
        tensors.extend(list);
        shards.push(Shard {
            file: f.clone(),
            mmap,
            handle: file,
        });
    }
    let mut by_name = HashMap::new();
    for (i, t) in tensors.iter().enumerate() {
        if by_name.insert(t.name.clone(), i).is_some() {
            bail!("tensor {} appears in more than one shard", t.name);
        }
    }
    if sharded {
        let index = read_json(&index_path)?;
        if let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) {
            for (name, f) in map {
                match by_name.get(name) {
                    Some(&i) if Some(shards[tensors[i].shard].file.as_str()) == f.as_str() => {}
                    _ => bail!("{INDEX_FILE} lists {name} in {f}, which does not hold it"),
                }
            }
        }
    }
    Ok(HfFolder {
        dir: dir.to_path_buf(),
        config,
        tensors,
        sharded,
        shards,
        by_name,
    })
}
