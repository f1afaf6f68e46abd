//! Sources whose columns are fixed by what the connector reads (Sparkplug metrics, Modbus tags):
//! a declared column must be one of them, with its type.

use crate::payload::RowLayout;
use datafusion::arrow::datatypes::DataType;

use vibelux_interfaces::options::OptionError;
use vibelux_interfaces::options::Options;

/// Every declared column must be one the connector fills, with its type; the event time is
/// `ts`.
pub fn check(
    options: &Options,
    layout: &RowLayout,
    connector: &str,
    columns: &[(&str, DataType)],
) -> Result<(), OptionError> {
    let available = || {
        columns
            .iter()
            .map(|(name, kind)| format!("{name} {}", sql_type_name(kind)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for field in layout.schema.fields() {
        let name = field.name().to_ascii_lowercase();
        match columns.iter().find(|(column, _)| *column == name) {
            None => {
                return Err(OptionError::new(
                    options.statement,
                    format!(
                        "column `{}` is not filled by a '{connector}' source; its columns are: {}",
                        field.name(),
                        available()
                    ),
                ));
            }
            Some((column, kind)) if !same_type(kind, field.data_type()) => {
                return Err(OptionError::new(
                    options.statement,
                    format!(
                        "column `{column}` of a '{connector}' source is {}, declared {}",
                        sql_type_name(kind),
                        sql_type_name(field.data_type())
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(column) = layout.event_time_column {
        let name = layout.schema.field(column).name();
        if !name.eq_ignore_ascii_case("ts") {
            return Err(OptionError::new(
                options.statement,
                format!("the watermark of a '{connector}' source is on `ts`, not `{name}`"),
            ));
        }
    }
    Ok(())
}

fn same_type(expected: &DataType, declared: &DataType) -> bool {
    match (expected, declared) {
        (DataType::Timestamp(_, _), DataType::Timestamp(_, _)) => true,
        _ => expected == declared,
    }
}

fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 => "TEXT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Date32 => "DATE".into(),
        other => other.to_string(),
    }
}
