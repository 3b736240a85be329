//! The KServe V2 / Open Inference Protocol inference messages, in JSON and with Triton's binary
//! tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes followed by the
//! raw little-endian tensors of every input (or output) that says `binary_data_size`.

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::serve::NamedInputs;
use crate::tensor::{DataType, HostTensor, JsonValues, Scalar};

/// The header that gives the JSON part's length in binary-extension messages.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A decoded inference request.
#[derive(Debug)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// Inputs as the client named them.
    pub inputs: NamedInputs,
    /// The outputs to return, in order; `None` means all.
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Request-level `binary_data_output`: the default for outputs that do not say.
    pub binary_output: bool,
}

/// An entry of the request's `outputs` list.
#[derive(Debug)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// The output's own `binary_data` parameter, when given.
    pub binary: Option<bool>,
}

#[derive(Deserialize)]
struct RequestJson {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputJson>,
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<FlatData>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Decodes a request body; `header_length` is the `Inference-Header-Content-Length` value.
pub fn decode_request(body: &Bytes, header_length: Option<usize>) -> Result<InferRequest, String> {
    let (json, mut binary) = match header_length {
        Some(length) if length > body.len() => {
            return Err(format!(
                "Inference-Header-Content-Length is {length} but the body has only {} bytes",
                body.len()
            ));
        }
        Some(length) => (body.slice(..length), body.slice(length..)),
        None => (body.clone(), Bytes::new()),
    };
    let request: RequestJson = serde_json::from_slice(&json)
        .map_err(|e| format!("invalid inference request JSON: {e}"))?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let name = input.name;
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            format!(
                "input '{name}': unknown or unsupported datatype '{}'; supported: {}",
                input.datatype,
                DataType::supported()
            )
        })?;
        let binary_size = parameter_u64(&input.parameters, "binary_data_size")
            .map_err(|e| format!("input '{name}': {e}"))?;
        let tensor = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "input '{name}' has both 'data' and a binary_data_size parameter"
                ));
            }
            (None, None) => return Err(format!("input '{name}' has no 'data'")),
            (None, Some(FlatData(values))) => {
                HostTensor::from_scalars(datatype, input.shape, &values)
            }
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(format!(
                        "input '{name}' says binary_data_size {size} but only {} binary bytes remain",
                        binary.len()
                    ));
                }
                HostTensor::new(datatype, input.shape, binary.split_to(size))
            }
        }
        .map_err(|e| format!("input '{name}': {e}"))?;
        inputs.push((name, tensor));
    }
    if !binary.is_empty() {
        return Err(format!(
            "{} bytes of binary data follow the JSON header that no input claims",
            binary.len()
        ));
    }
    let binary_output = parameter_bool(&request.parameters, "binary_data_output")?.unwrap_or(false);
    let outputs = request
        .outputs
        .map(|outputs| {
            outputs
                .into_iter()
                .map(|o| {
                    let binary = parameter_bool(&o.parameters, "binary_data")
                        .map_err(|e| format!("output '{}': {e}", o.name))?;
                    Ok(RequestedOutput {
                        name: o.name,
                        binary,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?;
    Ok(InferRequest {
        id: request.id,
        inputs,
        outputs,
        binary_output,
    })
}

fn parameter_u64(parameters: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    parameters
        .get(key)
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| format!("parameter '{key}' must be a non-negative integer"))
        })
        .transpose()
}

fn parameter_bool(parameters: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    parameters
        .get(key)
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| format!("parameter '{key}' must be true or false"))
        })
        .transpose()
}

/// One output to put in a response.
pub struct ResponseOutput<'a> {
    /// Output name.
    pub name: &'a str,
    /// Its values.
    pub tensor: &'a HostTensor,
    /// Send as binary data after the JSON header rather than as a JSON array.
    pub binary: bool,
}

/// An encoded response body; `header_length` is set when binary data follows the JSON.
pub struct EncodedResponse {
    /// The whole body.
    pub body: Bytes,
    /// Value for `Inference-Header-Content-Length`, when any output is binary.
    pub header_length: Option<usize>,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputResponseJson<'a>>,
}

