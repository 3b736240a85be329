//! Feeds arbitrary bytes to the KServe V2 JSON request decoder with the default `server:` limits:
//! it must return inputs whose bytes match their shapes, or a 400 error, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torchwatch::fuzzing::{decode_inference_request, default_decode_limits};
use torchwatch::tensor::element_count;

fuzz_target!(|data: &[u8]| {
    let limits = default_decode_limits();
    match decode_inference_request(data, None, &limits) {
        Ok(inputs) => {
            assert!(inputs.len() <= limits.max_inputs);
            for (_, tensor) in &inputs {
                assert!(tensor.shape.len() <= limits.max_tensor_rank);
                let count = element_count(&tensor.shape).expect("a decoded shape has a size");
                assert_eq!(tensor.data.len(), count * tensor.datatype.size());
            }
        }
        Err((too_large, message)) => {
            // Only a declared header length can be too large, and there is none here.
            assert!(!too_large, "413 without a header length: {message}");
            assert!(!message.is_empty());
        }
    }
});
