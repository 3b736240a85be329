//! The KServe V2 / Open Inference Protocol inference messages, in JSON and with Triton's binary
//! tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes followed by the
//! raw little-endian tensors of every input (or output) that says `binary_data_size`.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json_data::{self, Scan};
use crate::serve::NamedInputs;
use crate::tensor::{DataType, HostTensor, JsonValues, Scalar, TensorBuilder, element_count};

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

/// What one request may hold: the `server:` keys of the same names. Each is checked before the
/// part it bounds is allocated (depth and header size before parsing, the input count as inputs
/// are read), so an abusive request costs little more than its bytes.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Deepest nesting of arrays and objects in the JSON.
    pub max_json_depth: usize,
    /// Most entries in `inputs`.
    pub max_inputs: usize,
    /// Most dimensions in an input's `shape`.
    pub max_tensor_rank: usize,
    /// Largest `Inference-Header-Content-Length`.
    pub max_header_bytes: usize,
}

impl From<&crate::config::ServerConfig> for DecodeLimits {
    fn from(server: &crate::config::ServerConfig) -> DecodeLimits {
        DecodeLimits {
            max_json_depth: server.max_json_depth,
            max_inputs: server.max_inputs,
            max_tensor_rank: server.max_tensor_rank,
            max_header_bytes: server.max_inference_header_bytes,
        }
    }
}

/// Why a request body was refused.
#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// Malformed or over a count limit: 400.
    Invalid(String),
    /// A declared size over its limit: 413.
    TooLarge(String),
}

impl From<String> for DecodeError {
    fn from(message: String) -> DecodeError {
        DecodeError::Invalid(message)
    }
}

struct RequestJson {
    id: Option<String>,
    parameters: Map<String, Value>,
    inputs: Vec<InputJson>,
    outputs: Option<Vec<OutputJson>>,
}

struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    parameters: Map<String, Value>,
    data: Option<InputData>,
}

/// An input's `data`, flattened while parsing.
enum InputData {
    /// Parsed into the tensor's bytes from the array cut out of the body.
    Parsed(TensorBuilder),
    /// Read by serde_json with the whole body, as JSON numbers.
    Scalars(Vec<Scalar>),
}

impl InputData {
    fn into_tensor(self, datatype: DataType, shape: Vec<i64>) -> Result<HostTensor, String> {
        match self {
            InputData::Parsed(builder) => builder.finish(shape),
            InputData::Scalars(values) => HostTensor::from_scalars(datatype, shape, &values),
        }
    }
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Decodes a request body; `header_length` is the `Inference-Header-Content-Length` value.
pub fn decode_request(
    body: &Bytes,
    header_length: Option<usize>,
    limits: &DecodeLimits,
) -> Result<InferRequest, DecodeError> {
    let (json, mut binary) = match header_length {
        Some(length) if length > limits.max_header_bytes => {
            return Err(DecodeError::TooLarge(format!(
                "Inference-Header-Content-Length is {length}, more than \
                 server.max_inference_header_bytes ({})",
                limits.max_header_bytes
            )));
        }
        Some(length) if length > body.len() => {
            return Err(DecodeError::Invalid(format!(
                "Inference-Header-Content-Length is {length} but the body has only {} bytes",
                body.len()
            )));
        }
        Some(length) => (body.slice(..length), body.slice(length..)),
        None => (body.clone(), Bytes::new()),
    };
    let request = match json_data::scan(&json, limits.max_json_depth) {
        Scan::TooDeep => {
            return Err(DecodeError::Invalid(format!(
                "invalid inference request JSON: nested deeper than server.max_json_depth ({} \
                 levels)",
                limits.max_json_depth
            )));
        }
        // Whatever the envelope or a cut array does not take, the body read whole reports, with
        // the line and column a client can find.
        Scan::Cut(cut) => parse_request(&cut.envelope, limits, Some((&json, &cut.data)))
            .or_else(|_| parse_request(&json, limits, None)),
        Scan::Whole => parse_request(&json, limits, None),
    }
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
                return Err(DecodeError::Invalid(format!(
                    "input '{name}' has both 'data' and a binary_data_size parameter"
                )));
            }
            (None, None) => return Err(format!("input '{name}' has no 'data'").into()),
            (None, Some(data)) => data.into_tensor(datatype, input.shape),
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(DecodeError::Invalid(format!(
                        "input '{name}' says binary_data_size {size} but only {} binary bytes remain",
                        binary.len()
                    )));
                }
                HostTensor::new(datatype, input.shape, binary.split_to(size))
            }
        }
        .map_err(|e| format!("input '{name}': {e}"))?;
        inputs.push((name, tensor));
    }
    if !binary.is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} bytes of binary data follow the JSON header that no input claims",
            binary.len()
        )));
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

