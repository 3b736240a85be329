//! Tensors as they travel between the HTTP layer, the batcher, the cache and the model: a datatype,
//! a shape and little-endian bytes. Batching, splitting and cache keys then work on bytes without
//! knowing the element type; only the protocol edge converts to and from JSON numbers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Element types of the KServe V2 protocol that torchwatch accepts, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// One byte per element, 0 or 1.
    #[serde(rename = "BOOL")]
    Bool,
    /// Unsigned 8-bit integer.
    #[serde(rename = "UINT8")]
    Uint8,
    /// Signed 8-bit integer.
    #[serde(rename = "INT8")]
    Int8,
    /// Signed 16-bit integer.
    #[serde(rename = "INT16")]
    Int16,
    /// Signed 32-bit integer.
    #[serde(rename = "INT32")]
    Int32,
    /// Signed 64-bit integer.
    #[serde(rename = "INT64")]
    Int64,
    /// IEEE 754 single precision.
    #[serde(rename = "FP32")]
    Fp32,
    /// IEEE 754 double precision.
    #[serde(rename = "FP64")]
    Fp64,
}

impl DataType {
    /// Every supported datatype, for error messages that list them.
    pub const ALL: [DataType; 8] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// The protocol name, e.g. `FP32`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    /// Parses a protocol name; `None` for anything torchwatch does not serve (e.g. `BYTES`).
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The supported names, comma-separated, for error messages.
    pub fn supported() -> String {
        DataType::ALL.map(DataType::name).join(", ")
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int16 => 2,
            DataType::Int32 | DataType::Fp32 => 4,
            DataType::Int64 | DataType::Fp64 => 8,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of elements of a shape, or `None` when a dimension is negative or the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &dim| {
        usize::try_from(dim).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// A dense, row-major tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Element type.
    pub datatype: DataType,
    /// Dimensions; the first is the batch dimension wherever batching applies.
    pub shape: Vec<i64>,
    /// `element_count(shape) * datatype.size()` little-endian bytes.
    pub data: Bytes,
}

impl HostTensor {
    /// Builds a tensor, checking that the byte length matches the shape.
    pub fn new(datatype: DataType, shape: Vec<i64>, data: Bytes) -> Result<HostTensor, String> {
        let count = element_count(&shape)
            .ok_or_else(|| format!("shape {shape:?} has a negative or too large dimension"))?;
        let expected = count * datatype.size();
        if data.len() != expected {
            return Err(format!(
                "shape {shape:?} of {datatype} needs {expected} bytes, got {}",
                data.len()
            ));
        }
        Ok(HostTensor {
            datatype,
            shape,
            data,
        })
    }

    /// Rows along dimension 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape
            .first()
            .map_or(1, |&d| usize::try_from(d).unwrap_or(0))
    }

    /// Whether `other`'s rows can follow this tensor's in one tensor along dimension 0: the same
    /// datatype and the same dimensions past the first (a scalar has no rows to join).
    pub fn stacks_with(&self, other: &HostTensor) -> bool {
        self.datatype == other.datatype
            && !self.shape.is_empty()
            && self.shape.len() == other.shape.len()
            && self.shape[1..] == other.shape[1..]
    }

    /// Bytes per row along dimension 0.
    pub fn row_bytes(&self) -> usize {
        element_count(self.shape.get(1..).unwrap_or(&[])).unwrap_or(0) * self.datatype.size()
    }

    /// Builds a tensor from JSON numbers, checking that every value fits the datatype.
    pub fn from_scalars(
        datatype: DataType,
        shape: Vec<i64>,
        values: &[Scalar],
    ) -> Result<HostTensor, String> {
        let mut builder = TensorBuilder::new(datatype, values.len());
        for &value in values {
            builder.push(value);
        }
        builder.finish(shape)
    }

    /// The elements as JSON numbers (or booleans), row-major.
    pub fn json_values(&self) -> JsonValues<'_> {
        JsonValues(self)
    }
}

/// Writes the elements of a JSON `data` array into a tensor's bytes as they are read. Errors are
/// kept until `finish`, which reports the shape, then the count, then the first bad element.
#[derive(Debug)]
pub struct TensorBuilder {
    datatype: DataType,
    bytes: Vec<u8>,
    len: usize,
    first_error: Option<String>,
}

