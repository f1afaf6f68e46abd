//! The Sparkplug B payload, as protobuf messages (prost), with the field numbers of the
//! specification's `sparkplug_b.proto`.
//!
//! Only what a host application reads is declared: the payload's timestamp, sequence number and
//! metrics; a metric's identity, flags, properties and scalar value. Datasets, templates and
//! metadata are left undeclared, so protobuf skips them and such a metric arrives without a
//! value (its row says which type it was).

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    #[prost(uint32, tag = "10")]
    Int(u32),
    #[prost(uint64, tag = "11")]
    Long(u64),
    #[prost(float, tag = "12")]
    Float(f32),
    #[prost(double, tag = "13")]
    Double(f64),
    #[prost(bool, tag = "14")]
    Boolean(bool),
    #[prost(string, tag = "15")]
    String(String),
    #[prost(bytes = "vec", tag = "16")]
    Bytes(Vec<u8>),
}

#[derive(Clone, PartialEq, Message)]
pub struct PropertySet {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PropertyValue {
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    #[prost(oneof = "PropertyScalar", tags = "3, 4, 5, 6, 7, 8")]
    pub value: Option<PropertyScalar>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyScalar {
    #[prost(uint32, tag = "3")]
    Int(u32),
    #[prost(uint64, tag = "4")]
    Long(u64),
    #[prost(float, tag = "5")]
    Float(f32),
    #[prost(double, tag = "6")]
    Double(f64),
    #[prost(bool, tag = "7")]
    Boolean(bool),
    #[prost(string, tag = "8")]
    String(String),
}

/// Sparkplug's data types (the `datatype` of a metric), by their numbers in the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataType {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float,
    Double,
    Boolean,
    String,
    DateTime,
    Text,
    Uuid,
    DataSet,
    Bytes,
    File,
    Template,
    /// Arrays and anything newer than this host: kept by name, not decoded.
    Other(u32),
}

impl DataType {
    pub fn from_number(number: u32) -> DataType {
        match number {
            1 => DataType::Int8,
            2 => DataType::Int16,
            3 => DataType::Int32,
            4 => DataType::Int64,
            5 => DataType::UInt8,
            6 => DataType::UInt16,
            7 => DataType::UInt32,
            8 => DataType::UInt64,
            9 => DataType::Float,
            10 => DataType::Double,
            11 => DataType::Boolean,
            12 => DataType::String,
            13 => DataType::DateTime,
            14 => DataType::Text,
            15 => DataType::Uuid,
            16 => DataType::DataSet,
            17 => DataType::Bytes,
            18 => DataType::File,
            19 => DataType::Template,
            other => DataType::Other(other),
        }
    }

    /// The name the specification gives the type (what the `datatype` column holds).
    pub fn name(self) -> String {
        match self {
            DataType::Int8 => "Int8",
            DataType::Int16 => "Int16",
            DataType::Int32 => "Int32",
            DataType::Int64 => "Int64",
            DataType::UInt8 => "UInt8",
            DataType::UInt16 => "UInt16",
            DataType::UInt32 => "UInt32",
            DataType::UInt64 => "UInt64",
            DataType::Float => "Float",
            DataType::Double => "Double",
            DataType::Boolean => "Boolean",
            DataType::String => "String",
            DataType::DateTime => "DateTime",
            DataType::Text => "Text",
            DataType::Uuid => "UUID",
            DataType::DataSet => "DataSet",
            DataType::Bytes => "Bytes",
            DataType::File => "File",
            DataType::Template => "Template",
            DataType::Other(number) => return format!("type {number}"),
        }
        .to_string()
    }

    /// The type a value's protobuf field implies, for metrics sent without a datatype by a
    /// node whose birth the host has not seen.
    pub fn implied_by(value: &MetricValue) -> DataType {
        match value {
            MetricValue::Int(_) => DataType::UInt32,
            MetricValue::Long(_) => DataType::UInt64,
            MetricValue::Float(_) => DataType::Float,
            MetricValue::Double(_) => DataType::Double,
            MetricValue::Boolean(_) => DataType::Boolean,
            MetricValue::String(_) => DataType::String,
            MetricValue::Bytes(_) => DataType::Bytes,
        }
    }
}

/// A decoded metric value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    Text(String),
    /// Milliseconds since the epoch.
    DateTime(i64),
    /// Bytes, files and types not decoded: their size.
    Opaque(usize),
}

