//! Exact decimals (`DECIMAL(p, s)`, `NUMERIC(p, s)`): a price, a dose or a calibration factor
//! that must add up to the cent, as Arrow's `Decimal128` holds them — an integer number of
//! units of 10^-scale.
//!
//! Text is parsed exactly (never through a float), rounded half away from zero to the column's
//! scale as PostgreSQL does, and refused when it has more digits before the point than the
//! precision leaves room for.

/// 10^exponent, for exponents up to 38.
pub fn power_of_ten(exponent: u32) -> i128 {
    10_i128.pow(exponent)
}

/// Parses `text` (`21.35`, `-0.5`, `+7`, `1.5e3`) into units of 10^-`scale`, for a column of
/// `precision` digits.
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let trimmed = text.trim();
    let problem = || format!("expected a decimal number, found {text:?}");
    let (mantissa, exponent) = match trimmed.find(['e', 'E']) {
        Some(at) => (
            &trimmed[..at],
            trimmed[at + 1..].parse::<i32>().map_err(|_| problem())?,
        ),
        None => (trimmed, 0),
    };
    let (negative, digits) = match mantissa.as_bytes().first() {
        Some(b'-') => (true, &mantissa[1..]),
        Some(b'+') => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(problem());
    }
    // The digits as one integer, and where the point falls: value = all × 10^(exponent − len).
    let all: String = whole.chars().chain(fraction.chars()).collect();
    let all = all.trim_start_matches('0');
    let shift = i64::from(scale) + i64::from(exponent) - fraction.len() as i64;
    let too_large = || {
        format!(
            "{text:?} does not fit DECIMAL({precision}, {scale}): at most {} digits before the point",
            i64::from(precision) - i64::from(scale)
        )
    };
    let units: i128 = if all.is_empty() {
        0
    } else if shift >= 0 {
        if all.len() as i64 + shift > i64::from(precision) {
            return Err(too_large());
        }
        all.parse::<i128>().map_err(|_| too_large())? * power_of_ten(shift as u32)
    } else {
        // Digits past the scale: round half away from zero.
        let dropped = (-shift) as usize;
        if dropped > all.len() {
            0
        } else {
            let (kept, rest) = all.split_at(all.len() - dropped);
            let kept: i128 = if kept.is_empty() {
                0
            } else {
                kept.parse().map_err(|_| too_large())?
            };
            kept + i128::from(rest.as_bytes()[0] >= b'5')
        }
    };
    if units >= power_of_ten(u32::from(precision)) {
        return Err(too_large());
    }
    Ok(if negative { -units } else { units })
}

/// The units of a float rounded to `scale` digits, for JSON numbers a decoder met as floats.
pub fn decimal_of_float(value: f64, precision: u8, scale: i8) -> Result<i128, String> {
    // The shortest text that reads back as the float: what was written, for any number a
    // person or a device writes.
    parse_decimal(&value.to_string(), precision, scale)
}

/// `units` × 10^-`scale` as text, with `scale` digits after the point (`21.50`).
pub fn format_decimal(units: i128, scale: i8) -> String {
    if scale <= 0 {
        return (units * power_of_ten(u32::from(scale.unsigned_abs()))).to_string();
    }
    let scale = scale as usize;
    let digits = units.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    let sign = if units < 0 { "-" } else { "" };
    format!("{sign}{whole}.{fraction}")
}

/// `units` at `from` digits after the point, as units at `to` digits (rounded half away from
/// zero when digits are dropped); `None` when it overflows.
pub fn rescale(units: i128, from: i8, to: i8) -> Option<i128> {
    let difference = i32::from(to) - i32::from(from);
    if difference >= 0 {
        units.checked_mul(10_i128.checked_pow(difference as u32)?)
    } else {
        let divisor = 10_i128.checked_pow(difference.unsigned_abs())?;
        let quotient = units / divisor;
        let remainder = units % divisor;
        Some(quotient + (remainder.abs() * 2 >= divisor) as i128 * units.signum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_read_exactly_and_rounded_to_the_scale() {
        assert_eq!(parse_decimal("21.35", 10, 2), Ok(2135));
        assert_eq!(parse_decimal("-0.5", 10, 2), Ok(-50));
        assert_eq!(parse_decimal("+7", 10, 2), Ok(700));
        assert_eq!(parse_decimal("1.5e3", 10, 2), Ok(150_000));
        assert_eq!(parse_decimal("0.125", 10, 2), Ok(13));
        assert_eq!(parse_decimal("-0.125", 10, 2), Ok(-13));
        assert_eq!(parse_decimal("0.0049", 10, 2), Ok(0));
        assert_eq!(parse_decimal(".5", 4, 1), Ok(5));
        assert_eq!(parse_decimal("12345678.99", 10, 2), Ok(1_234_567_899));
        assert_eq!(
            parse_decimal("123456789", 10, 2),
            Err(
                "\"123456789\" does not fit DECIMAL(10, 2): at most 8 digits before the point"
                    .into()
            )
        );
        assert!(
            parse_decimal("warm", 10, 2)
                .unwrap_err()
                .contains("expected a decimal")
        );
        assert!(parse_decimal("1.2.3", 10, 2).is_err());
        assert!(parse_decimal("", 10, 2).is_err());
        assert_eq!(decimal_of_float(0.1 + 0.2, 10, 2), Ok(30));
        assert_eq!(decimal_of_float(21.35, 10, 2), Ok(2135));
    }

    #[test]
    fn units_print_with_the_scales_digits() {
        assert_eq!(format_decimal(2135, 2), "21.35");
        assert_eq!(format_decimal(-50, 2), "-0.50");
        assert_eq!(format_decimal(5, 3), "0.005");
        assert_eq!(format_decimal(700, 0), "700");
        assert_eq!(format_decimal(7, -2), "700");
    }

    #[test]
    fn rescaling_rounds_half_away_from_zero() {
        assert_eq!(rescale(2135, 2, 4), Some(213_500));
        assert_eq!(rescale(2135, 2, 1), Some(214));
        assert_eq!(rescale(-2135, 2, 1), Some(-214));
        assert_eq!(rescale(2134, 2, 1), Some(213));
        assert_eq!(rescale(i128::MAX, 0, 2), None);
    }
}
