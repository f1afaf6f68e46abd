//! Tag maps: which registers of a PLC hold which values, and how to read them.
//!
//! The vocabulary is Telegraf's Modbus plugin and Neuron's tag addressing, so a map written
//! for either reads naturally here: a `[[tag]]` table per value with `name`, `register`
//! (`coil`, `discrete`, `holding`, `input`), `address`, `type`, `byte_order`, `scale`, `offset`,
//! `unit`, `group` and `deadband`. A file may set a device-wide `byte_order` and name poll
//! groups with their intervals under `[groups]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::safety::WriteLimits;

/// The four Modbus data areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Register {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl Register {
    /// Coils and discrete inputs are bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Register::Coil | Register::Discrete)
    }

    /// Only coils and holding registers can be written.
    pub fn is_writable(self) -> bool {
        matches!(self, Register::Coil | Register::Holding)
    }

    /// The area as a phrase: "a coil", "an input register".
    pub fn described(self) -> &'static str {
        match self {
            Register::Coil => "a coil",
            Register::Discrete => "a discrete input",
            Register::Holding => "a holding register",
            Register::Input => "an input register",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Register::Coil => "coil",
            Register::Discrete => "discrete",
            Register::Holding => "holding",
            Register::Input => "input",
        }
    }
}

/// A tag's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Bool,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float32,
    Float64,
    /// Text in this many registers (two characters each).
    String(u16),
}

impl ValueType {
    pub fn parse(text: &str) -> Result<ValueType, String> {
        let lower = text.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "bool" | "bit" | "boolean" => ValueType::Bool,
            "int16" => ValueType::Int16,
            "uint16" => ValueType::UInt16,
            "int32" => ValueType::Int32,
            "uint32" => ValueType::UInt32,
            "int64" => ValueType::Int64,
            "uint64" => ValueType::UInt64,
            "float32" | "float" => ValueType::Float32,
            "float64" | "double" => ValueType::Float64,
            other => {
                let registers = other
                    .strip_prefix("string(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|n| n.trim().parse::<u16>().ok())
                    .filter(|n| (1..=125).contains(n));
                match registers {
                    Some(n) => ValueType::String(n),
                    None => {
                        return Err(format!(
                            "unknown type {text:?}: use bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string(N) for N registers"
                        ));
                    }
                }
            }
        })
    }

    /// How many registers (or bits) the value spans.
    pub fn width(self) -> u16 {
        match self {
            ValueType::Bool | ValueType::Int16 | ValueType::UInt16 => 1,
            ValueType::Int32 | ValueType::UInt32 | ValueType::Float32 => 2,
            ValueType::Int64 | ValueType::UInt64 | ValueType::Float64 => 4,
            ValueType::String(registers) => registers,
        }
    }

    pub fn name(self) -> String {
        match self {
            ValueType::Bool => "bool".into(),
            ValueType::Int16 => "int16".into(),
            ValueType::UInt16 => "uint16".into(),
            ValueType::Int32 => "int32".into(),
            ValueType::UInt32 => "uint32".into(),
            ValueType::Int64 => "int64".into(),
            ValueType::UInt64 => "uint64".into(),
            ValueType::Float32 => "float32".into(),
            ValueType::Float64 => "float64".into(),
            ValueType::String(n) => format!("string({n})"),
        }
    }
}

/// The order of a multi-register value's bytes, as the letters of a big-endian `ABCD` appear
/// on the wire: `ABCD` big-endian, `DCBA` little-endian, `BADC` bytes swapped within each
/// register, `CDAB` registers swapped. Longer values extend the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByteOrder {
    #[default]
    Abcd,
    Dcba,
    Badc,
    Cdab,
}

impl ByteOrder {
    pub fn parse(text: &str) -> Result<ByteOrder, String> {
        Ok(match text.trim().to_ascii_uppercase().as_str() {
            "ABCD" | "AB" | "BIG" => ByteOrder::Abcd,
            "DCBA" | "BA" | "LITTLE" => ByteOrder::Dcba,
            "BADC" => ByteOrder::Badc,
            "CDAB" => ByteOrder::Cdab,
            _ => {
                return Err(format!(
                    "unknown byte order {text:?}: use ABCD, DCBA, BADC or CDAB"
                ));
            }
        })
    }

    /// Whether the two bytes of each register are swapped.
    pub fn swaps_bytes(self) -> bool {
        matches!(self, ByteOrder::Dcba | ByteOrder::Badc)
    }

    /// Whether the registers come least significant first.
    pub fn swaps_words(self) -> bool {
        matches!(self, ByteOrder::Dcba | ByteOrder::Cdab)
    }
}

