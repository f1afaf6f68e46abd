//! The `WITH (…)` options of a source or sink, as the planner hands them to its connector.
//!
//! Every option keeps where it was written, so a connector's complaint points at the value at
//! fault (`3:41: option `speed`: expected 'realtime', 'max' or a factor such as '60x'`). Every
//! option is either understood or refused by name: a misspelt `zones_per_rom` must not be
//! ignored silently, so a connector takes what it understands and [`Options::finish`] refuses the
//! rest, listing what is known.

use std::collections::BTreeMap;
use std::time::Duration;

/// A position in the SQL text (1-based; line 0 when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// A problem with a connector's options, where it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OptionError {
    pub position: Position,
    pub message: String,
}

impl OptionError {
    pub fn new(position: Position, message: impl Into<String>) -> Self {
        OptionError {
            position,
            message: message.into(),
        }
    }
}

/// One `key = 'value'` as written.
#[derive(Debug, Clone)]
pub struct OptionEntry {
    pub key: String,
    pub key_position: Position,
    pub value: String,
    pub value_position: Position,
}

/// Options not yet consumed, by lower-case name: value, value position, name position.
#[derive(Debug)]
pub struct Options {
    entries: BTreeMap<String, (String, Position, Position)>,
    /// Where the statement starts: problems that are no one option's fault point here.
    pub statement: Position,
}

impl Options {
    pub fn new(
        entries: impl IntoIterator<Item = OptionEntry>,
        statement: Position,
    ) -> Result<Self, OptionError> {
        let mut map = BTreeMap::new();
        for entry in entries {
            let key = entry.key.to_ascii_lowercase();
            if map
                .insert(
                    key.clone(),
                    (entry.value, entry.value_position, entry.key_position),
                )
                .is_some()
            {
                return Err(OptionError::new(
                    entry.value_position,
                    format!("option `{key}` is given twice"),
                ));
            }
        }
        Ok(Options {
            entries: map,
            statement,
        })
    }

    /// A problem with the statement as a whole.
    pub fn error(&self, message: impl Into<String>) -> OptionError {
        OptionError::new(self.statement, message)
    }

    pub fn take(&mut self, key: &str) -> Option<(String, Position)> {
        self.entries
            .remove(key)
            .map(|(value, position, _)| (value, position))
    }

    /// Whether `key` was given (and not taken yet).
    pub fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The value of `key`, if given, without taking it.
    pub fn peek(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(value, _, _)| value.as_str())
    }

    /// Every `prefix<name> = 'value'` option, as (name, value): settings passed through.
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let keys: Vec<String> = self
            .entries
            .keys()
            .filter(|key| key.starts_with(prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                let (value, _) = self.take(&key)?;
                Some((key[prefix.len()..].to_string(), value))
            })
            .collect()
    }

    pub fn required(&mut self, key: &str, what: &str) -> Result<(String, Position), OptionError> {
        self.take(key)
            .ok_or_else(|| self.error(format!("{what} needs the option `{key}`")))
    }

    /// The value of `key` read by `parse`; a problem names the option.
    pub fn parsed<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, OptionError> {
        match self.take(key) {
            None => Ok(None),
            Some((value, position)) => parse(&value).map(Some).map_err(|problem| {
                OptionError::new(position, format!("option `{key}`: {problem}"))
            }),
        }
    }

    pub fn duration(&mut self, key: &str) -> Result<Option<Duration>, OptionError> {
        self.parsed(key, parse_duration)
    }

    pub fn count(&mut self, key: &str) -> Result<Option<usize>, OptionError> {
        self.parsed(key, |text| {
            text.trim()
                .parse::<usize>()
                .map_err(|_| format!("expected a whole number, found {text:?}"))
        })
    }

    pub fn flag(&mut self, key: &str) -> Result<Option<bool>, OptionError> {
        self.parsed(key, parse_bool)
    }

    /// Refuses whatever options are left, naming them and the ones that are understood.
    pub fn finish(self, what: &str, known: &[&str]) -> Result<(), OptionError> {
        match self.entries.into_iter().next() {
            None => Ok(()),
            Some((key, (_, _, position))) => Err(OptionError::new(
                position,
                format!(
                    "unknown option `{key}` for {what}; known options: {}",
                    known.join(", ")
                ),
            )),
        }
    }
}

/// Parses `5 seconds`, `1 minute`, `500ms`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("expected a duration such as '5 seconds' or '500ms', found {text:?}"))
}

/// A duration in nanoseconds, saturating.
pub fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Reads `true`/`false` (and `on`/`off`, `yes`/`no`, `1`/`0`).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("expected true or false, found {text:?}")),
    }
}

/// Parses `64MB`, `1 GB`, `512kb`, `1000` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale: usize = match unit.trim() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        _ => return Err(format!("expected a size such as '128MB', found {text:?}")),
    };
    number
        .parse::<usize>()
        .map(|n| n * scale)
        .map_err(|_| format!("expected a size such as '128MB', found {text:?}"))
}

/// "a 'file' source", "an 'mqtt' sink": for messages.
pub fn connector_kind(connector: &str, kind: &str) -> String {
    let spoken_vowel = connector.starts_with(['a', 'e', 'i', 'o', 'u']) || connector == "mqtt";
    let article = if spoken_vowel { "an" } else { "a" };
    format!("{article} '{connector}' {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, column: u64) -> OptionEntry {
        OptionEntry {
            key: key.to_string(),
            key_position: Position { line: 1, column },
            value: value.to_string(),
            value_position: Position {
                line: 1,
                column: column + 10,
            },
        }
    }

    #[test]
    fn durations_read_the_way_people_write_them() {
        assert_eq!(parse_duration("5 seconds").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1 minute").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_read_with_units() {
        assert_eq!(parse_size("128MB").unwrap(), 128 << 20);
        assert_eq!(parse_size("1 gb").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn problems_point_at_the_value_and_leftovers_at_their_name() {
        let mut options = Options::new(
            [entry("rooms", "many", 5), entry("zones_per_rom", "2", 30)],
            Position::default(),
        )
        .unwrap();
        let error = options.count("rooms").unwrap_err();
        assert_eq!(error.position.column, 15);
        assert!(error.message.contains("option `rooms`"), "{error}");
        let error = options.finish("a source", &["rooms"]).unwrap_err();
        assert_eq!(error.position.column, 30);
        assert!(error.message.contains("unknown option `zones_per_rom`"));
    }

    #[test]
    fn an_option_given_twice_is_refused() {
        let twice = Options::new(
            [entry("a", "1", 1), entry("A", "2", 20)],
            Position::default(),
        );
        assert!(twice.unwrap_err().message.contains("given twice"));
    }
}
