//! MQTT, the protocol sensors and gateways in a facility publish on.
//!
//! The source subscribes with a persistent session (a stable client id and `clean_session =
//! false`) and acknowledges a QoS 1 message only once its row has entered the dataflow — or, in
//! a checkpointed run, once it is in the journal (`journal.rs`) — so the broker keeps, and
//! redelivers, everything the engine has not taken in, across broker and engine restarts. The sink publishes rows as JSON to a topic built from the row.
//!
//! Both run the client's event loop on a thread of their own: the network keeps moving (keep
//! alives, reconnects with backoff) whatever the dataflow workers are doing.

pub mod broker;
pub mod connector;
pub mod journal;
pub mod link;
pub mod options;
pub mod position;
pub mod sink;
pub mod source;
pub mod topic;
