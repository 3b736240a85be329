//! The fast path for the `data` arrays of a JSON inference request, which hold nearly all of its
//! bytes (a 64×64 RGB image is 12,288 numbers). serde_json spends most of a request's decoding on
//! them, one visitor call per number; here a scan of the body cuts each input's `data` array out
//! (serde_json then reads an envelope of a few hundred bytes), and once the input's datatype is
//! known the array is parsed straight into the tensor's bytes, FP32 rounded once from the decimal
//! text.
//!
//! It only takes what it is sure of: anything unusual (escaped keys, a duplicate `data`, strings or
//! `null` in an array, a number outside JSON's grammar) sends the whole body down the general
//! serde_json path, which gives the errors, with their line and column, for malformed input.

use std::ops::Range;

use crate::tensor::{DataType, Scalar, TensorBuilder};

/// A request body with the `data` arrays of its inputs cut out.
pub(super) struct Cut {
    /// The JSON with `null` where each cut array stood.
    pub envelope: Vec<u8>,
    /// Per input, in order: where its `data` array is in the original body, when it was cut.
    pub data: Vec<Option<Range<usize>>>,
}

/// What the scan found.
pub(super) enum Scan {
    /// Arrays and objects nest deeper than the limit.
    TooDeep,
    /// Nothing to cut, or something the fast path does not take: decode the body as it is.
    Whole,
    /// The body with its data arrays cut out.
    Cut(Cut),
}