/// Where the cut `data` arrays are: the original body and, per input, its array's range.
type CutData<'a> = (&'a [u8], &'a [Option<Range<usize>>]);

/// Reads the request object from `json`, which is the body or, with `cut`, its envelope.
fn parse_request(
    json: &[u8],
    limits: &DecodeLimits,
    cut: Option<CutData<'_>>,
) -> Result<RequestJson, serde_json::Error> {
    let mut parser = serde_json::Deserializer::from_slice(json);
    let request = RequestSeed { limits, cut }.deserialize(&mut parser)?;
    parser.end()?;
    Ok(request)
}

/// Reads the request object with `inputs` bounded by the limits as they are read.
struct RequestSeed<'a> {
    limits: &'a DecodeLimits,
    cut: Option<CutData<'a>>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = RequestJson;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RequestJson, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = RequestJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an inference request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestJson, A::Error> {
        let mut id = None;
        let mut parameters = None;
        let mut inputs = None;
        let mut outputs = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "id" if id.is_some() => return Err(de::Error::duplicate_field("id")),
                "id" => id = Some(map.next_value::<Option<String>>()?),
                "parameters" if parameters.is_some() => {
                    return Err(de::Error::duplicate_field("parameters"));
                }
                "parameters" => parameters = Some(map.next_value()?),
                "inputs" if inputs.is_some() => return Err(de::Error::duplicate_field("inputs")),
                "inputs" => {
                    inputs = Some(map.next_value_seed(InputsSeed {
                        limits: self.limits,
                        cut: self.cut,
                    })?);
                }
                "outputs" if outputs.is_some() => {
                    return Err(de::Error::duplicate_field("outputs"));
                }
                "outputs" => outputs = Some(map.next_value::<Option<Vec<OutputJson>>>()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(RequestJson {
            id: id.flatten(),
            parameters: parameters.unwrap_or_default(),
            inputs: inputs.ok_or_else(|| de::Error::missing_field("inputs"))?,
            outputs: outputs.flatten(),
        })
    }
}

