//! A minimal ONNX file reader: just the protobuf messages and fields that a small classic-ML
//! graph (such as the hatesonar text classifier) needs.
//!
//! The messages are written by hand with `prost` derives instead of generated from
//! `onnx.proto`, so that no protobuf compiler is needed at build time. Field numbers follow the
//! public `onnx/onnx.proto` (IR version 10); fields we do not declare are skipped by the decoder.
//! Protobuf decoders accept both packed and unpacked encodings of repeated numbers, so the
//! proto2 `[packed = true]` options of the original file need no special handling here.

use anyhow::{bail, Context, Result};
use prost::Message;
use std::path::Path;

/// `ModelProto`: the top-level message of an `.onnx` file.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// IR version of the file format.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Tool that wrote the file (e.g. `skl2onnx`).
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// The computation graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Operator sets (domain, version) the graph uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

/// `OperatorSetIdProto`: one imported operator set.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// Operator domain; empty means the default `ai.onnx` domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Version of that operator set.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `GraphProto`: nodes in topological order, constant tensors, and graph inputs/outputs.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes, in topological order (required by the ONNX spec).
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors, referenced by name from node inputs.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Graph inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Graph outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `ValueInfoProto`, reduced to the name (types are not needed to run the graph).
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// Value name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `NodeProto`: one operator application.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Names of the input values.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Names of the output values.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name (for messages only).
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator type, e.g. `TfIdfVectorizer`.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Operator attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Operator domain, e.g. `ai.onnx.ml`; empty for the default domain.
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto`: a named constant parameter of a node.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Single float value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// Single integer value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// Single string (bytes) value.
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// Single tensor value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// List of floats.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// List of integers.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// List of strings (bytes).
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    /// Which of the value fields is set (`AttributeProto.AttributeType`: 1 FLOAT, 2 INT,
    /// 3 STRING, 4 TENSOR, 6 FLOATS, 7 INTS, 8 STRINGS).
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// `TensorProto`: a constant tensor.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type (`TensorProto.DataType`: 1 FLOAT, 6 INT32, 7 INT64, 8 STRING, 11 DOUBLE).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Float elements, when not in `raw_data`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// String elements.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    /// INT64 elements, when not in `raw_data`.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Tensor name (initializers are referenced by it).
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian packed elements of fixed-width types.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// `TensorProto.DataType` FLOAT.
pub const DATA_TYPE_FLOAT: i32 = 1;
/// `TensorProto.DataType` INT64.
pub const DATA_TYPE_INT64: i32 = 7;

impl TensorProto {
    /// Number of elements implied by `dims` (1 for a scalar).
    pub fn numel(&self) -> Result<usize> {
        let mut n: usize = 1;
        for &d in &self.dims {
            let d = usize::try_from(d)
                .with_context(|| format!("tensor {:?} has a negative dimension {d}", self.name))?;
            n = n
                .checked_mul(d)
                .with_context(|| format!("tensor {:?} is too large", self.name))?;
        }
        Ok(n)
    }

    /// The elements of a FLOAT tensor, from `float_data` or `raw_data`.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.data_type != DATA_TYPE_FLOAT {
            bail!(
                "tensor {:?}: expected FLOAT (1), found data type {}",
                self.name,
                self.data_type
            );
        }
        let values: Vec<f32> = if !self.raw_data.is_empty() {
            if !self.raw_data.len().is_multiple_of(4) {
                bail!(
                    "tensor {:?}: raw_data length {} is not a multiple of 4",
                    self.name,
                    self.raw_data.len()
                );
            }
            self.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            self.float_data.clone()
        };
        self.check_len(values.len())?;
        Ok(values)
    }

    /// The elements of an INT64 tensor, from `int64_data` or `raw_data`.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        if self.data_type != DATA_TYPE_INT64 {
            bail!(
                "tensor {:?}: expected INT64 (7), found data type {}",
                self.name,
                self.data_type
            );
        }
        let values: Vec<i64> = if !self.raw_data.is_empty() {
            if !self.raw_data.len().is_multiple_of(8) {
                bail!(
                    "tensor {:?}: raw_data length {} is not a multiple of 8",
                    self.name,
                    self.raw_data.len()
                );
            }
            self.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunk of 8")))
                .collect()
        } else {
            self.int64_data.clone()
        };
        self.check_len(values.len())?;
        Ok(values)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        let want = self.numel()?;
        if len != want {
            bail!(
                "tensor {:?}: {len} elements stored but dims {:?} need {want}",
                self.name,
                self.dims
            );
        }
        Ok(())
    }
}

impl NodeProto {
    /// The attribute called `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name == name)
    }

    /// A short description for error messages: `op_type "name"`.
    pub fn describe(&self) -> String {
        format!("{} node {:?}", self.op_type, self.name)
    }

    /// Integer attribute, or `default` when absent.
    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    /// String attribute as UTF-8, or `default` when absent.
    pub fn attr_s(&self, name: &str, default: &str) -> Result<String> {
        match self.attr(name) {
            None => Ok(default.to_string()),
            Some(a) => String::from_utf8(a.s.clone())
                .with_context(|| format!("{}: attribute {name} is not UTF-8", self.describe())),
        }
    }

    /// Required attribute.
    pub fn attr_req(&self, name: &str) -> Result<&AttributeProto> {
        self.attr(name)
            .with_context(|| format!("{}: missing attribute {name}", self.describe()))
    }
}

/// Read and decode an `.onnx` file.
pub fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading ONNX model {}", path.display()))?;
    ModelProto::decode(bytes.as_slice())
        .with_context(|| format!("decoding ONNX protobuf {}", path.display()))
}