/// Scans `json` once: checks the nesting limit (strings skipped) and finds each `inputs[i].data`
/// array of numbers and booleans.
pub(super) fn scan(json: &[u8], max_depth: usize) -> Scan {
    let mut depth = 0usize;
    // The last key read in the root object was `inputs`.
    let mut after_inputs_key = false;
    // The array open at depth 2 is the root's `inputs`.
    let mut in_inputs = false;
    // The object open at depth 3 is this input of `inputs`.
    let mut input: Option<usize> = None;
    let mut inputs = 0usize;
    let mut data: Vec<Option<Range<usize>>> = Vec::new();
    let mut fast = true;
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => {
                let Some(end) = string_end(json, at) else {
                    // An unterminated string: the parser reports it.
                    return Scan::Whole;
                };
                let text = &json[at + 1..end - 1];
                let colon = skip_whitespace(json, end);
                at = end;
                if json.get(colon) != Some(&b':') {
                    continue;
                }
                at = colon + 1;
                match (depth, input) {
                    (1, _) => after_inputs_key = text == b"inputs",
                    (3, Some(index)) if fast && text == b"data" => {
                        let start = skip_whitespace(json, at);
                        if json.get(start) != Some(&b'[') {
                            continue;
                        }
                        let Some((end, deepest)) = array_end(json, start) else {
                            fast = false;
                            continue;
                        };
                        if depth + deepest > max_depth {
                            return Scan::TooDeep;
                        }
                        if data.len() <= index {
                            data.resize(index + 1, None);
                        }
                        if data[index].replace(start..end).is_some() {
                            // A duplicate `data`: the parser refuses it.
                            fast = false;
                        }
                        at = end;
                    }
                    _ => {}
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Scan::TooDeep;
                }
                match depth {
                    2 => in_inputs = byte == b'[' && after_inputs_key,
                    3 if in_inputs && byte == b'{' => {
                        input = Some(inputs);
                        inputs += 1;
                    }
                    _ => {}
                }
            }
            // Unbalanced closers are the parser's to report.
            b']' | b'}' => {
                match depth {
                    2 => in_inputs = false,
                    3 => input = None,
                    _ => {}
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        at += 1;
    }
    if !fast || data.iter().all(Option::is_none) {
        return Scan::Whole;
    }
    let mut envelope = Vec::with_capacity(
        json.len() - data.iter().flatten().map(|r| r.len()).sum::<usize>() + 4 * data.len(),
    );
    let mut copied = 0;
    for range in data.iter().flatten() {
        envelope.extend_from_slice(&json[copied..range.start]);
        envelope.extend_from_slice(b"null");
        copied = range.end;
    }
    envelope.extend_from_slice(&json[copied..]);
    data.resize(inputs, None);
    Scan::Cut(Cut { envelope, data })
}

/// The index after the closing quote of the string that opens at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match *json.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

fn skip_whitespace(json: &[u8], mut at: usize) -> usize {
    while matches!(json.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The index after the `]` that closes the array opening at `start`, and how deep arrays nest in
/// it (1 for a flat one); `None` when it holds a string, whose brackets and quotes the scan would
/// misread, or is not closed. Anything else that is no number array (`null`, an object) fails in
/// `parse`, which checks the grammar, and the body is then read whole.
fn array_end(json: &[u8], start: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    // Only brackets and quotes matter here: memchr finds them many bytes at a time.
    for offset in memchr::memchr3_iter(b'[', b']', b'"', &json[start..]) {
        match json[start + offset] {
            b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some((start + offset + 1, deepest));
                }
            }
            _ => return None,
        }
    }
    None
}

/// Parses a cut `data` array into `tensor`, flattening nested arrays row-major; `None` when the
/// text is not a JSON array of numbers and booleans, for the general path to report.
pub(super) fn parse(text: &[u8], tensor: &mut TensorBuilder) -> Option<()> {
    // What may come next: a value or the end of the array (just after `[`), a value (after `,`),
    // or a separator (after a value).
    #[derive(PartialEq)]
    enum Expect {
        ValueOrEnd,
        Value,
        Separator,
    }
    let mut expect = Expect::Value;
    let mut depth = 0usize;
    let mut at = 0;
    loop {
        at = skip_whitespace(text, at);
        let byte = *text.get(at)?;
        match (&expect, byte) {
            (Expect::Separator, b',') => {
                expect = Expect::Value;
                at += 1;
            }
            (Expect::Separator | Expect::ValueOrEnd, b']') => {
                depth -= 1;
                at += 1;
                if depth == 0 {
                    return (skip_whitespace(text, at) == text.len()).then_some(());
                }
                expect = Expect::Separator;
            }
            (Expect::Separator, _) => return None,
            (_, b'[') => {
                depth += 1;
                at += 1;
                expect = Expect::ValueOrEnd;
            }
            _ if depth == 0 => return None,
            (_, b't') if text[at..].starts_with(b"true") => {
                tensor.push(Scalar::Bool(true));
                at += 4;
                expect = Expect::Separator;
            }
            (_, b'f') if text[at..].starts_with(b"false") => {
                tensor.push(Scalar::Bool(false));
                at += 5;
                expect = Expect::Separator;
            }
            (_, b'-' | b'0'..=b'9') => {
                at = push_number(text, at, tensor)?;
                // Most of an array is the run `n, n, n`: it is read here without a trip round
                // the state machine per number.
                while text.get(at) == Some(&b',') {
                    let next = skip_whitespace(text, at + 1);
                    if !matches!(text.get(next), Some(b'-' | b'0'..=b'9')) {
                        break;
                    }
                    at = push_number(text, next, tensor)?;
                }
                expect = Expect::Separator;
            }
            _ => return None,
        }
    }
}

/// Reads the number at `at` into `tensor` and returns the index after it; `None` when it is not
/// a JSON number or past FP64's range.
fn push_number(text: &[u8], at: usize, tensor: &mut TensorBuilder) -> Option<usize> {
    let number = Number::read(text, at)?;
    let token = &text[at..number.end];
    match tensor.datatype() {
        DataType::Fp32 => match number.fp32(token) {
            Some(value) if value.is_finite() => tensor.push_f32(value),
            // Past f32's range: refused by the builder, naming the number.
            _ => tensor.push(number.scalar(token)?),
        },
        DataType::Fp64 => {
            let value = number.exact::<f64>().or_else(|| std_parse(token))?;
            // Past f64's range, which serde_json refuses as JSON.
            if !value.is_finite() {
                return None;
            }
            tensor.push_f64(value);
        }
        _ => tensor.push(number.scalar(token)?),
    }
    Some(number.end)
}

fn std_parse<F: std::str::FromStr>(token: &[u8]) -> Option<F> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// A JSON number's parts as read from its text.
struct Number {
    negative: bool,
    /// The decimal digits as an integer; meaningful only when `exact_digits`.
    significand: u64,
    /// Written with at most 19 digits, so `significand` holds them all.
    exact_digits: bool,
    /// The power of ten to apply, fraction digits and exponent together.
    exponent: i64,
    /// Written with a fraction or an exponent.
    float: bool,
    /// The index after its last character.
    end: usize,
}

impl Number {
    /// Reads the number at `start` by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?`; `None` for anything else.
    fn read(text: &[u8], start: usize) -> Option<Number> {
        let negative = text[start] == b'-';
        let integer_start = start + usize::from(negative);
        // Wrapping: past 19 digits the value is not used (`exact_digits` is false), and the
        // loop stays one add and one multiply per digit.
        let mut significand = 0u64;
        let mut digits = |mut at: usize| {
            while let Some(&byte @ b'0'..=b'9') = text.get(at) {
                significand = significand
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(byte - b'0'));
                at += 1;
            }
            at
        };
        let mut at = digits(integer_start);
        let integer_digits = at - integer_start;
        if integer_digits == 0 || (integer_digits > 1 && text[integer_start] == b'0') {
            return None;
        }
        let mut fraction_digits = 0;
        let mut float = false;
        if text.get(at) == Some(&b'.') {
            float = true;
            let fraction_start = at + 1;
            at = digits(fraction_start);
            fraction_digits = at - fraction_start;
            if fraction_digits == 0 {
                return None;
            }
        }
        let mut exponent = -(fraction_digits as i64);
        if matches!(text.get(at), Some(b'e' | b'E')) {
            float = true;
            at += 1;
            let negative_exponent = text.get(at) == Some(&b'-');
            at += usize::from(matches!(text.get(at), Some(b'+' | b'-')));
            if !matches!(text.get(at), Some(b'0'..=b'9')) {
                return None;
            }
            let mut written = 0i64;
            while let Some(&byte @ b'0'..=b'9') = text.get(at) {
                written = (written * 10 + i64::from(byte - b'0')).min(1 << 40);
                at += 1;
            }
            exponent += if negative_exponent { -written } else { written };
        }
        Some(Number {
            negative,
            significand,
            exact_digits: integer_digits + fraction_digits <= 19,
            exponent,
            float,
            end: at,
        })
    }

    /// Clinger's fast path: a significand and a power of ten both exact in the type give the
    /// correctly rounded value in one operation; `None` leaves the number to the standard parser.
    fn exact<F: ExactFloat>(&self) -> Option<F> {
        if !self.exact_digits || self.significand > 1 << F::SIGNIFICAND_BITS {
            return None;
        }
        let power = *F::POWERS.get(usize::try_from(self.exponent.unsigned_abs()).ok()?)?;
        let significand = F::from_significand(self.significand);
        let magnitude = if self.exponent < 0 {
            significand / power
        } else {
            significand * power
        };
        Some(if self.negative { -magnitude } else { magnitude })
    }

    /// The nearest f32 to the decimal, rounded once. Clients that write FP32 tensors from
    /// Python floats (`tolist()`) send up to 17 digits, past f32's exact fast path; f64's takes
    /// significands up to 2^53 (most of 16 digits), and rounding its result again to f32 is
    /// exact unless it landed precisely halfway between two f32s, where the decimal may lie on
    /// either side: those, and what neither fast path takes, go to the standard parser.
    fn fp32(&self, token: &[u8]) -> Option<f32> {
        if let Some(value) = self.exact::<f32>() {
            return Some(value);
        }
        const DROPPED_BITS: u32 = f64::MANTISSA_DIGITS - f32::MANTISSA_DIGITS;
        let halfway =
            |wide: f64| wide.to_bits() & ((1 << DROPPED_BITS) - 1) == 1 << (DROPPED_BITS - 1);
        match self.exact::<f64>() {
            Some(wide)
                if (f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&wide.abs())
                    && !halfway(wide) =>
            {
                Some(wide as f32)
            }
            _ => std_parse(token),
        }
    }

    /// The number as serde_json hands it over: an integer when written as one and it fits i64 or
    /// u64, otherwise a float.
    fn scalar(&self, token: &[u8]) -> Option<Scalar> {
        // serde_json reads `-0` as the float -0.0, which no integer type takes.
        let minus_zero = self.negative && self.exact_digits && self.significand == 0;
        if !(self.float || minus_zero) {
            if let Some(int) = std_parse::<i64>(token) {
                return Some(Scalar::Int(int));
            }
            if let Some(uint) = std_parse::<u64>(token) {
                return Some(Scalar::UInt(uint));
            }
        }
        // Past f64's range serde_json refuses the JSON.
        std_parse::<f64>(token)
            .filter(|value| value.is_finite())
            .map(Scalar::Float)
    }
}

