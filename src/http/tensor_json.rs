//! Reads an input's JSON `data` straight into the tensor's little-endian bytes: one pass over the
//! array's text, which serde_json has already checked is valid JSON, with no value built per
//! element. A 64×64 RGB image is 12,288 numbers, so this is most of what a JSON request costs
//! before its forward pass.

use crate::tensor::{DataType, HostTensor, TensorBuilder, element_count};

/// The tensor that `data` (a JSON array, flat or nested row-major) gives for `shape`.
pub(super) fn read_data(
    data: &str,
    datatype: DataType,
    shape: Vec<i64>,
) -> Result<HostTensor, String> {
    let text = data.as_bytes();
    if text.first() != Some(&b'[') {
        return Err("'data' must be an array of numbers or booleans, flat or nested".into());
    }
    // No element is shorter than two bytes (`0,`), so a shape cannot reserve more than the text
    // could fill.
    let declared = element_count(&shape).unwrap_or(0);
    let mut tensor = TensorBuilder::new(datatype, declared.min(text.len() / 2 + 1));
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'[' | b']' | b',' | b' ' | b'\t' | b'\n' | b'\r' => at += 1,
            b'-' | b'0'..=b'9' => {
                let length = text[at..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .unwrap_or(text.len() - at);
                tensor.push_number(&data[at..at + length]);
                at += length;
            }
            b't' => {
                tensor.push_bool(true);
                at += "true".len();
            }
            b'f' => {
                tensor.push_bool(false);
                at += "false".len();
            }
            b'"' => {
                return Err(
                    "string data (BYTES tensors) is not supported; send numbers or booleans".into(),
                );
            }
            other => {
                let what = match other {
                    b'n' => "null",
                    b'{' => "an object",
                    _ => "not JSON",
                };
                return Err(format!(
                    "data[{}]: {what} is not a number or boolean",
                    tensor.len()
                ));
            }
        }
    }
    tensor.finish(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(data: &str, datatype: DataType, shape: &[i64]) -> Result<Vec<u8>, String> {
        read_data(data, datatype, shape.to_vec()).map(|t| t.data.to_vec())
    }

    fn fp32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn nested_arrays_flatten_row_major_with_any_whitespace() {
        assert_eq!(
            read("[ [1, -2.5e0],\n\t[3e-1 ,4] ]", DataType::Fp32, &[2, 2]),
            Ok(fp32(&[1.0, -2.5, 0.3, 4.0]))
        );
        assert_eq!(read("[]", DataType::Fp32, &[0]), Ok(vec![]));
    }

    #[test]
    fn floats_are_rounded_once_to_the_datatype() {
        // Halfway between two f32 once rounded to f64 first; correctly rounded it goes up.
        let token = "1.000000059604644775390625000001";
        let direct: f32 = token.parse().expect("a float");
        assert_eq!(
            read(&format!("[{token}]"), DataType::Fp32, &[1]),
            Ok(fp32(&[direct]))
        );
        assert_ne!(direct, token.parse::<f64>().expect("a float") as f32);
        assert_eq!(
            read("[0.1]", DataType::Fp64, &[1]),
            Ok(0.1f64.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn integers_booleans_and_their_limits() {
        assert_eq!(
            read("[9223372036854775807,-1]", DataType::Int64, &[2]),
            Ok([i64::MAX.to_le_bytes(), (-1i64).to_le_bytes()].concat())
        );
        assert_eq!(
            read("[true,0,1,false]", DataType::Bool, &[4]),
            Ok(vec![1, 0, 1, 0])
        );
        assert_eq!(
            read("[18446744073709551615]", DataType::Int64, &[1]),
            Err("data[0]: 18446744073709551615 does not fit INT64".into())
        );
        assert_eq!(
            read("[1,2.5]", DataType::Int32, &[2]),
            Err("data[1]: 2.5 is not an integer (INT32)".into())
        );
        assert_eq!(
            read("[1,1e39]", DataType::Fp32, &[2]),
            Err("data[1]: 1e39 is out of the range of FP32".into())
        );
        assert_eq!(
            read("[true]", DataType::Fp32, &[1]),
            Err("data[0]: a boolean is not FP32 data".into())
        );
    }

    #[test]
    fn what_is_not_a_number_is_named() {
        assert_eq!(
            read("[1,null]", DataType::Fp32, &[2]),
            Err("data[1]: null is not a number or boolean".into())
        );
        assert_eq!(
            read("[{\"a\":1}]", DataType::Fp32, &[1]),
            Err("data[0]: an object is not a number or boolean".into())
        );
        assert!(
            read("[\"a\"]", DataType::Fp32, &[1])
                .unwrap_err()
                .contains("BYTES")
        );
        assert!(
            read("5", DataType::Fp32, &[1])
                .unwrap_err()
                .contains("must be an array")
        );
    }

    #[test]
    fn the_count_is_checked_before_the_values() {
        assert_eq!(
            read("[1,256,3]", DataType::Uint8, &[2]),
            Err("shape [2] needs 2 elements, but data has 3".into())
        );
        // A shape far larger than the text reserves no more than the text could hold.
        assert_eq!(
            read("[1]", DataType::Fp64, &[1 << 40]),
            Err(format!(
                "shape [{}] needs {} elements, but data has 1",
                1u64 << 40,
                1u64 << 40
            ))
        );
    }
}
