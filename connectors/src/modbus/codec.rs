//! Registers to typed values and back, by a tag's type and byte order.
//!
//! Every byte order is two independent swaps applied to big-endian registers: the two bytes
//! within each register (`BADC`, `DCBA`) and the order of the registers (`CDAB`, `DCBA`). So one
//! rule reads 16-, 32- and 64-bit values and strings alike.

use super::tags::{ByteOrder, Tag, ValueType};

/// A value as the PLC holds it, before scale and offset.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl RawValue {
    /// The number the value stands for (booleans 1 and 0); text has none.
    pub fn number(&self) -> Option<f64> {
        match self {
            RawValue::Bool(flag) => Some(if *flag { 1.0 } else { 0.0 }),
            RawValue::Int(value) => Some(*value as f64),
            RawValue::UInt(value) => Some(*value as f64),
            RawValue::Float(value) => Some(*value),
            RawValue::Text(_) => None,
        }
    }

    pub fn text(&self) -> String {
        match self {
            RawValue::Bool(flag) => flag.to_string(),
            RawValue::Int(value) => value.to_string(),
            RawValue::UInt(value) => value.to_string(),
            RawValue::Float(value) => value.to_string(),
            RawValue::Text(text) => text.clone(),
        }
    }
}

/// The bytes of registers in big-endian significance order, after undoing the byte order.
fn ordered_bytes(registers: &[u16], order: ByteOrder) -> Vec<u8> {
    let mut words: Vec<u16> = registers.to_vec();
    if order.swaps_words() {
        words.reverse();
    }
    words
        .iter()
        .flat_map(|word| {
            let [high, low] = word.to_be_bytes();
            if order.swaps_bytes() {
                [low, high]
            } else {
                [high, low]
            }
        })
        .collect()
}