#[derive(Serialize)]
struct OutputResponseJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonValues<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Encodes an inference response.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[ResponseOutput<'_>],
) -> EncodedResponse {
    let json = ResponseJson {
        model_name,
        model_version,
        id,
        outputs: outputs
            .iter()
            .map(|o| OutputResponseJson {
                name: o.name,
                datatype: o.tensor.datatype.name(),
                shape: &o.tensor.shape,
                parameters: o.binary.then(|| BinarySize {
                    binary_data_size: o.tensor.data.len(),
                }),
                data: (!o.binary).then(|| o.tensor.json_values()),
            })
            .collect(),
    };
    let header = serde_json::to_vec(&json).expect("response JSON serializes: no maps, no NaN keys");
    if !outputs.iter().any(|o| o.binary) {
        return EncodedResponse {
            body: header.into(),
            header_length: None,
        };
    }
    let header_length = header.len();
    let binary_size: usize = outputs
        .iter()
        .filter(|o| o.binary)
        .map(|o| o.tensor.data.len())
        .sum();
    let mut body = BytesMut::with_capacity(header_length + binary_size);
    body.extend_from_slice(&header);
    for output in outputs.iter().filter(|o| o.binary) {
        body.extend_from_slice(&output.tensor.data);
    }
    EncodedResponse {
        body: body.freeze(),
        header_length: Some(header_length),
    }
}

/// A JSON `data` array, flat or nested row-major, flattened while parsing.
struct FlatData(Vec<Scalar>);

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = Vec::new();
        deserializer.deserialize_seq(Flatten(&mut values))?;
        Ok(FlatData(values))
    }
}

struct Flatten<'a>(&'a mut Vec<Scalar>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers or booleans, flat or nested")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Int(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0
            .push(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(
            "string data (BYTES tensors) is not supported; send numbers or booleans",
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.0.reserve(hint);
        }
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<InferRequest, String> {
        decode_request(&Bytes::copy_from_slice(json.as_bytes()), None)
    }

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let flat =
            decode(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#)
                .unwrap();
        let nested = decode(
            r#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#,
        )
        .unwrap();
        assert_eq!(flat.inputs, nested.inputs);
        assert_eq!(nested.id.as_deref(), Some("7"));
    }

    #[test]
    fn binary_inputs_are_taken_in_order_after_the_header() {
        let header = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}},{"name":"b","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        body.extend_from_slice(&[1, 0]);
        let request = decode_request(&body.into(), Some(header.len())).unwrap();
        assert_eq!(&request.inputs[0].1.data[..], &7i32.to_le_bytes());
        assert_eq!(&request.inputs[1].1.data[..], &[1, 0]);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP128","data":[1]}]}"#,
                "unsupported datatype 'FP128'",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#,
                "input 'x': shape [1, 3] needs 3 elements, but data has 2",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "input 'x' has no 'data'",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#,
                "BYTES tensors) is not supported",
            ),
            (r#"{"inputs": [}"#, "invalid inference request JSON"),
        ];
        for (json, expected) in cases {
            let err = decode(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn binary_response_puts_json_first_then_bytes() {
        let tensor = HostTensor::new(
            DataType::Fp32,
            vec![1, 1],
            2.5f32.to_le_bytes().to_vec().into(),
        )
        .unwrap();
        let encoded = encode_response(
            "m",
            "1",
            Some("r1"),
            &[ResponseOutput {
                name: "y",
                tensor: &tensor,
                binary: true,
            }],
        );
        let length = encoded.header_length.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..length]).unwrap();
        assert_eq!(header["id"], "r1");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(&encoded.body[length..], &2.5f32.to_le_bytes());
    }

    proptest::proptest! {
        #[test]
        fn json_round_trips_any_fp32(values in proptest::collection::vec(proptest::num::f32::NORMAL, 1..64)) {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let tensor = HostTensor::new(DataType::Fp32, vec![values.len() as i64], bytes.into()).unwrap();
            let encoded = encode_response("m", "1", None, &[ResponseOutput { name: "x", tensor: &tensor, binary: false }]);
            let response: Value = serde_json::from_slice(&encoded.body).unwrap();
            let request = serde_json::json!({"inputs": [{"name": "x", "shape": [values.len()], "datatype": "FP32", "data": response["outputs"][0]["data"]}]});
            let decoded = decode(&request.to_string()).unwrap();
            proptest::prop_assert_eq!(&decoded.inputs[0].1, &tensor);
        }
    }
}
