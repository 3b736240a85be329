//! Go's float formatting, which Prometheus' outputs use: the query API's
//! values, promtool's messages and template output must read the same.

/// `NaN`, `+Inf`, `-Inf` as Go prints them; `None` for finite values.
fn special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

/// `strconv.FormatFloat(v, 'f', -1, 64)`: shortest digits, never an exponent.
pub fn plain(v: f64) -> String {
    special(v).map_or_else(|| format!("{v}"), str::to_string)
}

/// `strconv.FormatFloat(v, 'e' or 'E', -1, 64)`: shortest digits, a signed
/// exponent of at least two digits.
pub fn exponent(v: f64, upper: bool) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    go_exponent(&format!("{v:e}"), upper)
}

/// `%.{precision}e`.
pub fn exponent_fixed(v: f64, precision: usize) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    go_exponent(&format!("{v:.precision$e}"), false)
}

/// Rust's `1.5e-7` → Go's `1.5e-07` (or `1.5E-07`).
fn go_exponent(rust: &str, upper: bool) -> String {
    let e = if upper { 'E' } else { 'e' };
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}{e}{sign}{digits:0>2}")
        }
        None => rust.to_string(),
    }
}

/// `%v` (`fmt.Sprint`): shortest digits; the exponent form below 1e-4 and
/// from 1e6 (Go's `%g` decides with precision 6 when digits are shortest).
pub fn verb_v(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let exp = v.abs().log10().floor() as i32;
    if (-4..6).contains(&exp) {
        format!("{v}")
    } else {
        exponent(v, false)
    }
}

/// `%.{precision}g`.
pub fn g(v: f64, precision: usize) -> String {
    if !v.is_finite() {
        return verb_v(v);
    }
    if v == 0.0 {
        return "0".into();
    }
    let formatted = format!("{:.*e}", precision.saturating_sub(1), v);
    // Rounding may carry into the next power of ten, so read the exponent back.
    let (mantissa, exp) = formatted.split_once('e').unwrap_or((&formatted, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        go_exponent(&format!("{}e{exp}", trim_zeros(mantissa)), false)
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}"))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(plain(1e21), "1000000000000000000000");
        assert_eq!(plain(f64::NEG_INFINITY), "-Inf");
        assert_eq!(exponent(1.0, true), "1E+00");
        assert_eq!(exponent(61.0, true), "6.1E+01");
        assert_eq!(exponent(1.5e-7, false), "1.5e-07");
        assert_eq!(verb_v(0.5), "0.5");
        assert_eq!(verb_v(123456.0), "123456");
        assert_eq!(verb_v(1e6), "1e+06");
        assert_eq!(verb_v(0.00001), "1e-05");
        assert_eq!(exponent_fixed(1234.5, 2), "1.23e+03");
        assert_eq!(g(1.23456, 4), "1.235");
        assert_eq!(g(99999.0, 4), "1e+05");
        assert_eq!(g(12.5, 4), "12.5");
    }
}
