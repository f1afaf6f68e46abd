//! Alarm messages: a template with `{column}` or `{column:.N}` placeholders, filled from the
//! reading that caused a transition. Floats show two decimals unless told: readings, not
//! computations.

use serde::{Deserialize, Serialize};

use crate::row::{Datum, Row};

/// A message with `{column}` or `{column:.N}` placeholders, resolved to input columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TemplatePart {
    Text(String),
    Column {
        index: usize,
        decimals: Option<usize>,
    },
}

/// Parses `template`, resolving column names with `column_of`; errors name the placeholder.
pub fn parse_template(
    template: &str,
    column_of: impl Fn(&str) -> Option<usize>,
) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in message at `{}`", &rest[open..]))?
            + open;
        let placeholder = rest[open + 1..close].trim();
        let (name, decimals) = match placeholder.split_once(":.") {
            Some((name, digits)) => {
                let decimals = digits
                    .parse::<usize>()
                    .ok()
                    .filter(|d| *d <= 9)
                    .ok_or_else(|| {
                        format!("`{{{placeholder}}}`: decimals are written `{{column:.2}}`")
                    })?;
                (name.trim(), Some(decimals))
            }
            None => (placeholder, None),
        };
        let index = column_of(name)
            .ok_or_else(|| format!("message names `{{{name}}}`, which is not a column"))?;
        parts.push(TemplatePart::Column { index, decimals });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

pub(crate) fn render(template: &[TemplatePart], row: &Row) -> String {
    let mut text = String::new();
    for part in template {
        match part {
            TemplatePart::Text(piece) => text.push_str(piece),
            TemplatePart::Column { index, decimals } => match (&row[*index], decimals) {
                (Datum::Float64(value), Some(decimals)) => {
                    text.push_str(&format!("{value:.*}", decimals))
                }
                // Two decimals unless asked: readings, not computations.
                (Datum::Float64(value), None) => {
                    let fixed = format!("{value:.2}");
                    text.push_str(fixed.trim_end_matches('0').trim_end_matches('.'));
                }
                (datum, _) => text.push_str(&datum.to_string()),
            },
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fill_placeholders_with_readable_values() {
        let columns = ["zone", "vpd"];
        let template = parse_template("VPD {vpd} kPa in {zone} ({vpd:.3})", |name| {
            columns.iter().position(|c| *c == name)
        })
        .unwrap();
        let row = vec![Datum::Utf8("z1".into()), Datum::Float64(1.61)];
        assert_eq!(render(&template, &row), "VPD 1.61 kPa in z1 (1.610)");
        let unknown = parse_template("{temp}", |_| None).unwrap_err();
        assert_eq!(unknown, "message names `{temp}`, which is not a column");
    }
}