/// One tag, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    pub register: Register,
    pub address: u16,
    pub value_type: ValueType,
    pub byte_order: ByteOrder,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    pub group: String,
    /// Report only changes larger than this (report by exception).
    pub deadband: Option<f64>,
    /// What writes to it must respect.
    pub limits: WriteLimits,
}

impl Tag {
    /// The engineering value of a raw number: `raw × scale + offset`.
    pub fn engineering(&self, raw: f64) -> f64 {
        raw * self.scale + self.offset
    }
}

/// A device's tags and poll groups.
#[derive(Debug, Clone, PartialEq)]
pub struct TagMap {
    pub tags: Vec<Tag>,
    /// Poll groups by name, with their intervals; every tag's group is here.
    pub groups: BTreeMap<String, Duration>,
}

/// The group of tags that name none.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTag {
    name: String,
    register: Register,
    address: u32,
    #[serde(rename = "type")]
    value_type: Option<String>,
    byte_order: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    unit: Option<String>,
    group: Option<String>,
    deadband: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    max_writes_per_minute: Option<u32>,
    min_on: Option<String>,
    min_off: Option<String>,
    #[serde(default)]
    interlock: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    byte_order: Option<String>,
    #[serde(default)]
    groups: BTreeMap<String, String>,
    #[serde(default)]
    tag: Vec<FileTag>,
}

impl TagMap {
    /// Reads a TOML tag map; `interval` is the poll interval of groups the map does not time.
    pub fn load(path: &Path, interval: Duration) -> Result<TagMap, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("reading tag map {}: {error}", path.display()))?;
        TagMap::parse(&text, interval).map_err(|problem| format!("{}: {problem}", path.display()))
    }

    /// Parses a TOML tag map (a file's contents, or the `tags` option written inline).
    /// Shifts addresses written 1-based (as many PLC manuals number coils and registers) to
    /// the 0-based addresses on the wire.
    pub fn one_based(mut self) -> Result<TagMap, String> {
        for tag in &mut self.tags {
            tag.address = tag.address.checked_sub(1).ok_or_else(|| {
                format!(
                    "tag `{}`: address 0 does not exist when addresses start at 1",
                    tag.name
                )
            })?;
        }
        Ok(self)
    }

    pub fn parse(text: &str, interval: Duration) -> Result<TagMap, String> {
        let file: File = toml::from_str(text).map_err(|error| {
            let message = error.message().trim();
            match error.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                    format!("line {line}, column {column}: {message}")
                }
                None => message.to_string(),
            }
        })?;
        let device_order = match &file.byte_order {
            Some(order) => ByteOrder::parse(order)?,
            None => ByteOrder::Abcd,
        };
        let mut groups = BTreeMap::new();
        for (name, every) in &file.groups {
            let every = humantime::parse_duration(every)
                .map_err(|error| format!("group `{name}`: interval {every:?}: {error}"))?;
            if every < Duration::from_millis(10) {
                return Err(format!(
                    "group `{name}`: an interval under 10 ms is too short"
                ));
            }
            groups.insert(name.clone(), every);
        }
        if file.tag.is_empty() {
            return Err("the tag map has no [[tag]] entries".into());
        }
        let mut tags = Vec::with_capacity(file.tag.len());
        let mut names = std::collections::HashSet::new();
        for entry in file.tag {
            let tag = Tag::check(entry, device_order)?;
            if !names.insert(tag.name.to_ascii_lowercase()) {
                return Err(format!("tag `{}` is defined twice", tag.name));
            }
            groups.entry(tag.group.clone()).or_insert(interval);
            tags.push(tag);
        }
        for tag in &tags {
            for other in &tag.limits.interlocks {
                if !tags.iter().any(|candidate| candidate.name == *other) {
                    return Err(format!(
                        "tag `{}`: interlock `{other}` is not a tag of this map",
                        tag.name
                    ));
                }
            }
        }
        Ok(TagMap { tags, groups })
    }
}

