//! Kubernetes resource quantities (`500m`, `2`, `512Mi`, `1.5Gi`, `1e3`) as exact numbers, so the
//! operator can compare a sandbox's resources with its configured maximums.
//!
//! Values are held in nano-units (`1` = 1_000_000_000) in an `i128`: that covers every quantity the
//! API server accepts for CPU, memory and storage without rounding surprises (a fraction below one
//! nano-unit rounds up, as the API server does).

use std::fmt;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "{0:?} is not a quantity (expected a number with an optional suffix such as 500m, 2, 512Mi)"
    )]
    Syntax(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Smallest memory a Sandbox may ask for, exclusive (the CRD's rule on `spec.resources.memory`:
/// `quantity(self).isGreaterThan(quantity('4Mi'))`).
pub const MIN_MEMORY: &str = "4Mi";

/// An exact quantity in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// Nano-units.
    pub fn nanos(self) -> i128 {
        self.0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}n", self.0)
    }
}

/// Parses a Kubernetes quantity.
pub fn parse(input: &str) -> Result<Amount, QuantityError> {
    let syntax = || QuantityError::Syntax(input.to_string());
    let overflow = || QuantityError::Overflow(input.to_string());
    let s = input.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(syntax());
    }
    // Mantissa as an integer, with `frac_part.len()` implied decimal places.
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(overflow());
    }
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| syntax())?
    };
    let (binary_pow, mut exp10): (u32, i32) = match suffix {
        "Ki" => (1, 0),
        "Mi" => (2, 0),
        "Gi" => (3, 0),
        "Ti" => (4, 0),
        "Pi" => (5, 0),
        "Ei" => (6, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| syntax())?;
            if !(-40..=40).contains(&e) {
                return Err(overflow());
            }
            (0, e)
        }
        _ => return Err(syntax()),
    };
    for _ in 0..binary_pow {
        value = value.checked_mul(1024).ok_or_else(overflow)?;
    }
    // nano-units: shift by 9 decimal places, minus the fraction's places.
    exp10 += 9 - i32::try_from(frac_part.len()).map_err(|_| overflow())?;
    if exp10 >= 0 {
        let scale = 10i128.checked_pow(exp10 as u32).ok_or_else(overflow)?;
        value = value.checked_mul(scale).ok_or_else(overflow)?;
    } else {
        let scale = 10i128.checked_pow((-exp10) as u32).ok_or_else(overflow)?;
        // Round up, like the API server does for precision it cannot hold.
        value = value / scale + i128::from(value % scale != 0);
    }
    Ok(Amount(if negative { -value } else { value }))
}

/// True for the syntax of a Kubernetes quantity (`500m`, `2`, `1.5Gi`, `1e3`; no sign but `+`,
/// an exponent of at most three digits): what the gateway accepts before the CRD's
/// `isQuantity` sees it.
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti"
        | "Pi" | "Ei" => true,
        _ => {
            let Some(exp) = suffix.strip_prefix(['e', 'E']) else {
                return false;
            };
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.len() <= 3 && exp.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> i128 {
        parse(s).unwrap().nanos()
    }

    #[test]
    fn parses_cpu_and_memory_forms() {
        assert_eq!(n("1"), 1_000_000_000);
        assert_eq!(n("500m"), 500_000_000);
        assert_eq!(n("0.5"), 500_000_000);
        assert_eq!(n("2"), 2 * n("1000m"));
        assert_eq!(n("512Mi"), 512 * 1024 * 1024 * 1_000_000_000);
        assert_eq!(n("1.5Gi"), 3 * 512 * 1024 * 1024 * 1_000_000_000);
        assert_eq!(n("1k"), 1000 * 1_000_000_000);
        assert_eq!(n("1e3"), n("1k"));
        assert_eq!(n("1E-3"), n("1m"));
        assert_eq!(n("100n"), 100);
        assert_eq!(n("0.1n"), 1, "rounds up below a nano-unit");
        assert_eq!(n("-1"), -1_000_000_000);
        assert!(parse("8Ei").is_ok());
        assert!(n("4Gi") > n("4G"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.2.3", "1Ki2", "Mi", ".", "1 Gi", "1x", "1e", "1e999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            parse("9999999999999999999999999999999Ei"),
            Err(QuantityError::Overflow(_))
        ));
    }
}
