//! Rendering result rows as text, for the terminal and for the SQL test corpus.

use datafusion::arrow::datatypes::DataType;
use vibelux_operators::row::{Datum, Row, storage_type};

/// One value as text: floats with at most 9 decimals (so results compare across worker counts,
/// whose float sums may differ in the last bits), NULL for nulls.
pub fn datum_text(datum: &Datum) -> String {
    match datum {
        Datum::Float64(value) if value.is_finite() => {
            let rounded = format!("{value:.9}");
            let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
            if trimmed == "-0" {
                "0".to_string()
            } else {
                trimmed.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// The SQL name of a column type, as users declare it.
pub fn type_name(data_type: &DataType) -> &'static str {
    match storage_type(data_type) {
        Some(DataType::Boolean) => "BOOLEAN",
        Some(DataType::Int64) => "BIGINT",
        Some(DataType::Float64) => "DOUBLE",
        Some(DataType::Utf8) => "TEXT",
        Some(DataType::Timestamp(_, Some(_))) => "TIMESTAMPTZ",
        Some(DataType::Timestamp(_, None)) => "TIMESTAMP",
        Some(DataType::Duration(_)) => "INTERVAL",
        Some(DataType::Date32) => "DATE",
        Some(DataType::List(_)) => "ARRAY",
        _ => "NULL",
    }
}

pub fn row_text(row: &Row) -> Vec<String> {
    row.iter().map(datum_text).collect()
}

/// A plain aligned table with a header, as `vibelux` prints query results.
pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut out = line(columns);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_without_noise_digits() {
        assert_eq!(datum_text(&Datum::Float64(21.5)), "21.5");
        assert_eq!(datum_text(&Datum::Float64(0.1 + 0.2)), "0.3");
        assert_eq!(datum_text(&Datum::Float64(3.0)), "3");
    }
}