impl Tag {
    fn check(entry: FileTag, device_order: ByteOrder) -> Result<Tag, String> {
        let name = entry.name.trim().to_string();
        if name.is_empty() {
            return Err("a tag has an empty name".into());
        }
        let here = |problem: String| format!("tag `{name}`: {problem}");
        let value_type = match &entry.value_type {
            Some(text) => ValueType::parse(text).map_err(here)?,
            None if entry.register.is_bits() => ValueType::Bool,
            None => ValueType::UInt16,
        };
        if entry.register.is_bits() && value_type != ValueType::Bool {
            return Err(here(format!(
                "{} holds one bit: its type is bool, not {}",
                entry.register.described(),
                value_type.name()
            )));
        }
        let last = entry.address + u32::from(value_type.width()) - 1;
        if last > u32::from(u16::MAX) {
            return Err(here(format!(
                "address {} with {} registers runs past 65535",
                entry.address,
                value_type.width()
            )));
        }
        let byte_order = match &entry.byte_order {
            Some(text) => ByteOrder::parse(text).map_err(here)?,
            None => device_order,
        };
        let scale = entry.scale.unwrap_or(1.0);
        if !scale.is_finite() || scale == 0.0 {
            return Err(here(format!(
                "scale must be a non-zero number, found {scale}"
            )));
        }
        if let Some(deadband) = entry.deadband
            && !(deadband.is_finite() && deadband >= 0.0)
        {
            return Err(here(format!(
                "deadband must be 0 or more, found {deadband}"
            )));
        }
        let duration = |text: &Option<String>, key: &str| -> Result<Option<Duration>, String> {
            text.as_deref()
                .map(|text| {
                    humantime::parse_duration(text)
                        .map_err(|error| here(format!("{key} {text:?}: {error}")))
                })
                .transpose()
        };
        let limits = WriteLimits {
            min: entry.min,
            max: entry.max,
            max_writes_per_minute: entry.max_writes_per_minute,
            min_on: duration(&entry.min_on, "min_on")?,
            min_off: duration(&entry.min_off, "min_off")?,
            interlocks: entry.interlock,
        };
        if let (Some(min), Some(max)) = (limits.min, limits.max)
            && min > max
        {
            return Err(here(format!("min {min} is above max {max}")));
        }
        Ok(Tag {
            limits,
            register: entry.register,
            address: entry.address as u16,
            value_type,
            byte_order,
            scale,
            offset: entry.offset.unwrap_or(0.0),
            unit: entry.unit,
            group: entry.group.unwrap_or_else(|| DEFAULT_GROUP.to_string()),
            deadband: entry.deadband,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
        byte_order = "CDAB"
        [groups]
        fast = "500ms"

        [[tag]]
        name = "supply_temp"
        register = "holding"
        address = 100
        type = "float32"
        scale = 0.1
        unit = "°C"
        group = "fast"
        deadband = 0.2

        [[tag]]
        name = "fan_on"
        register = "coil"
        address = 3

        [[tag]]
        name = "model"
        register = "input"
        address = 10
        type = "string(4)"
        byte_order = "ABCD"
    "#;

    #[test]
    fn a_map_reads_with_device_defaults_and_groups() {
        let map = TagMap::parse(MAP, Duration::from_secs(1)).unwrap();
        let temp = &map.tags[0];
        assert_eq!(temp.value_type, ValueType::Float32);
        assert_eq!(temp.byte_order, ByteOrder::Cdab, "the device default");
        assert_eq!(temp.deadband, Some(0.2));
        assert_eq!(map.tags[1].value_type, ValueType::Bool);
        assert_eq!(map.tags[2].value_type, ValueType::String(4));
        assert_eq!(map.tags[2].byte_order, ByteOrder::Abcd);
        assert_eq!(map.groups["fast"], Duration::from_millis(500));
        assert_eq!(map.groups[DEFAULT_GROUP], Duration::from_secs(1));
    }

    #[test]
    fn one_based_addresses_shift_to_the_wire() {
        let map = TagMap::parse(MAP, Duration::from_secs(1)).unwrap();
        let shifted = map.clone().one_based().unwrap();
        assert_eq!(shifted.tags[0].address, 99);
        let zero = "[[tag]]\nname = 'z'\nregister = 'coil'\naddress = 0";
        let problem = TagMap::parse(zero, Duration::from_secs(1))
            .unwrap()
            .one_based()
            .unwrap_err();
        assert!(problem.contains("address 0 does not exist"), "{problem}");
    }

    #[test]
    fn mistakes_name_the_tag_and_the_problem() {
        let bad = |tag: &str| {
            TagMap::parse(&format!("[[tag]]\n{tag}"), Duration::from_secs(1)).unwrap_err()
        };
        assert!(
            bad("name='a'\nregister='coil'\naddress=1\ntype='int16'")
                .contains("tag `a`: a coil holds one bit")
        );
        assert!(
            bad("name='b'\nregister='holding'\naddress=65535\ntype='int32'")
                .contains("runs past 65535")
        );
        assert!(
            bad("name='c'\nregister='holding'\naddress=1\ntype='int24'").contains("unknown type")
        );
        assert!(bad("name='d'\nregister='memory'\naddress=1").contains("unknown variant `memory`"));
        assert!(
            bad("name='e'\nregister='holding'\naddress=1\nscal=2").contains("unknown field `scal`")
        );
        assert!(
            bad("name='f'\nregister='holding'\naddress=1\nbyte_order='ACBD'")
                .contains("unknown byte order")
        );
    }
}