impl Value {
    /// The value as a number: booleans are 1 and 0, date-times their milliseconds; text and
    /// opaque values have none.
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Number(number) => Some(*number),
            Value::Boolean(flag) => Some(if *flag { 1.0 } else { 0.0 }),
            Value::DateTime(millis) => Some(*millis as f64),
            Value::Text(_) | Value::Opaque(_) => None,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Value::Number(number) => number.to_string(),
            Value::Boolean(flag) => flag.to_string(),
            Value::Text(text) => text.clone(),
            Value::DateTime(millis) => millis.to_string(),
            Value::Opaque(size) => format!("<{size} bytes>"),
        }
    }
}

/// Decodes a metric's value by its type. Signed integers travel as unsigned two's complement,
/// either at their own width or sign-extended to the field's; keeping the low bits and
/// extending their sign reads both.
pub fn decode_value(datatype: DataType, value: &MetricValue) -> Result<Value, String> {
    let mismatch = || {
        format!(
            "a {} metric carries a {} value",
            datatype.name(),
            DataType::implied_by(value).name()
        )
    };
    Ok(match (datatype, value) {
        (DataType::Int8, MetricValue::Int(v)) => Value::Number(f64::from(*v as u8 as i8)),
        (DataType::Int16, MetricValue::Int(v)) => Value::Number(f64::from(*v as u16 as i16)),
        (DataType::Int32, MetricValue::Int(v)) => Value::Number(f64::from(*v as i32)),
        (DataType::UInt8 | DataType::UInt16 | DataType::UInt32, MetricValue::Int(v)) => {
            Value::Number(f64::from(*v))
        }
        (DataType::Int64, MetricValue::Long(v)) => Value::Number(*v as i64 as f64),
        (DataType::UInt64 | DataType::UInt32, MetricValue::Long(v)) => Value::Number(*v as f64),
        (DataType::DateTime, MetricValue::Long(v)) => Value::DateTime(*v as i64),
        (DataType::Float, MetricValue::Float(v)) => Value::Number(f64::from(*v)),
        (DataType::Double, MetricValue::Double(v)) => Value::Number(*v),
        (DataType::Boolean, MetricValue::Boolean(v)) => Value::Boolean(*v),
        (DataType::String | DataType::Text | DataType::Uuid, MetricValue::String(v)) => {
            Value::Text(v.clone())
        }
        (_, MetricValue::Bytes(bytes)) => Value::Opaque(bytes.len()),
        (DataType::Other(_) | DataType::DataSet | DataType::Template, _) => Value::Opaque(0),
        _ => return Err(mismatch()),
    })
}

/// Reads a payload; the error names what protobuf could not make sense of.
pub fn decode_payload(bytes: &[u8]) -> Result<Payload, String> {
    Payload::decode(bytes).map_err(|error| format!("not a Sparkplug B payload: {error}"))
}

/// Encodes the rebirth command a host sends a node whose state it has lost track of.
pub fn rebirth_command(timestamp_millis: u64) -> Vec<u8> {
    Payload {
        timestamp: Some(timestamp_millis),
        metrics: vec![Metric {
            name: Some("Node Control/Rebirth".into()),
            timestamp: Some(timestamp_millis),
            datatype: Some(11),
            value: Some(MetricValue::Boolean(true)),
            ..Default::default()
        }],
        seq: None,
        uuid: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_integers_read_at_either_width() {
        let minus_one_narrow = MetricValue::Int(0xFF);
        let minus_one_wide = MetricValue::Int(u32::MAX);
        for value in [&minus_one_narrow, &minus_one_wide] {
            assert_eq!(decode_value(DataType::Int8, value), Ok(Value::Number(-1.0)));
        }
        assert_eq!(
            decode_value(DataType::Int16, &MetricValue::Int(0xFFFF_8000)),
            Ok(Value::Number(-32768.0))
        );
        assert_eq!(
            decode_value(DataType::Int64, &MetricValue::Long(u64::MAX)),
            Ok(Value::Number(-1.0))
        );
        assert_eq!(
            decode_value(DataType::UInt32, &MetricValue::Int(u32::MAX)),
            Ok(Value::Number(4_294_967_295.0))
        );
    }

    #[test]
    fn a_value_of_the_wrong_field_is_named() {
        let problem = decode_value(DataType::Float, &MetricValue::String("x".into())).unwrap_err();
        assert_eq!(problem, "a Float metric carries a String value");
    }

    #[test]
    fn the_rebirth_command_round_trips() {
        let payload = decode_payload(&rebirth_command(42)).unwrap();
        assert_eq!(payload.timestamp, Some(42));
        assert_eq!(
            payload.metrics[0].name.as_deref(),
            Some("Node Control/Rebirth")
        );
        assert_eq!(payload.metrics[0].value, Some(MetricValue::Boolean(true)));
    }
}