impl TensorBuilder {
    /// A builder with room for `elements` values.
    pub fn new(datatype: DataType, elements: usize) -> TensorBuilder {
        TensorBuilder {
            datatype,
            bytes: Vec::with_capacity(elements.saturating_mul(datatype.size())),
            len: 0,
            first_error: None,
        }
    }

    /// The datatype it writes.
    pub fn datatype(&self) -> DataType {
        self.datatype
    }

    /// Appends the next element, row-major.
    pub fn push(&mut self, value: Scalar) {
        if let Err(why) = value.write_as(self.datatype, &mut self.bytes)
            && self.first_error.is_none()
        {
            self.first_error = Some(format!("data[{}]: {why}", self.len));
        }
        self.len += 1;
    }

    /// Appends the next element of an FP32 tensor.
    pub fn push_f32(&mut self, value: f32) {
        debug_assert_eq!(self.datatype, DataType::Fp32);
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self.len += 1;
    }

    /// Appends the next element of an FP64 tensor.
    pub fn push_f64(&mut self, value: f64) {
        debug_assert_eq!(self.datatype, DataType::Fp64);
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self.len += 1;
    }

    /// The tensor, once the elements match `shape` and every one fits the datatype.
    pub fn finish(self, shape: Vec<i64>) -> Result<HostTensor, String> {
        let count = element_count(&shape)
            .ok_or_else(|| format!("shape {shape:?} has a negative or too large dimension"))?;
        if self.len != count {
            return Err(format!(
                "shape {shape:?} needs {count} elements, but data has {}",
                self.len
            ));
        }
        if let Some(error) = self.first_error {
            return Err(error);
        }
        HostTensor::new(self.datatype, shape, Bytes::from(self.bytes))
    }
}

/// One element of a JSON `data` array before its datatype is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// A non-negative integer above i64::MAX.
    UInt(u64),
    /// Any other number.
    Float(f64),
}

impl Scalar {
    fn write_as(self, datatype: DataType, out: &mut Vec<u8>) -> Result<(), String> {
        fn int<T: TryFrom<i64>>(v: Scalar, datatype: DataType) -> Result<T, String> {
            let wide = match v {
                Scalar::Int(i) => i,
                Scalar::Bool(b) => i64::from(b),
                Scalar::UInt(u) => return Err(format!("{u} does not fit {datatype}")),
                Scalar::Float(f) => return Err(format!("{f} is not an integer ({datatype})")),
            };
            T::try_from(wide).map_err(|_| format!("{wide} does not fit {datatype}"))
        }
        let float = |v: Scalar| -> Result<f64, String> {
            match v {
                Scalar::Float(f) => Ok(f),
                // Integers in JSON are valid float data (`[1, 2.5]`); precision loss past 2^53 is
                // what any JSON client accepts.
                Scalar::Int(i) => Ok(i as f64),
                Scalar::UInt(u) => Ok(u as f64),
                Scalar::Bool(_) => Err(format!("a boolean is not {datatype} data")),
            }
        };
        match datatype {
            DataType::Bool => match self {
                Scalar::Bool(b) => out.push(u8::from(b)),
                Scalar::Int(0) => out.push(0),
                Scalar::Int(1) => out.push(1),
                other => return Err(format!("{other} is not a boolean (true, false, 0 or 1)")),
            },
            DataType::Uint8 => out.push(int::<u8>(self, datatype)?),
            DataType::Int8 => out.extend_from_slice(&int::<i8>(self, datatype)?.to_le_bytes()),
            DataType::Int16 => out.extend_from_slice(&int::<i16>(self, datatype)?.to_le_bytes()),
            DataType::Int32 => out.extend_from_slice(&int::<i32>(self, datatype)?.to_le_bytes()),
            DataType::Int64 => out.extend_from_slice(&int::<i64>(self, datatype)?.to_le_bytes()),
            DataType::Fp32 => {
                let wide = float(self)?;
                let value = wide as f32;
                // JSON has no infinity: a number past f32's range is a mistake, not a value.
                if value.is_infinite() && wide.is_finite() {
                    return Err(format!("{wide} is out of the range of {datatype}"));
                }
                out.extend_from_slice(&value.to_le_bytes());
            }
            DataType::Fp64 => out.extend_from_slice(&float(self)?.to_le_bytes()),
        }
        Ok(())
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => b.fmt(f),
            Scalar::Int(i) => i.fmt(f),
            Scalar::UInt(u) => u.fmt(f),
            Scalar::Float(x) => x.fmt(f),
        }
    }
}

