//! Text built from a row: `{column}` placeholders filled with the row's values, for MQTT topics
//! and Kafka keys.

use datafusion::arrow::datatypes::Schema;
use vibelux_operators::row::{Datum, Row};

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Column(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowTemplate {
    pieces: Vec<Piece>,
}

impl RowTemplate {
    /// Parses `text` with `{column}` placeholders naming columns of `schema` (case-insensitive).
    pub fn parse(text: &str, schema: &Schema) -> Result<RowTemplate, String> {
        if text.trim().is_empty() {
            return Err("the template is empty".to_string());
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?;
            let name = rest[open + 1..open + close].trim();
            let column = schema
                .fields()
                .iter()
                .position(|field| field.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("placeholder `{{{name}}}` names no column"))?;
            pieces.push(Piece::Column(column));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in {text:?}"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(RowTemplate { pieces })
    }

    /// The text for `row`; each value passes through `clean` (null is written `null`).
    pub fn render_with(&self, row: &Row, clean: impl Fn(char) -> char) -> String {
        let mut text = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(literal) => text.push_str(literal),
                Piece::Column(column) => match &row[*column] {
                    Datum::Null => text.push_str("null"),
                    value => text.extend(value.to_string().chars().map(&clean)),
                },
            }
        }
        text
    }

    pub fn render(&self, row: &Row) -> String {
        self.render_with(row, |c| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};

    #[test]
    fn placeholders_take_the_rows_values() {
        let schema = Schema::new(vec![
            Field::new("room", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]);
        let template = RowTemplate::parse("{room}/{N}", &schema).unwrap();
        let row = vec![Datum::Utf8("r/1".into()), Datum::Null];
        assert_eq!(template.render(&row), "r/1/null");
        assert!(RowTemplate::parse("{room", &schema).is_err());
        assert!(RowTemplate::parse("room}", &schema).is_err());
        assert!(
            RowTemplate::parse("{floor}", &schema)
                .unwrap_err()
                .contains("no column")
        );
    }
}
