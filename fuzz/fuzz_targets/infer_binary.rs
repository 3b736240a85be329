//! Feeds arbitrary bytes to the binary tensor extension's decoder: the first four bytes (little
//! endian) are the `Inference-Header-Content-Length`, the rest is the body. A decoded request's
//! tensors must account for every byte after the JSON header; anything else is a 400 or 413.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torchwatch::fuzzing::{decode_inference_request, default_decode_limits};
use torchwatch::tensor::element_count;

fuzz_target!(|data: &[u8]| {
    let Some((length, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let header_length = u32::from_le_bytes(*length) as usize;
    let limits = default_decode_limits();
    match decode_inference_request(body, Some(header_length), &limits) {
        Ok(inputs) => {
            assert!(header_length <= body.len());
            let mut binary = 0;
            for (_, tensor) in &inputs {
                let count = element_count(&tensor.shape).expect("a decoded shape has a size");
                assert_eq!(tensor.data.len(), count * tensor.datatype.size());
                binary += tensor.data.len();
            }
            // JSON `data` inputs may sit beside binary ones, so binary bytes are at most these.
            assert!(binary >= body.len() - header_length);
        }
        Err((too_large, message)) => {
            assert_eq!(
                too_large,
                header_length > limits.max_header_bytes,
                "{message}"
            );
        }
    }
});
