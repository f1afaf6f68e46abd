//! Sparkplug B topics: `spBv1.0/{group}/{message type}/{edge node}[/{device}]`.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hash;

pub const NAMESPACE: &str = "spBv1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NData,
    NDeath,
    NCmd,
    DBirth,
    DData,
    DDeath,
    DCmd,
}

impl MessageType {
    fn parse(text: &str) -> Option<MessageType> {
        Some(match text {
            "NBIRTH" => MessageType::NBirth,
            "NDATA" => MessageType::NData,
            "NDEATH" => MessageType::NDeath,
            "NCMD" => MessageType::NCmd,
            "DBIRTH" => MessageType::DBirth,
            "DDATA" => MessageType::DData,
            "DDEATH" => MessageType::DDeath,
            "DCMD" => MessageType::DCmd,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NData => "NDATA",
            MessageType::NDeath => "NDEATH",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DData => "DDATA",
            MessageType::DDeath => "DDEATH",
            MessageType::DCmd => "DCMD",
        }
    }

    /// Device messages name a device after the edge node.
    fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DData | MessageType::DDeath | MessageType::DCmd
        )
    }
}

/// A parsed topic of an edge node or device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugTopic<'a> {
    pub group: &'a str,
    pub message_type: MessageType,
    pub edge_node: &'a str,
    pub device: Option<&'a str>,
}

/// What a topic under the namespace is.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    Message(SparkplugTopic<'a>),
    /// A host application's `STATE` (ours or another's): not data.
    HostState,
}

pub fn parse(topic: &str) -> Result<Parsed<'_>, String> {
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.first() != Some(&NAMESPACE) {
        return Err(format!("topic {topic:?} is not under {NAMESPACE}/"));
    }
    if levels.get(1) == Some(&"STATE") {
        return Ok(Parsed::HostState);
    }
    let message_type = levels
        .get(2)
        .and_then(|level| MessageType::parse(level))
        .ok_or_else(|| {
            format!(
                "topic {topic:?}: the third level must be a message type (NBIRTH, NDATA, NDEATH, DBIRTH, DDATA, DDEATH, NCMD, DCMD)"
            )
        })?;
    let expected = if message_type.is_device() { 5 } else { 4 };
    if levels.len() != expected || levels.iter().any(|level| level.is_empty()) {
        return Err(format!(
            "topic {topic:?}: a {} topic has {expected} non-empty levels",
            message_type.name()
        ));
    }
    Ok(Parsed::Message(SparkplugTopic {
        group: levels[1],
        message_type,
        edge_node: levels[3],
        device: levels.get(4).copied(),
    }))
}

/// Every message of an edge node and its devices goes to one worker, in order: the node's
/// births define the aliases and sequence its data is read by.
pub fn route_by_edge_node(topic: &str, hasher: &mut DefaultHasher) {
    let mut levels = topic.split('/');
    let group = levels.nth(1);
    let edge_node = levels.nth(1);
    (group, edge_node).hash(hasher);
}

/// The topic a node's commands go to.
pub fn node_command_topic(group: &str, edge_node: &str) -> String {
    format!("{NAMESPACE}/{group}/NCMD/{edge_node}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    #[test]
    fn node_and_device_topics_parse() {
        assert_eq!(
            parse("spBv1.0/greenhouse/DDATA/gw1/room1").unwrap(),
            Parsed::Message(SparkplugTopic {
                group: "greenhouse",
                message_type: MessageType::DData,
                edge_node: "gw1",
                device: Some("room1"),
            })
        );
        assert!(matches!(
            parse("spBv1.0/g/NBIRTH/gw1").unwrap(),
            Parsed::Message(SparkplugTopic { device: None, .. })
        ));
        assert_eq!(parse("spBv1.0/STATE/host").unwrap(), Parsed::HostState);
    }

    #[test]
    fn malformed_topics_say_why() {
        assert!(
            parse("spBv1.0/g/NDATA/gw1/extra")
                .unwrap_err()
                .contains("4 non-empty levels")
        );
        assert!(
            parse("spBv1.0/g/DDATA/gw1")
                .unwrap_err()
                .contains("5 non-empty levels")
        );
        assert!(
            parse("spBv1.0/g/HELLO/gw1")
                .unwrap_err()
                .contains("message type")
        );
        assert!(parse("site/g/NDATA/gw1").unwrap_err().contains("not under"));
    }

    #[test]
    fn a_node_and_its_devices_route_alike() {
        let hash = |topic: &str| {
            let mut hasher = DefaultHasher::new();
            route_by_edge_node(topic, &mut hasher);
            hasher.finish()
        };
        assert_eq!(
            hash("spBv1.0/g/NBIRTH/gw1"),
            hash("spBv1.0/g/DDATA/gw1/room1")
        );
        assert_ne!(hash("spBv1.0/g/NBIRTH/gw1"), hash("spBv1.0/g/NBIRTH/gw2"));
    }
}
