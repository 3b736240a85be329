//! Entry points for the fuzz targets in `fuzz/` and the decoding benchmark, which drive decoders
//! that are private to their modules. Nothing else uses this; the rest of what they call is
//! public already.

use std::path::Path;

use bytes::Bytes;

use crate::config::ServerConfig;
use crate::http::protocol::{self, DecodeError, DecodeLimits};
use crate::tensor::HostTensor;

/// The decode limits of a default `server:` section.
pub fn default_decode_limits() -> DecodeLimits {
    DecodeLimits::from(&ServerConfig::default())
}

/// Decodes an inference request body as `POST .../infer` does, with `limits`; returns its inputs,
/// or the error and whether it is a 413.
pub fn decode_inference_request(
    body: &[u8],
    header_length: Option<usize>,
    limits: &DecodeLimits,
) -> Result<Vec<(String, HostTensor)>, (bool, String)> {
    protocol::decode_request(&Bytes::copy_from_slice(body), header_length, limits)
        .map(|request| request.inputs)
        .map_err(|e| match e {
            DecodeError::Invalid(message) => (false, message),
            DecodeError::TooLarge(message) => (true, message),
        })
}

/// Encodes a JSON inference answer with one FP32 output of shape `[1, values.len()]`, as
/// `POST .../infer` does; returns the body.
pub fn encode_inference_answer(values: &[f32]) -> Bytes {
    let tensor = HostTensor::new(
        crate::tensor::DataType::Fp32,
        vec![1, values.len() as i64],
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
    .expect("the shape matches the values");
    let output = protocol::ResponseOutput {
        name: "output__0",
        tensor: &tensor,
        binary: false,
    };
    protocol::encode_response("model", "1", None, &[output]).body
}

/// Parses and validates a rule file's text as `rules.files` loads it; returns its rule count.
pub fn parse_rule_file(text: &str) -> Result<usize, Vec<String>> {
    crate::rules::parse_file(text, Path::new("fuzz.yml"))
        .map(|(groups, _)| groups.iter().map(|g| g.rules.len()).sum())
        .map_err(|e| e.0)
}

/// Parses and validates a policy file's text as `policies.files` loads it; returns its policy
/// count.
pub fn parse_policy_file(text: &str) -> Result<usize, Vec<String>> {
    crate::policy::parse_file(text, Path::new("fuzz.yml"))
        .map(|policies| policies.scale.len() + policies.cost.len())
}