/// FP32 and FP64 as Clinger's fast path needs them.
trait ExactFloat:
    Copy
    + 'static
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// Bits of the significand, the implicit one included.
    const SIGNIFICAND_BITS: u32;
    /// The powers of ten that are exact in the type.
    const POWERS: &'static [Self];
    /// A significand no larger than `2^SIGNIFICAND_BITS`, exactly.
    fn from_significand(significand: u64) -> Self;
}

impl ExactFloat for f32 {
    const SIGNIFICAND_BITS: u32 = 24;
    const POWERS: &'static [f32] = &[1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
    fn from_significand(significand: u64) -> f32 {
        significand as f32
    }
}

impl ExactFloat for f64 {
    const SIGNIFICAND_BITS: u32 = 53;
    const POWERS: &'static [f64] = &[
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    fn from_significand(significand: u64) -> f64 {
        significand as f64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::http::protocol::{DecodeError, DecodeLimits, decode_request};

    fn limits() -> DecodeLimits {
        DecodeLimits::from(&crate::config::ServerConfig::default())
    }

    /// The decoded inputs, or the error without serde_json's position, which moves when a key is
    /// spelled differently.
    fn decode(json: &str) -> Result<Vec<(String, crate::tensor::HostTensor)>, String> {
        decode_request(
            &bytes::Bytes::copy_from_slice(json.as_bytes()),
            None,
            &limits(),
        )
        .map(|request| request.inputs)
        .map_err(|error| {
            let (DecodeError::Invalid(message) | DecodeError::TooLarge(message)) = error;
            message
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    }

    /// The same request with `data` written `d\u0061ta`: serde_json reads the same key, the scan
    /// does not recognise it, so the body is read whole.
    fn whole(json: &str) -> String {
        json.replace("\"data\"", "\"d\\u0061ta\"")
    }

    fn element() -> impl Strategy<Value = String> {
        prop_oneof![
            (-300i64..300).prop_map(|i| i.to_string()),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            (0u64..10_000_000, 0u32..8, -12i32..12).prop_map(|(digits, point, exponent)| {
                let digits = digits.to_string();
                let point = (point as usize).min(digits.len() - 1);
                let (whole, fraction) = digits.split_at(digits.len() - point);
                let fraction = if fraction.is_empty() {
                    String::new()
                } else {
                    format!(".{fraction}")
                };
                format!("{whole}{fraction}e{exponent}")
            }),
            Just("true".to_owned()),
            Just("-0".to_owned()),
            Just("1e39".to_owned()),
            Just("1e400".to_owned()),
            Just("01".to_owned()),
            Just("1.".to_owned()),
            Just("null".to_owned()),
            Just("\"a\"".to_owned()),
        ]
    }

    fn input() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "FP32", "FP64", "INT32", "INT64", "UINT8", "BOOL", "FP16",
            ]),
            prop::collection::vec(element(), 0..7),
            1usize..4,
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec!["", " ", "\n\t"]),
        )
            .prop_map(|(datatype, elements, rows, nested, data_first, space)| {
                let columns = elements.len().div_ceil(rows).max(1);
                let data = if nested {
                    let rows: Vec<String> = elements
                        .chunks(columns)
                        .map(|row| format!("[{}]", row.join(&format!(",{space}"))))
                        .collect();
                    format!("[{space}{}{space}]", rows.join(","))
                } else {
                    format!("[{}]", elements.join(&format!("{space},")))
                };
                let shape = if nested {
                    format!("[{},{columns}]", elements.len().div_ceil(columns))
                } else {
                    format!("[{}]", elements.len())
                };
                let described = format!(r#""name":"x","shape":{shape},"datatype":"{datatype}""#);
                if data_first {
                    format!(r#"{{"data":{space}{data},{described}}}"#)
                } else {
                    format!(r#"{{{described},"data":{data}}}"#)
                }
            })
    }

    proptest! {
        #[test]
        fn the_cut_arrays_decode_as_the_whole_body_does(inputs in prop::collection::vec(input(), 1..3)) {
            let json = format!(r#"{{"id":"r","inputs":[{}]}}"#, inputs.join(","));
            prop_assert_eq!(decode(&json), decode(&whole(&json)), "{}", json);
        }
    }

    #[test]
    fn only_the_data_of_inputs_is_cut() {
        let json = br#"{"parameters":{"data":[1]},"inputs":[{"name":"x","data":[[1, 2]],"p":{"data":[3]}}],"outputs":[{"data":[4]}]}"#;
        let Scan::Cut(cut) = scan(json, 10) else {
            panic!("nothing cut");
        };
        assert_eq!(
            String::from_utf8(cut.envelope).unwrap(),
            r#"{"parameters":{"data":[1]},"inputs":[{"name":"x","data":null,"p":{"data":[3]}}],"outputs":[{"data":[4]}]}"#
        );
        let start = json.windows(8).position(|w| w == b"[[1, 2]]").unwrap();
        assert_eq!(cut.data, [Some(start..start + 8)]);
        assert!(matches!(scan(json, 4), Scan::TooDeep));
        assert!(matches!(
            scan(br#"{"inputs":[{"data":["a"]}]}"#, 10),
            Scan::Whole
        ));
    }

    /// The FP32 value the fast path reads from one number.
    fn fp32(token: &str) -> f32 {
        let mut tensor = TensorBuilder::new(DataType::Fp32, 1);
        parse(format!("[{token}]").as_bytes(), &mut tensor).unwrap();
        f32::from_le_bytes(tensor.finish(vec![1]).unwrap().data[..].try_into().unwrap())
    }

    proptest! {
        #[test]
        fn fp32_is_the_nearest_to_any_decimal(
            significand in 0u64..100_000_000_000_000_000,
            point in 0usize..18,
            exponent in prop::option::of(-50i32..50),
            negative in any::<bool>(),
        ) {
            let digits = significand.to_string();
            let point = point.min(digits.len() - 1);
            let (whole, fraction) = digits.split_at(digits.len() - point);
            let mut token = format!("{}{whole}", if negative { "-" } else { "" });
            if !fraction.is_empty() {
                token = format!("{token}.{fraction}");
            }
            if let Some(exponent) = exponent {
                token = format!("{token}e{exponent}");
            }
            let expected: f32 = token.parse().unwrap();
            prop_assume!(expected.is_finite());
            prop_assert_eq!(fp32(&token).to_bits(), expected.to_bits(), "{}", token);
        }

        #[test]
        fn fp32_written_as_a_python_float_reads_back(value in any::<f32>()) {
            prop_assume!(value.is_finite());
            // What `tensor.tolist()` and `json.dumps` send: the shortest f64 text of the value.
            let token = f64::from(value).to_string();
            prop_assert_eq!(fp32(&token).to_bits(), value.to_bits(), "{}", token);
        }
    }

    #[test]
    fn fp32_halfway_after_the_f64_fast_path_is_rounded_from_the_decimal() {
        // 16 digits, so f64's fast path takes it, and its nearest f64 is exactly halfway
        // between two f32s; the decimal itself is just below, so the lower one is nearest.
        let token = "0.7524273097515106";
        assert_eq!(fp32(token).to_bits(), 0x3f40_9f13);
        assert_eq!(fp32(token), token.parse::<f32>().unwrap());
        assert_ne!(fp32(token), token.parse::<f64>().unwrap() as f32);
    }

    #[test]
    fn fp32_is_rounded_once_from_the_decimal() {
        // Just above halfway between two f32: rounded to f64 first it lands on the halfway point
        // and then goes to even, down; rounded once it goes up.
        let token = "1.0000000596046448";
        let value = fp32(token);
        assert_eq!(value, token.parse::<f32>().unwrap());
        assert_ne!(value, token.parse::<f64>().unwrap() as f32);
    }
}
