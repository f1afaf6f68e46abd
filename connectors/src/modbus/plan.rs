//! Poll planning: the fewest read requests that cover a poll group's tags.
//!
//! Each request costs a round trip to a device that may answer in tens of milliseconds, so tags
//! next to each other (or a few registers apart: `gap_fill`) are read together, up to the
//! protocol's limits of 125 registers or 2,000 bits per request. Devices that cannot answer a
//! read spanning several tags get one request per tag.

use super::tags::{Register, Tag};

/// The largest read the protocol allows, per data area.
pub const MAX_REGISTERS: u16 = 125;
pub const MAX_BITS: u16 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Unused registers (or bits) a request may read to join two tags.
    pub gap_fill: u16,
    /// One request per tag (a device quirk).
    pub per_tag: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: MAX_REGISTERS,
            max_bits: MAX_BITS,
            gap_fill: 0,
            per_tag: false,
        }
    }
}

/// One read: `count` registers or bits from `start`, holding the listed tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub register: Register,
    pub start: u16,
    pub count: u16,
    /// Indices of the tags in the map.
    pub tags: Vec<usize>,
}

impl ReadRequest {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Plans the reads for the tags at `indices` of `tags`.
pub fn plan(tags: &[Tag], indices: &[usize], limits: Limits) -> Vec<ReadRequest> {
    let mut sorted: Vec<usize> = indices.to_vec();
    sorted.sort_by_key(|&index| (tags[index].register, tags[index].address));
    let mut requests: Vec<ReadRequest> = Vec::new();
    for index in sorted {
        let tag = &tags[index];
        let start = u32::from(tag.address);
        let end = start + u32::from(tag.value_type.width());
        let most = u32::from(if tag.register.is_bits() {
            limits.max_bits
        } else {
            limits.max_registers
        });
        if let Some(last) = requests.last_mut()
            && !limits.per_tag
            && last.register == tag.register
            && start <= last.end() + u32::from(limits.gap_fill)
            && end.max(last.end()) - u32::from(last.start) <= most
        {
            last.count = (end.max(last.end()) - u32::from(last.start)) as u16;
            last.tags.push(index);
            continue;
        }
        requests.push(ReadRequest {
            register: tag.register,
            start: tag.address,
            count: (end - start) as u16,
            tags: vec![index],
        });
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::tags::{ByteOrder, ValueType};

    fn tag(register: Register, address: u16, value_type: ValueType) -> Tag {
        Tag {
            name: format!("{}{address}", register.name()),
            register,
            address,
            value_type,
            byte_order: ByteOrder::Abcd,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            group: "default".into(),
            deadband: None,
            limits: Default::default(),
        }
    }

    fn spans(requests: &[ReadRequest]) -> Vec<(Register, u16, u16)> {
        requests
            .iter()
            .map(|request| (request.register, request.start, request.count))
            .collect()
    }

    #[test]
    fn neighbours_merge_and_areas_stay_apart() {
        let tags = [
            tag(Register::Holding, 10, ValueType::Float32),
            tag(Register::Holding, 12, ValueType::UInt16),
            tag(Register::Holding, 20, ValueType::Int16),
            tag(Register::Input, 12, ValueType::UInt16),
            tag(Register::Coil, 0, ValueType::Bool),
            tag(Register::Coil, 1, ValueType::Bool),
        ];
        let all: Vec<usize> = (0..tags.len()).collect();
        let requests = plan(&tags, &all, Limits::default());
        assert_eq!(
            spans(&requests),
            [
                (Register::Coil, 0, 2),
                (Register::Holding, 10, 3),
                (Register::Holding, 20, 1),
                (Register::Input, 12, 1),
            ]
        );
        let gap_filled = plan(
            &tags,
            &all,
            Limits {
                gap_fill: 7,
                ..Limits::default()
            },
        );
        assert_eq!(spans(&gap_filled)[1], (Register::Holding, 10, 11));
        assert_eq!(gap_filled[1].tags, [0, 1, 2]);
    }

    #[test]
    fn requests_stop_at_the_protocol_limit_and_quirks_split_them() {
        let tags: Vec<Tag> = (0..70)
            .map(|i| tag(Register::Holding, i * 2, ValueType::UInt32))
            .collect();
        let all: Vec<usize> = (0..tags.len()).collect();
        let requests = plan(&tags, &all, Limits::default());
        assert_eq!(
            spans(&requests),
            [(Register::Holding, 0, 124), (Register::Holding, 124, 16)]
        );
        let per_tag = plan(
            &tags,
            &all,
            Limits {
                per_tag: true,
                ..Limits::default()
            },
        );
        assert_eq!(per_tag.len(), 70);
    }
}
