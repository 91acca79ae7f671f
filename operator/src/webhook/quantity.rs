//! Just enough of Kubernetes' `resource.Quantity` to compare storage sizes.
//!
//! Accepts the canonical forms the API server stores: an optional decimal number with an
//! optional binary (`Ki`…`Ei`), decimal (`k`, `M`…`E`, `m`) or exponent (`e3`, `E3`) suffix.

/// A parsed quantity as an exact rational `mantissa × 2^bin × 10^dec` reduced to a comparable
/// number of milli-units (saturating at `i128::MAX`, far beyond any real volume).
pub fn to_milli_units(text: &str) -> Option<i128> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let (binary_exp, decimal_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            (0, exp.parse::<i32>().ok().filter(|e| e.abs() <= 30)?)
        }
    };
    // digits × 10^(decimal_exp + 3 − fraction length) × 2^binary_exp
    let digits: String = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        digits.get(..digits.len().min(30))?.parse().ok()?
    };
    let dropped = digits.len().saturating_sub(30) as i32;
    let mut exp10 = decimal_exp + 3 - fraction.len() as i32 + dropped;
    value = value.saturating_mul(1i128 << binary_exp);
    while exp10 > 0 {
        value = value.saturating_mul(10);
        exp10 -= 1;
    }
    while exp10 < 0 {
        value /= 10;
        exp10 += 1;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::to_milli_units as q;

    #[test]
    fn parses_binary_decimal_and_exponent_forms() {
        assert_eq!(q("5Gi"), Some(5 * (1 << 30) * 1000));
        assert_eq!(q("1Ki"), Some(1024 * 1000));
        assert_eq!(q("1k"), Some(1_000_000));
        assert_eq!(q("1.5Gi"), Some(3 * (1 << 29) * 1000));
        assert_eq!(q("500m"), Some(500));
        assert_eq!(q("1e3"), Some(1_000_000));
        assert_eq!(q("10"), Some(10_000));
        assert_eq!(q("0"), Some(0));
        assert_eq!(q("-1"), Some(-1000));
    }

    #[test]
    fn compares_across_units() {
        assert!(q("5Gi") > q("5G"));
        assert!(q("5120Mi") == q("5Gi"));
        assert!(q("4Gi") < q("5Gi"));
        assert!(q("1Ti") > q("999Gi"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Gi", "5 Gi", "5GB", "abc", "1.2.3", "5e999"] {
            assert_eq!(q(bad), None, "{bad}");
        }
    }
}
