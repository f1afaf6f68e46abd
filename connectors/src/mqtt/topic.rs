//! Topics: the subscription pattern of a source, whose `{column}` levels become columns, and
//! the topic template of a sink, filled from each row.

use datafusion::arrow::datatypes::Schema;
use vibelux_operators::row::Row;

use crate::template::RowTemplate;

#[derive(Debug, Clone, PartialEq)]
enum Level {
    Literal(String),
    /// `{name}`: any one level, whose text becomes the column's value.
    Column(usize),
    /// `+`: any one level.
    Any,
    /// `#`: any number of levels (last only).
    Rest,
}

/// A source's `topic`: an MQTT filter in which levels written `{column}` stand for `+` and
/// fill that column, e.g. `site/{room}/{zone}/{sensor_id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

fn column_named(schema: &Schema, name: &str) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|field| field.name().eq_ignore_ascii_case(name))
}

fn placeholder(level: &str) -> Option<&str> {
    level.strip_prefix('{')?.strip_suffix('}').map(str::trim)
}

impl TopicPattern {
    pub fn parse(pattern: &str, schema: &Schema) -> Result<TopicPattern, String> {
        if pattern.trim().is_empty() {
            return Err("the topic is empty".to_string());
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (position, part) in parts.iter().enumerate() {
            let level = if let Some(name) = placeholder(part) {
                let column = column_named(schema, name).ok_or_else(|| {
                    format!("topic level `{{{name}}}` names no column of the source")
                })?;
                if levels.contains(&Level::Column(column)) {
                    return Err(format!("topic level `{{{name}}}` appears twice"));
                }
                Level::Column(column)
            } else if *part == "+" {
                Level::Any
            } else if *part == "#" {
                if position + 1 != parts.len() {
                    return Err("`#` may only be the last level of a topic".to_string());
                }
                Level::Rest
            } else if part.contains(['+', '#', '{', '}']) {
                return Err(format!(
                    "topic level {part:?}: wildcards and `{{column}}` must fill a whole level"
                ));
            } else {
                Level::Literal(part.to_string())
            };
            levels.push(level);
        }
        Ok(TopicPattern { levels })
    }

    /// The filter to subscribe with (`{column}` levels become `+`).
    pub fn filter(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|level| match level {
                Level::Literal(text) => text.as_str(),
                Level::Column(_) | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect();
        parts.join("/")
    }

    /// The columns named by levels of the pattern.
    pub fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.levels.iter().filter_map(|level| match level {
            Level::Column(column) => Some(*column),
            _ => None,
        })
    }

    /// The `(column, text)` pairs a topic fills, or `None` when it does not match the pattern
    /// (a broker delivering what was not asked for, or an overlapping subscription).
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<(usize, &'t str)>> {
        let mut captures = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return Some(captures),
                Level::Literal(text) => {
                    if parts.next()? != text {
                        return None;
                    }
                }
                Level::Any => {
                    parts.next()?;
                }
                Level::Column(column) => captures.push((*column, parts.next()?)),
            }
        }
        parts.next().is_none().then_some(captures)
    }
}

/// A sink's `topic`: text with `{column}` placeholders, e.g. `alerts/{room}/{zone}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicTemplate {
    template: RowTemplate,
}

impl TopicTemplate {
    pub fn parse(template: &str, schema: &Schema) -> Result<TopicTemplate, String> {
        if template.contains(['+', '#']) {
            return Err("a topic to publish to cannot contain the wildcards `+` or `#`".into());
        }
        RowTemplate::parse(template, schema)
            .map(|template| TopicTemplate { template })
            .map_err(|problem| problem.replace("placeholder", "topic placeholder"))
    }

    /// The topic for `row`. A value's `/`, `+` and `#` become `_` so that a value cannot add
    /// levels or wildcards; a null value is written `null`.
    pub fn render(&self, row: &Row) -> String {
        self.template.render_with(row, |c| match c {
            '/' | '+' | '#' => '_',
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use vibelux_operators::row::Datum;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("room", DataType::Utf8, true),
            Field::new("zone", DataType::Utf8, true),
            Field::new("sensor_id", DataType::Utf8, true),
            Field::new("value", DataType::Float64, true),
        ])
    }

    #[test]
    fn column_levels_subscribe_as_plus_and_fill_columns() {
        let pattern = TopicPattern::parse("site/{room}/{zone}/{sensor_id}", &schema()).unwrap();
        assert_eq!(pattern.filter(), "site/+/+/+");
        assert_eq!(
            pattern.captures("site/r1/z2/s3"),
            Some(vec![(0, "r1"), (1, "z2"), (2, "s3")])
        );
        assert_eq!(pattern.captures("site/r1/z2"), None);
        assert_eq!(pattern.captures("site/r1/z2/s3/extra"), None);
        assert_eq!(pattern.captures("other/r1/z2/s3"), None);
    }

    #[test]
    fn hash_matches_the_rest_and_bad_patterns_are_refused() {
        let pattern = TopicPattern::parse("site/{room}/#", &schema()).unwrap();
        assert_eq!(pattern.filter(), "site/+/#");
        assert_eq!(pattern.captures("site/r1/a/b"), Some(vec![(0, "r1")]));
        assert!(TopicPattern::parse("site/#/x", &schema()).is_err());
        assert!(
            TopicPattern::parse("site/{nope}", &schema())
                .unwrap_err()
                .contains("no column")
        );
        assert!(TopicPattern::parse("site/a+", &schema()).is_err());
    }

    #[test]
    fn templates_fill_levels_from_the_row_and_cannot_add_levels() {
        let template = TopicTemplate::parse("alerts/{room}/{zone}", &schema()).unwrap();
        let row = vec![
            Datum::Utf8("r/1".into()),
            Datum::Null,
            Datum::Utf8("s".into()),
            Datum::Float64(1.0),
        ];
        assert_eq!(template.render(&row), "alerts/r_1/null");
        assert!(TopicTemplate::parse("alerts/#", &schema()).is_err());
        assert!(TopicTemplate::parse("alerts/{x}", &schema()).is_err());
    }
}
