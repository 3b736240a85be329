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
    // The decimal exponent of the shortest digits, as Go decides: log10 rounds up next to powers
    // of ten (999999.9999999999 is 6.0 in f64) and would pick the wrong form.
    let shortest = format!("{v:e}");
    let exp: i32 = shortest
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
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
        assert_eq!(verb_v(999999.9999999999), "999999.9999999999");
        assert_eq!(verb_v(9.999999999999999e-5), "9.999999999999999e-05");
        assert_eq!(verb_v(0.0001), "0.0001");
        assert_eq!(verb_v(-123456.7), "-123456.7");
    }

    /// Go's rule, laid out by hand: take the shortest digits (Rust's and Go's shortest
    /// algorithms agree on them; the digits are not what is tested here) and use the exponent
    /// form when their decimal exponent is below -4 or at least 6 (strconv's `%g` with
    /// shortest precision, which `%v` is), else place the decimal point among them.
    fn go_rule(v: f64) -> String {
        let digits = format!("{v:e}");
        let (mantissa, exp) = digits.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        if !(-4..6).contains(&exp) {
            return go_exponent(&digits, false);
        }
        let negative = mantissa.starts_with('-');
        let significant: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        let point = exp + 1;
        let body = if point <= 0 {
            format!("0.{}{significant}", "0".repeat((-point) as usize))
        } else if point as usize >= significant.len() {
            format!(
                "{significant}{}",
                "0".repeat(point as usize - significant.len())
            )
        } else {
            let (int, frac) = significant.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{}{body}", if negative { "-" } else { "" })
    }

    #[test]
    fn verb_v_follows_gos_rule_next_to_powers_of_ten_and_elsewhere() {
        let mut values = Vec::new();
        for k in -12..=24 {
            let p = 10f64.powi(k);
            // The neighbours of each power of ten, where a log10 shortcut goes wrong.
            let (mut below, mut above) = (p, p);
            for _ in 0..20 {
                below = below.next_down();
                above = above.next_up();
                values.extend([below, above, -below]);
            }
            values.extend([p, p * 0.99999995, p * 1.0000001, p * 9.9999999]);
        }
        // And a few thousand spread over the magnitudes (a fixed LCG, so the run is repeatable).
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64 * 10.0;
            let exp = ((state >> 3) % 30) as i32 - 12;
            values.push(mantissa * 10f64.powi(exp));
        }
        let wrong: Vec<(f64, String, String)> = values
            .iter()
            .filter(|v| **v != 0.0)
            .map(|&v| (v, verb_v(v), go_rule(v)))
            .filter(|(_, ours, go)| ours != go)
            .collect();
        assert!(values.len() > 4000, "{}", values.len());
        assert!(
            wrong.is_empty(),
            "{} differ, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}
