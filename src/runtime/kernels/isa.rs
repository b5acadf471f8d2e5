//! Which instruction set the kernels run on: detected once per process, or forced lower
//! with `SCALPEL_ISA` (`scalar`, `avx2`, `avx512` on x86-64; `scalar`, `neon` on aarch64)
//! so that every path can be tested on a machine that has the highest one.
//!
//! The exact kernels are one generic source over [`pulp::Simd`]; this module turns the
//! chosen level into the matching `pulp` token ([`dispatch`]). The 8-bit-input kernels use
//! integer dot-product instructions that `pulp`'s portable layer does not expose, so they
//! ask [`active`] and [`has_vnni`] directly.

use std::sync::OnceLock;

/// An instruction-set level the kernels have a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD (the reference every path is tested against).
    Scalar,
    /// x86-64 AVX2 + FMA (x86-64-v3: most x86 laptops and cloud machines).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (x86-64-v4); the 8-bit-input path also uses VNNI when present.
    Avx512,
    /// aarch64 NEON (Apple Silicon, ARM servers).
    Neon,
}

/// The environment variable that forces a lower level.
pub const ENV: &str = "SCALPEL_ISA";

impl Isa {
    /// The name `SCALPEL_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `SCALPEL_ISA` value.
    pub fn parse(s: &str) -> anyhow::Result<Isa> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Isa::Scalar,
            "avx2" => Isa::Avx2,
            "avx512" => Isa::Avx512,
            "neon" => Isa::Neon,
            other => anyhow::bail!(
                "{ENV}={other:?} is not an instruction set (one of: {})",
                Isa::all_available()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Whether this CPU can run the level.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => pulp::x86::V3::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => pulp::x86::V4::try_new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => pulp::aarch64::Neon::try_new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every level this CPU can run, lowest first (what `scripts/test.sh` loops over).
    pub fn all_available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// The highest level this CPU can run.
    pub fn detected() -> Isa {
        *Isa::all_available().last().unwrap_or(&Isa::Scalar)
    }
}

/// The level `SCALPEL_ISA` asks for, checked against this CPU; `Ok(None)` when unset.
pub fn requested() -> anyhow::Result<Option<Isa>> {
    let Ok(v) = std::env::var(ENV) else {
        return Ok(None);
    };
    if v.trim().is_empty() {
        return Ok(None);
    }
    let isa = Isa::parse(&v)?;
    anyhow::ensure!(
        isa.available(),
        "{ENV}={} but this CPU cannot run it (it can: {})",
        isa.name(),
        Isa::all_available()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(isa))
}

/// The level the kernels run on, fixed at the first call: `SCALPEL_ISA` if set and valid,
/// else the highest the CPU has. An invalid `SCALPEL_ISA` is reported once on stderr and
/// ignored here; the CLI refuses it up front through [`requested`].
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| match requested() {
        Ok(Some(isa)) => isa,
        Ok(None) => Isa::detected(),
        Err(e) => {
            eprintln!("warning: {e}; using {}", Isa::detected().name());
            Isa::detected()
        }
    })
}

/// Whether the AVX-512 level may use VNNI (`vpdpbusd`) in the 8-bit-input kernels.
pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: OnceLock<bool> = OnceLock::new();
        *VNNI.get_or_init(|| active() == Isa::Avx512 && std::is_x86_feature_detected!("avx512vnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A short label of the active kernels, for benchmark tables: `avx512+vnni`, `avx2`, ...
pub fn label() -> String {
    let isa = active();
    if has_vnni() {
        format!("{}+vnni", isa.name())
    } else {
        isa.name().to_string()
    }
}

/// Runs `op` with the `pulp` token of level `isa` (the exact kernels' one source); a level
/// this CPU lacks runs the portable scalar code.
#[inline]
pub fn dispatch<Op: pulp::WithSimd>(isa: Isa, op: Op) -> Op::Output {
    use pulp::Simd;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => match pulp::x86::V4::try_new() {
            Some(s) => Simd::vectorize(s, op),
            None => Simd::vectorize(pulp::Scalar, op),
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => match pulp::x86::V3::try_new() {
            Some(s) => Simd::vectorize(s, op),
            None => Simd::vectorize(pulp::Scalar, op),
        },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => match pulp::aarch64::Neon::try_new() {
            Some(s) => Simd::vectorize(s, op),
            None => Simd::vectorize(pulp::Scalar, op),
        },
        _ => Simd::vectorize(pulp::Scalar, op),
    }
}
