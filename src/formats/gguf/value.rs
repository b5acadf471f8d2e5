//! GGUF metadata values.

use std::fmt;

/// The type tag of a metadata value, as stored in the file.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    /// The type with tag `id`, if defined.
    pub fn from_id(id: u32) -> Option<MetaType> {
        use MetaType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest encoded size of one value of this type (strings: the length prefix), used to
    /// reject absurd counts before allocating.
    pub(crate) fn min_size(self) -> u64 {
        use MetaType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// An array of byte strings in one buffer. A vocabulary and its merges are ~100,000
/// strings: one allocation each made opening the default model's GGUF, cloning its metadata
/// for a rewrite and writing it back cost milliseconds on every `edit` (issue #15); here
/// they are two buffers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StringArray {
    bytes: Vec<u8>,
    /// End of each string in `bytes`.
    ends: Vec<usize>,
}

impl StringArray {
    /// An empty array with room for `n` strings.
    pub fn with_capacity(n: usize) -> Self {
        StringArray {
            bytes: Vec::new(),
            ends: Vec::with_capacity(n),
        }
    }

    /// Appends one string.
    pub fn push(&mut self, s: &[u8]) {
        self.bytes.extend_from_slice(s);
        self.ends.push(self.bytes.len());
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the array holds no string.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// String `i`, if in range.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    /// The strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.bytes[a..b])
    }
}

/// A metadata value. Strings are kept as bytes because GGUF does not promise UTF-8 (some
/// vocabularies hold invalid sequences) and a rewrite must reproduce them exactly.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(Vec<u8>),
    /// An array: element type and elements (all of that type). Arrays of strings are read
    /// as [`MetaValue::Strings`]; both are written the same way.
    Array(MetaType, Vec<MetaValue>),
    /// An array of strings (type tag `Array` of `String` in the file).
    Strings(StringArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// A string value.
    pub fn string(s: impl Into<String>) -> MetaValue {
        MetaValue::String(s.into().into_bytes())
    }

    /// An array of strings.
    pub fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> MetaValue {
        let mut a = StringArray::default();
        for s in items {
            a.push(s.as_ref().as_bytes());
        }
        MetaValue::Strings(a)
    }

    /// The value's type tag.
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array(..) | MetaValue::Strings(_) => MetaType::Array,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F64(_) => MetaType::F64,
        }
    }

    /// Any integer type, widened; `None` for other types and negative values.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any float or integer type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v as f64),
            MetaValue::I16(v) => Some(v as f64),
            MetaValue::I32(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// A string value that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An array's elements (not an array of strings: see [`MetaValue::as_strings`]).
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// An array of strings.
    pub fn as_strings(&self) -> Option<&StringArray> {
        match self {
            MetaValue::Strings(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    /// Scalars as themselves, strings quoted (lossy), arrays of up to 8 items in full, longer
    /// ones as their type and length only: vocabularies have tens of thousands of entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::String(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            MetaValue::Array(_, items) if items.len() <= 8 => {
                let parts: Vec<String> = items.iter().map(|x| x.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            MetaValue::Array(t, items) => write!(f, "[{t:?}; {}]", items.len()),
            MetaValue::Strings(a) if a.len() <= 8 => {
                let parts: Vec<String> = a
                    .iter()
                    .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                    .collect();
                write!(f, "[{}]", parts.join(", "))
            }
            MetaValue::Strings(a) => write!(f, "[String; {}]", a.len()),
            MetaValue::Bool(b) => write!(f, "{b}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_arrays_keep_every_string_in_order() {
        let mut a = StringArray::with_capacity(3);
        for s in [&b"ab"[..], b"", b"\xff\x00c"] {
            a.push(s);
        }
        assert_eq!(a.len(), 3);
        assert_eq!(a.get(1), Some(&b""[..]));
        assert_eq!(a.get(2), Some(&b"\xff\x00c"[..]));
        assert_eq!(a.get(3), None);
        let all: Vec<&[u8]> = a.iter().collect();
        assert_eq!(all, [&b"ab"[..], b"", b"\xff\x00c"]);
        assert!(StringArray::default().iter().next().is_none());
        let v = MetaValue::strings(["x", "y"]);
        assert_eq!(v.meta_type(), MetaType::Array);
        assert_eq!(v.to_string(), r#"["x", "y"]"#);
    }
}