/// Reads a register tag's value from exactly `tag.value_type.width()` registers.
pub fn decode_registers(tag: &Tag, registers: &[u16]) -> RawValue {
    debug_assert_eq!(registers.len(), usize::from(tag.value_type.width()));
    if let ValueType::String(_) = tag.value_type {
        // Text reads in register order; only the bytes within a register may be swapped.
        let bytes: Vec<u8> = registers
            .iter()
            .flat_map(|word| {
                let [high, low] = word.to_be_bytes();
                if tag.byte_order.swaps_bytes() {
                    [low, high]
                } else {
                    [high, low]
                }
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        return RawValue::Text(text.trim_end_matches(['\0', ' ']).to_string());
    }
    let bytes = ordered_bytes(registers, tag.byte_order);
    let array = |n: usize| -> [u8; 8] {
        let mut out = [0u8; 8];
        out[8 - n..].copy_from_slice(&bytes[..n]);
        out
    };
    match tag.value_type {
        ValueType::Bool => RawValue::Bool(registers[0] != 0),
        ValueType::Int16 => RawValue::Int(i64::from(i16::from_be_bytes([bytes[0], bytes[1]]))),
        ValueType::UInt16 => RawValue::UInt(u64::from(u16::from_be_bytes([bytes[0], bytes[1]]))),
        ValueType::Int32 => RawValue::Int(i64::from(i32::from_be_bytes(
            bytes[..4].try_into().expect("4"),
        ))),
        ValueType::UInt32 => RawValue::UInt(u64::from_be_bytes(array(4))),
        ValueType::Int64 => RawValue::Int(i64::from_be_bytes(array(8))),
        ValueType::UInt64 => RawValue::UInt(u64::from_be_bytes(array(8))),
        ValueType::Float32 => RawValue::Float(f64::from(f32::from_be_bytes(
            bytes[..4].try_into().expect("4"),
        ))),
        ValueType::Float64 => RawValue::Float(f64::from_be_bytes(array(8))),
        ValueType::String(_) => unreachable!("handled above"),
    }
}

/// The registers that hold `raw` for the tag (the inverse of [`decode_registers`]).
pub fn encode_registers(tag: &Tag, raw: &RawValue) -> Result<Vec<u16>, String> {
    let width = usize::from(tag.value_type.width());
    let big_endian: Vec<u8> = match (tag.value_type, raw) {
        (ValueType::String(_), RawValue::Text(text)) => {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.len() > width * 2 {
                return Err(format!("{text:?} is longer than {} characters", width * 2));
            }
            bytes.resize(width * 2, 0);
            let words = bytes
                .chunks(2)
                .map(|pair| {
                    let (high, low) = if tag.byte_order.swaps_bytes() {
                        (pair[1], pair[0])
                    } else {
                        (pair[0], pair[1])
                    };
                    u16::from_be_bytes([high, low])
                })
                .collect();
            return Ok(words);
        }
        (ValueType::String(_), value) => {
            // Found by fuzzing: a number sent to a text tag reached the numeric arm below.
            return Err(format!(
                "a {} tag takes text, not {}",
                tag.value_type.name(),
                value.text()
            ));
        }
        (ValueType::Bool, value) => {
            let on = value.number().ok_or("a bool tag takes true or false")? != 0.0;
            return Ok(vec![u16::from(on)]);
        }
        (value_type, value) => {
            let number = value
                .number()
                .ok_or_else(|| format!("a {} tag takes a number", value_type.name()))?;
            let integer = |low: f64, high: f64| -> Result<i128, String> {
                if number.fract() != 0.0 || number < low || number > high {
                    Err(format!("{number} does not fit a {}", value_type.name()))
                } else {
                    Ok(number as i128)
                }
            };
            match value_type {
                ValueType::Int16 => (integer(-32768.0, 32767.0)? as i16).to_be_bytes().to_vec(),
                ValueType::UInt16 => (integer(0.0, 65535.0)? as u16).to_be_bytes().to_vec(),
                ValueType::Int32 => (integer(i32::MIN as f64, i32::MAX as f64)? as i32)
                    .to_be_bytes()
                    .to_vec(),
                ValueType::UInt32 => (integer(0.0, u32::MAX as f64)? as u32)
                    .to_be_bytes()
                    .to_vec(),
                ValueType::Int64 => (integer(i64::MIN as f64, i64::MAX as f64)? as i64)
                    .to_be_bytes()
                    .to_vec(),
                ValueType::UInt64 => (integer(0.0, u64::MAX as f64)? as u64)
                    .to_be_bytes()
                    .to_vec(),
                ValueType::Float32 => (number as f32).to_be_bytes().to_vec(),
                ValueType::Float64 => number.to_be_bytes().to_vec(),
                ValueType::Bool | ValueType::String(_) => unreachable!("handled above"),
            }
        }
    };
    let mut words: Vec<u16> = big_endian
        .chunks(2)
        .map(|pair| {
            if tag.byte_order.swaps_bytes() {
                u16::from_be_bytes([pair[1], pair[0]])
            } else {
                u16::from_be_bytes([pair[0], pair[1]])
            }
        })
        .collect();
    if tag.byte_order.swaps_words() {
        words.reverse();
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::tags::Register;

    fn tag(value_type: ValueType, byte_order: ByteOrder) -> Tag {
        Tag {
            name: "t".into(),
            register: Register::Holding,
            address: 0,
            value_type,
            byte_order,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            group: "default".into(),
            deadband: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn a_number_for_a_text_tag_is_refused_not_a_panic() {
        let text = tag(ValueType::String(4), ByteOrder::Abcd);
        let refused = encode_registers(&text, &RawValue::Float(3.5)).unwrap_err();
        assert!(refused.contains("takes text"), "{refused}");
        assert!(encode_registers(&text, &RawValue::Text("ok".into())).is_ok());
    }

    #[test]
    fn float32_in_every_byte_order() {
        // 123.456f32 is 0x42F6E979: bytes A=42 B=F6 C=E9 D=79.
        let cases = [
            (ByteOrder::Abcd, [0x42F6, 0xE979]),
            (ByteOrder::Dcba, [0x79E9, 0xF642]),
            (ByteOrder::Badc, [0xF642, 0x79E9]),
            (ByteOrder::Cdab, [0xE979, 0x42F6]),
        ];
        for (order, registers) in cases {
            let tag = tag(ValueType::Float32, order);
            let RawValue::Float(value) = decode_registers(&tag, &registers) else {
                panic!()
            };
            assert!((value - 123.456).abs() < 1e-4, "{order:?}: {value}");
            assert_eq!(
                encode_registers(&tag, &RawValue::Float(value)).unwrap(),
                registers,
                "{order:?}"
            );
        }
    }

    #[test]
    fn sixty_four_bit_values_and_signs() {
        let registers = [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE];
        let value = decode_registers(&tag(ValueType::Int64, ByteOrder::Abcd), &registers);
        assert_eq!(value, RawValue::Int(-2));
        let swapped = [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF];
        let value = decode_registers(&tag(ValueType::Int64, ByteOrder::Cdab), &swapped);
        assert_eq!(value, RawValue::Int(-2));
        let value = decode_registers(&tag(ValueType::UInt32, ByteOrder::Abcd), &[0xFFFF, 0xFFFF]);
        assert_eq!(value, RawValue::UInt(4_294_967_295));
        let value = decode_registers(&tag(ValueType::Int16, ByteOrder::Dcba), &[0xFFFF]);
        assert_eq!(value, RawValue::Int(-1));
        let pi = tag(ValueType::Float64, ByteOrder::Dcba);
        let words = encode_registers(&pi, &RawValue::Float(std::f64::consts::PI)).unwrap();
        assert_eq!(
            decode_registers(&pi, &words),
            RawValue::Float(std::f64::consts::PI)
        );
    }

    #[test]
    fn strings_read_in_register_order_and_trim_padding() {
        let text = tag(ValueType::String(3), ByteOrder::Abcd);
        let words = encode_registers(&text, &RawValue::Text("HVAC".into())).unwrap();
        assert_eq!(words, [0x4856, 0x4143, 0x0000]);
        assert_eq!(
            decode_registers(&text, &words),
            RawValue::Text("HVAC".into())
        );
        let swapped = tag(ValueType::String(2), ByteOrder::Badc);
        assert_eq!(
            decode_registers(&swapped, &[0x5648, 0x4341]),
            RawValue::Text("HVAC".into())
        );
    }

    #[test]
    fn writes_that_do_not_fit_are_refused() {
        let small = tag(ValueType::Int16, ByteOrder::Abcd);
        assert!(
            encode_registers(&small, &RawValue::Float(40000.0))
                .unwrap_err()
                .contains("does not fit a int16")
        );
        assert!(encode_registers(&small, &RawValue::Float(1.5)).is_err());
    }
}