/// The `inputs` array, refused at the first input past `max_inputs` or over `max_tensor_rank`.
struct InputsSeed<'a> {
    limits: &'a DecodeLimits,
    cut: Option<CutData<'a>>,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_> {
    type Value = Vec<InputJson>;
    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<InputJson>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_> {
    type Value = Vec<InputJson>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of inputs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<InputJson>, A::Error> {
        let InputsSeed { limits, cut } = self;
        let mut inputs = Vec::new();
        loop {
            let cut = cut.and_then(|(json, data)| {
                let range = data.get(inputs.len())?.clone()?;
                Some((json, range))
            });
            let Some(input) = seq.next_element_seed(InputSeed { cut })? else {
                break;
            };
            if inputs.len() == limits.max_inputs {
                return Err(de::Error::custom(format!(
                    "more than server.max_inputs ({}) inputs",
                    limits.max_inputs
                )));
            }
            if input.shape.len() > limits.max_tensor_rank {
                return Err(de::Error::custom(format!(
                    "input '{}': shape has {} dimensions, more than server.max_tensor_rank ({})",
                    input.name,
                    input.shape.len(),
                    limits.max_tensor_rank
                )));
            }
            inputs.push(input);
        }
        Ok(inputs)
    }
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

/// One input object. Its `data` is read by serde_json, or, when the scan cut this input's array
/// out of the envelope (`cut`: the body and the array's range), parsed from the body once the
/// object's `datatype` and `shape` are known, wherever they stand in it.
struct InputSeed<'a> {
    cut: Option<(&'a [u8], Range<usize>)>,
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_> {
    type Value = InputJson;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<InputJson, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_> {
    type Value = InputJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an input object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputJson, A::Error> {
        let mut name = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut datatype: Option<String> = None;
        let mut parameters = None;
        let mut data = None;
        let mut cut_seen = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "name" if name.is_some() => return Err(de::Error::duplicate_field("name")),
                "name" => name = Some(map.next_value()?),
                "shape" if shape.is_some() => return Err(de::Error::duplicate_field("shape")),
                "shape" => shape = Some(map.next_value()?),
                "datatype" if datatype.is_some() => {
                    return Err(de::Error::duplicate_field("datatype"));
                }
                "datatype" => datatype = Some(map.next_value()?),
                "parameters" if parameters.is_some() => {
                    return Err(de::Error::duplicate_field("parameters"));
                }
                "parameters" => parameters = Some(map.next_value()?),
                "data" if data.is_some() || cut_seen => {
                    return Err(de::Error::duplicate_field("data"));
                }
                "data" if self.cut.is_some() => {
                    // The scan put `null` where this array stood.
                    if map.next_value::<Option<de::IgnoredAny>>()?.is_some() {
                        return Err(de::Error::custom("data where a cut array should be"));
                    }
                    cut_seen = true;
                }
                "data" => {
                    data = map
                        .next_value::<Option<FlatData>>()?
                        .map(|d| InputData::Scalars(d.0))
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        if let (Some((json, range)), true) = (self.cut, cut_seen) {
            // An unknown datatype is refused later, but only a well-formed array gets that far,
            // as in the body read whole.
            let datatype = datatype
                .as_deref()
                .and_then(DataType::parse)
                .unwrap_or(DataType::Fp64);
            // No element is shorter than two bytes (`0,`), so a shape cannot reserve more than
            // the text could fill.
            let elements = shape.as_deref().and_then(element_count).unwrap_or(0);
            let mut tensor = TensorBuilder::new(datatype, elements.min(range.len() / 2 + 1));
            json_data::parse(&json[range], &mut tensor)
                .ok_or_else(|| de::Error::custom("malformed data"))?;
            data = Some(InputData::Parsed(tensor));
        }
        Ok(InputJson {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters: parameters.unwrap_or_default(),
            data,
        })
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

    fn limits() -> DecodeLimits {
        DecodeLimits::from(&crate::config::ServerConfig::default())
    }

    fn decode_with(json: &str, limits: &DecodeLimits) -> Result<InferRequest, DecodeError> {
        decode_request(&Bytes::copy_from_slice(json.as_bytes()), None, limits)
    }

    fn decode(json: &str) -> Result<InferRequest, String> {
        decode_with(json, &limits()).map_err(|e| match e {
            DecodeError::Invalid(m) => m,
            DecodeError::TooLarge(m) => panic!("413 for {json}: {m}"),
        })
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

    /// `data` is parsed once its input's `datatype` and `shape` are known, so where they stand in
    /// the object makes no difference to the tensor or the error.
    #[test]
    fn data_before_or_after_its_datatype_decodes_and_fails_alike() {
        let cases = [
            ("[2,2]", "FP32", "[[1,2.5],[3,-4e-3]]"),
            ("[3]", "INT64", "[9223372036854775807,-1,0]"),
            ("[2]", "BOOL", "[true,0]"),
            ("[2]", "UINT8", "[255,256]"),
            ("[2]", "INT32", "[1,1.5]"),
            ("[2]", "FP32", "[true,1]"),
            ("[3]", "FP64", "[1,2]"),
            ("[-1]", "FP32", "[1]"),
            ("[1]", "FP32", "null"),
        ];
        for (shape, datatype, data) in cases {
            let first = decode(&format!(
                r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#
            ));
            let last = decode(&format!(
                r#"{{"inputs":[{{"data":{data},"name":"x","shape":{shape},"datatype":"{datatype}"}}]}}"#
            ));
            assert_eq!(
                first.as_ref().map(|r| &r.inputs),
                last.as_ref().map(|r| &r.inputs),
                "{datatype} {shape} {data}"
            );
        }
        let error = |data: &str| {
            decode(&format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"UINT8","data":{data}}}]}}"#
            ))
        };
        assert_eq!(
            error("[1,256]").unwrap_err(),
            "input 'x': data[1]: 256 does not fit UINT8"
        );
        assert_eq!(
            error("[1,256,3]").unwrap_err(),
            "input 'x': shape [2] needs 2 elements, but data has 3"
        );
    }

    #[test]
    fn binary_inputs_are_taken_in_order_after_the_header() {
        let header = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}},{"name":"b","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        body.extend_from_slice(&[1, 0]);
        let request = decode_request(&body.into(), Some(header.len()), &limits()).unwrap();
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
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
                "string data (BYTES tensors) is not supported",
            ),
            (r#"{"inputs": [}"#, "invalid inference request JSON"),
        ];
        for (json, expected) in cases {
            let err = decode(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    /// A request whose `parameters` hold a value nested `depth` levels deep in all.
    fn nested(depth: usize) -> String {
        let inner = depth - 2;
        format!(
            r#"{{"parameters":{{"p":{}{}}},"inputs":[]}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    }

    #[test]
    fn nesting_is_limited_by_max_json_depth_and_strings_do_not_count() {
        let tight = DecodeLimits {
            max_json_depth: 5,
            ..limits()
        };
        assert!(decode_with(&nested(5), &tight).is_ok());
        assert_eq!(
            decode_with(&nested(6), &tight).unwrap_err(),
            DecodeError::Invalid(
                "invalid inference request JSON: nested deeper than server.max_json_depth (5 levels)"
                    .into()
            )
        );
        let nested_data = r#"{"id":"[[[[[[\"[[[","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[[2]]}]}"#;
        assert!(decode_with(nested_data, &tight).is_ok());
        // The deepest setting allowed is one serde_json itself accepts.
        let deepest = DecodeLimits {
            max_json_depth: 127,
            ..limits()
        };
        assert!(decode_with(&nested(127), &deepest).is_ok());
    }

    #[test]
    fn inputs_and_rank_are_limited_as_they_are_read() {
        let input = r#"{"name":"x","shape":[1,1,1],"datatype":"FP32","data":[1]}"#;
        let three = format!(r#"{{"inputs":[{input},{input},{input}]}}"#);
        let limited = DecodeLimits {
            max_inputs: 2,
            max_tensor_rank: 3,
            ..limits()
        };
        let err = decode_with(&three, &limited).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Invalid(m) if m.contains("more than server.max_inputs (2) inputs")),
            "{err:?}"
        );
        let flat = DecodeLimits {
            max_tensor_rank: 2,
            ..limits()
        };
        let err = decode_with(&three, &flat).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Invalid(m) if m.contains("input 'x': shape has 3 dimensions, more than server.max_tensor_rank (2)")),
            "{err:?}"
        );
        assert_eq!(decode(&three).unwrap().inputs.len(), 3);
    }

    #[test]
    fn a_header_length_over_the_limit_is_a_413() {
        let header = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        let small = DecodeLimits {
            max_header_bytes: header.len() - 1,
            ..limits()
        };
        assert_eq!(
            decode_request(&body.clone().into(), Some(header.len()), &small).unwrap_err(),
            DecodeError::TooLarge(format!(
                "Inference-Header-Content-Length is {}, more than \
                 server.max_inference_header_bytes ({})",
                header.len(),
                header.len() - 1
            ))
        );
        assert!(decode_request(&body.into(), Some(header.len()), &limits()).is_ok());
    }

    #[test]
    fn the_request_object_is_read_strictly() {
        let cases = [
            (r#"{"id":"1"}"#, "missing field `inputs`"),
            (r#"{"inputs":[],"inputs":[]}"#, "duplicate field `inputs`"),
            (r#"{"inputs":[]} {}"#, "trailing characters"),
            (r#"{"inputs":{}}"#, "expected an array of inputs"),
            (r#"[]"#, "expected an inference request object"),
        ];
        for (json, expected) in cases {
            let err = decode(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let request = decode(r#"{"id":null,"x":[{}],"outputs":null,"inputs":[]}"#).unwrap();
        assert!(request.id.is_none() && request.outputs.is_none());
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
