//! ggml tensor types: ids as stored in GGUF files, block geometry and names.
//!
//! The table covers every type id llama.cpp has assigned (so that a reader can size the
//! tensors of any current file, even those it cannot decode); ids llama.cpp removed
//! (4, 5, 31–33, 36–38) are unknown on purpose.

use std::fmt;

/// A ggml tensor element type, identified by its GGUF type id.
#[allow(non_camel_case_types, missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

use GgmlType::*;

/// (type, GGUF id, elements per block, bytes per block, name)
const TABLE: &[(GgmlType, u32, usize, usize, &str)] = &[
    (F32, 0, 1, 4, "F32"),
    (F16, 1, 1, 2, "F16"),
    (Q4_0, 2, 32, 18, "Q4_0"),
    (Q4_1, 3, 32, 20, "Q4_1"),
    (Q5_0, 6, 32, 22, "Q5_0"),
    (Q5_1, 7, 32, 24, "Q5_1"),
    (Q8_0, 8, 32, 34, "Q8_0"),
    // ggml's block_q8_1 is two f16 and 32 i8 (gguf-py's table says 40, from an old layout).
    (Q8_1, 9, 32, 36, "Q8_1"),
    (Q2_K, 10, 256, 84, "Q2_K"),
    (Q3_K, 11, 256, 110, "Q3_K"),
    (Q4_K, 12, 256, 144, "Q4_K"),
    (Q5_K, 13, 256, 176, "Q5_K"),
    (Q6_K, 14, 256, 210, "Q6_K"),
    (Q8_K, 15, 256, 292, "Q8_K"),
    (IQ2_XXS, 16, 256, 66, "IQ2_XXS"),
    (IQ2_XS, 17, 256, 74, "IQ2_XS"),
    (IQ3_XXS, 18, 256, 98, "IQ3_XXS"),
    (IQ1_S, 19, 256, 50, "IQ1_S"),
    (IQ4_NL, 20, 32, 18, "IQ4_NL"),
    (IQ3_S, 21, 256, 110, "IQ3_S"),
    (IQ2_S, 22, 256, 82, "IQ2_S"),
    (IQ4_XS, 23, 256, 136, "IQ4_XS"),
    (I8, 24, 1, 1, "I8"),
    (I16, 25, 1, 2, "I16"),
    (I32, 26, 1, 4, "I32"),
    (I64, 27, 1, 8, "I64"),
    (F64, 28, 1, 8, "F64"),
    (IQ1_M, 29, 256, 56, "IQ1_M"),
    (BF16, 30, 1, 2, "BF16"),
    (TQ1_0, 34, 256, 54, "TQ1_0"),
    (TQ2_0, 35, 256, 66, "TQ2_0"),
    (MXFP4, 39, 32, 17, "MXFP4"),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, usize, usize, &'static str) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every GgmlType variant is in TABLE")
    }

    /// The type with GGUF id `id`, or `None` for ids ggml does not (or no longer) define.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// Parses a name as printed by llama.cpp (`"Q4_1"`, case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|e| e.4.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.entry().3
    }

    /// llama.cpp's name for the type.
    pub fn name(self) -> &'static str {
        self.entry().4
    }

    /// Bytes of `n` elements, or `None` when `n` is not a whole number of blocks or the size
    /// overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_removed_ids_are_unknown() {
        for e in TABLE {
            assert_eq!(GgmlType::from_id(e.1), Some(e.0));
            assert_eq!(GgmlType::from_name(e.4), Some(e.0));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 40, 1000] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(Q4_1.bytes_for(576), Some(18 * 20));
        assert_eq!(Q4_1.bytes_for(33), None);
        assert_eq!(F32.bytes_for(3), Some(12));
    }
}