/// Serializes a tensor's elements as a flat JSON array without building an intermediate value.
pub struct JsonValues<'a>(&'a HostTensor);

impl Serialize for JsonValues<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let tensor = self.0;
        let size = tensor.datatype.size();
        let mut seq = serializer.serialize_seq(Some(tensor.data.len() / size))?;
        for chunk in tensor.data.chunks_exact(size) {
            match tensor.datatype {
                DataType::Bool => seq.serialize_element(&(chunk[0] != 0))?,
                DataType::Uint8 => seq.serialize_element(&chunk[0])?,
                DataType::Int8 => seq.serialize_element(&(chunk[0] as i8))?,
                DataType::Int16 => {
                    seq.serialize_element(&i16::from_le_bytes([chunk[0], chunk[1]]))?
                }
                DataType::Int32 => seq.serialize_element(&i32::from_le_bytes(le(chunk)))?,
                DataType::Int64 => seq.serialize_element(&i64::from_le_bytes(le(chunk)))?,
                DataType::Fp32 => seq.serialize_element(&f32::from_le_bytes(le(chunk)))?,
                DataType::Fp64 => seq.serialize_element(&f64::from_le_bytes(le(chunk)))?,
            }
        }
        seq.end()
    }
}

fn le<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(chunk);
    bytes
}

/// FP32 rows of `width` values each, for tests.
#[cfg(test)]
pub(crate) fn fp32_rows(values: &[f32], width: i64) -> HostTensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    HostTensor::new(
        DataType::Fp32,
        vec![values.len() as i64 / width, width],
        bytes.into(),
    )
    .expect("the values fill whole rows")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_stack_only_under_the_same_datatype_and_row_shape() {
        let two = fp32_rows(&[1.0, 2.0], 2);
        assert!(two.stacks_with(&fp32_rows(&[3.0, 4.0, 5.0, 6.0], 2)));
        assert!(!two.stacks_with(&fp32_rows(&[1.0, 2.0], 1)));
        let int = HostTensor::new(DataType::Int32, vec![1, 2], vec![0; 8].into()).unwrap();
        assert!(!two.stacks_with(&int));
        let scalar = HostTensor::new(DataType::Fp32, vec![], vec![0; 4].into()).unwrap();
        assert!(!scalar.stacks_with(&scalar));
    }

    #[test]
    fn scalars_round_trip_through_bytes() {
        let values = [Scalar::Float(1.5), Scalar::Int(-2), Scalar::Float(0.1)];
        let t = HostTensor::from_scalars(DataType::Fp32, vec![1, 3], &values).unwrap();
        assert_eq!(t.data.len(), 12);
        let json = serde_json::to_string(&t.json_values()).unwrap();
        assert_eq!(json, "[1.5,-2.0,0.1]");
    }

    #[test]
    fn integers_are_range_checked() {
        let err = HostTensor::from_scalars(DataType::Int8, vec![1], &[Scalar::Int(300)]);
        assert_eq!(err.unwrap_err(), "data[0]: 300 does not fit INT8");
        let err = HostTensor::from_scalars(DataType::Int32, vec![1], &[Scalar::Float(1.5)]);
        assert_eq!(err.unwrap_err(), "data[0]: 1.5 is not an integer (INT32)");
        let booleans = [Scalar::Bool(true), Scalar::Int(2)];
        let err = HostTensor::from_scalars(DataType::Bool, vec![2], &booleans);
        assert_eq!(
            err.unwrap_err(),
            "data[1]: 2 is not a boolean (true, false, 0 or 1)"
        );
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn length_mismatch_names_both_counts() {
        let err = HostTensor::from_scalars(DataType::Fp64, vec![2, 2], &[Scalar::Float(1.0)]);
        assert_eq!(
            err.unwrap_err(),
            "shape [2, 2] needs 4 elements, but data has 1"
        );
    }
}
