//! One MQTT connection in either protocol version, behind one interface for the source.
//!
//! MQTT 3.1.1 keeps a persistent session until the broker's own expiry setting; MQTT 5 lets the
//! client ask for one (`session_expiry`), so a source states how long the broker must hold its
//! subscription and queued messages while the engine is away. rumqttc has a client per version
//! with the same shape but different types; this module is the only place that knows both.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{QoS, RecvTimeoutError};

use super::broker::BrokerConfig;

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    /// MQTT 5, asking the broker to keep the session this long after a disconnect.
    V5 {
        session_expiry: Duration,
    },
}

/// A message received, whatever the protocol.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub pkid: u16,
}

/// What the connection did.
pub enum LinkEvent {
    Connected {
        session_present: bool,
    },
    Subscribed {
        refused: bool,
    },
    Message(Received),
    /// The connection failed or was lost (the client reconnects on the next receive).
    Failed(String),
    /// Our DISCONNECT went out.
    Disconnected,
    /// Something else happened (pings, acks).
    Other,
    /// Nothing within the wait.
    Idle,
    /// The client is gone.
    Closed,
}

fn v5_qos(qos: QoS) -> v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn v4_qos(qos: v5::mqttbytes::QoS) -> QoS {
    match qos {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The handle that sends: subscriptions, acknowledgements, publications.
#[derive(Clone)]
pub enum LinkClient {
    V311(rumqttc::Client),
    V5(v5::Client),
}

impl LinkClient {
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), String> {
        match self {
            LinkClient::V311(client) => client
                .try_subscribe(filter, qos)
                .map_err(|error| error.to_string()),
            LinkClient::V5(client) => client
                .try_subscribe(filter, v5_qos(qos))
                .map_err(|error| error.to_string()),
        }
    }

    /// Acknowledges a QoS 1 message; `false` when the client's queue is full (try again).
    pub fn ack(&self, pkid: u16) -> bool {
        match self {
            LinkClient::V311(client) => {
                let mut stub = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
                stub.pkid = pkid;
                client.try_ack(&stub).is_ok()
            }
            LinkClient::V5(client) => {
                let mut stub =
                    v5::mqttbytes::v5::Publish::new("", v5::mqttbytes::QoS::AtLeastOnce, "", None);
                stub.pkid = pkid;
                client.try_ack(&stub).is_ok()
            }
        }
    }

    pub fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            LinkClient::V311(client) => client.try_publish(topic, qos, retain, payload).is_ok(),
            LinkClient::V5(client) => client
                .try_publish(topic, v5_qos(qos), retain, payload)
                .is_ok(),
        }
    }

    pub fn disconnect(&self) {
        match self {
            LinkClient::V311(client) => drop(client.try_disconnect()),
            LinkClient::V5(client) => drop(client.try_disconnect()),
        }
    }
}

/// The receiving half: the client's event loop.
pub enum LinkConnection {
    V311(Box<rumqttc::Connection>),
    V5(Box<v5::Connection>),
}

impl LinkConnection {
    /// Runs the event loop until something happens or `wait` passes.
    pub fn recv(&mut self, wait: Duration) -> LinkEvent {
        match self {
            LinkConnection::V311(connection) => match connection.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => LinkEvent::Idle,
                Err(RecvTimeoutError::Disconnected) => LinkEvent::Closed,
                Ok(Err(error)) => LinkEvent::Failed(error.to_string()),
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => {
                    LinkEvent::Connected {
                        session_present: ack.session_present,
                    }
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)))) => {
                    LinkEvent::Subscribed {
                        refused: ack
                            .return_codes
                            .iter()
                            .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure)),
                    }
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)))) => {
                    LinkEvent::Message(Received {
                        topic: publish.topic,
                        payload: publish.payload,
                        qos: publish.qos,
                        pkid: publish.pkid,
                    })
                }
                Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                    LinkEvent::Disconnected
                }
                Ok(Ok(_)) => LinkEvent::Other,
            },
            LinkConnection::V5(connection) => match connection.recv_timeout(wait) {
                Err(v5::RecvTimeoutError::Timeout) => LinkEvent::Idle,
                Err(v5::RecvTimeoutError::Disconnected) => LinkEvent::Closed,
                Ok(Err(error)) => LinkEvent::Failed(error.to_string()),
                Ok(Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::ConnAck(ack)))) => {
                    LinkEvent::Connected {
                        session_present: ack.session_present,
                    }
                }
                Ok(Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::SubAck(ack)))) => {
                    LinkEvent::Subscribed {
                        refused: ack.return_codes.iter().any(|code| {
                            !matches!(code, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                        }),
                    }
                }
                Ok(Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(publish)))) => {
                    LinkEvent::Message(Received {
                        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                        payload: publish.payload,
                        qos: v4_qos(publish.qos),
                        pkid: publish.pkid,
                    })
                }
                Ok(Ok(v5::Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                    LinkEvent::Disconnected
                }
                Ok(Ok(_)) => LinkEvent::Other,
            },
        }
    }
}

/// A will: published by the broker if the connection drops without a DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// Creates a client (it connects on the first receive) for `broker` in `protocol`.
pub fn open(
    broker: &BrokerConfig,
    protocol: Protocol,
    manual_acks: bool,
    will: Option<Will>,
) -> Result<(LinkClient, LinkConnection), String> {
    match protocol {
        Protocol::V311 => {
            let mut options = broker.client_options(manual_acks)?;
            if let Some(will) = will {
                options.set_last_will(rumqttc::LastWill::new(
                    will.topic,
                    will.payload,
                    will.qos,
                    will.retain,
                ));
            }
            let (client, connection) = rumqttc::Client::new(options, 4096);
            Ok((
                LinkClient::V311(client),
                LinkConnection::V311(Box::new(connection)),
            ))
        }
        Protocol::V5 { session_expiry } => {
            let mut options =
                v5::MqttOptions::new(broker.client_id.clone(), broker.host.clone(), broker.port);
            options
                .set_keep_alive(broker.keep_alive)
                .set_clean_start(broker.clean_session)
                .set_manual_acks(manual_acks)
                .set_max_packet_size(Some(1 << 20))
                .set_request_channel_capacity(4096)
                .set_receive_maximum(Some(1000))
                .set_session_expiry_interval(
                    (!broker.clean_session)
                        .then(|| session_expiry.as_secs().min(u64::from(u32::MAX)) as u32),
                );
            if let Some(username) = &broker.username {
                options.set_credentials(
                    username.clone(),
                    broker.password.clone().unwrap_or_default(),
                );
            }
            if let Some(tls) = &broker.tls {
                options.set_transport(BrokerConfig::transport(tls)?);
            }
            if let Some(will) = will {
                options.set_last_will(v5::mqttbytes::v5::LastWill::new(
                    will.topic,
                    will.payload,
                    v5_qos(will.qos),
                    will.retain,
                    None,
                ));
            }
            let (client, connection) = v5::Client::new(options, 4096);
            Ok((
                LinkClient::V5(client),
                LinkConnection::V5(Box::new(connection)),
            ))
        }
    }
}
