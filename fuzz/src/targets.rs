//! The parsers fuzzed, each behind the entry point that real input reaches it through.
//!
//! A target must not panic on any input: a panic in a source's decoder is a stopped pipeline,
//! and in the server's, a dropped connection for every client of the thread. Errors are fine
//! and expected; only panics (and hangs, which the runner reports by their slowness) are
//! findings.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use vibelux::server::websocket::ClientFrames;
use vibelux_connectors::modbus::codec::{RawValue, decode_registers, encode_registers};
use vibelux_connectors::modbus::tags::TagMap;
use vibelux_connectors::payload::{JsonPath, MessageFormat, RowLayout, parse_timestamp};
use vibelux_connectors::sparkplug::host::HostState;
use vibelux_connectors::sparkplug::proto::decode_payload;
use vibelux_connectors::sparkplug::topic::{Parsed, parse as parse_topic};
use vibelux_queries::parser::parse_pipeline;
use vibelux_queries::planner::Planner;

/// One parser under test.
pub trait Target: Send {
    fn name(&self) -> &'static str;
    /// Tokens of its language, for the mutator.
    fn dictionary(&self) -> &'static [&'static [u8]];
    /// The longest input worth trying.
    fn max_len(&self) -> usize;
    fn run(&mut self, input: &[u8]);
}

/// Every target, by name.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(Sql::default()),
        Box::new(Json::new()),
        Box::new(Csv::new()),
        Box::new(Sparkplug::default()),
        Box::new(Modbus::new()),
        Box::new(TagMaps),
        Box::new(WebSocket),
        Box::new(Postgres),
    ]
}

fn readings_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("sensor_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("temp_c", DataType::Float64, true),
        Field::new("count", DataType::Int64, true),
        Field::new("on", DataType::Boolean, true),
    ]))
}

/// Pipeline statements: parsed always; planned (which DataFusion does) one input in 16, after
/// a source they can read. Statements that name a connector or a model are only parsed:
/// planning them would touch files and devices the input names.
#[derive(Default)]
pub struct Sql {
    count: u64,
}

const SQL_PREFIX: &str = "CREATE SOURCE readings (sensor_id TEXT NOT NULL, zone TEXT, ts TIMESTAMP, temp_c DOUBLE, \
     WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (connector = 'simulator');\n";

impl Target for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"SELECT ",
            b" FROM ",
            b" WHERE ",
            b" GROUP BY ",
            b" JOIN ",
            b" ON ",
            b"TUMBLE(",
            b"HOP(",
            b"SESSION(",
            b"INTERVAL '1 minute'",
            b"CREATE VIEW v AS ",
            b"CREATE MATERIALIZED VIEW ",
            b"CREATE ALARM a ON readings PER zone WHEN ",
            b"anomaly_score('auto', temp_c) OVER (PARTITION BY sensor_id)",
            b"window_start",
            b"count(*)",
            b"avg(",
            b"vpd(",
            b"dew_point(",
            b"CASE WHEN ",
            b" END",
            b" AS ",
            b"NULL",
            b"CAST(",
            b" DOUBLE)",
            b"'",
            b";",
            b"--",
            b"/*",
            b"*/",
            b"readings",
            b" DURATION ",
            b" HYSTERESIS ",
            b"EXPLAIN ",
            b"SHOW ",
            b"DROP VIEW ",
            b"(",
            b")",
            b",",
        ]
    }

    fn max_len(&self) -> usize {
        2048
    }

    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let _ = parse_pipeline(&text);
        self.count += 1;
        let lower = text.to_ascii_lowercase();
        if self.count.is_multiple_of(16) && !lower.contains("connector") && !lower.contains("model")
        {
            let _ = Planner::plan_pipeline(
                &format!("{SQL_PREFIX}{text}"),
                vibelux_connectors::registry::registry(),
            );
        }
    }
}

/// A JSON reading as a file, MQTT or Kafka source decodes it; the first line may be a JSON
/// path (an option users write), the rest the message.
pub struct Json {
    layout: RowLayout,
}

impl Json {
    fn new() -> Self {
        Json {
            layout: RowLayout::new(readings_schema(), Some(1)),
        }
    }
}

impl Target for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b"\"sensor_id\"",
            b"\"ts\"",
            b"\"temp_c\"",
            b"\"count\"",
            b"\"on\"",
            b"true",
            b"false",
            b"null",
            b"1.5e3",
            b"\"2026-06-01T00:00:05Z\"",
            b"$.a.b[0]",
            b"\\u00e9",
            b"1764547200000",
            b"-0",
            b"\"2026-06-01T00:00:05.123+02:00\"",
            b"1e400",
        ]
    }

    fn max_len(&self) -> usize {
        4096
    }

    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let _ = self.layout.decode_json(&text);
        // The flat-object fast path must say exactly what the general decoder says (floats to
        // the bit, which their debug forms show).
        let fast = self.layout.decode_json_fields(&text);
        let general = self.layout.decode_json_general(&text);
        assert_eq!(
            format!("{fast:?}"),
            format!("{general:?}"),
            "the fast path and the general decoder disagree on {text:?}"
        );
        let _ = parse_timestamp(&text);
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        if let Ok(path) = JsonPath::parse(first) {
            let format = MessageFormat::Json {
                paths: vec![(2, path)],
            };
            let _ = format.decode(&self.layout, rest.as_bytes());
        }
        let _ = MessageFormat::Raw { column: 2 }.decode(&self.layout, input);
    }
}

/// CSV records as a file source reads them, fields matched to columns by the header.
pub struct Csv {
    layout: RowLayout,
}

impl Csv {
    fn new() -> Self {
        Csv {
            layout: RowLayout::new(readings_schema(), Some(1)),
        }
    }
}

impl Target for Csv {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b",",
            b"\n",
            b"\r\n",
            b"\"",
            b"\"\"",
            b"2026-06-01T00:00:05Z",
            b"21.5",
            b"true",
            b"-",
        ]
    }

    fn max_len(&self) -> usize {
        4096
    }

    fn run(&mut self, input: &[u8]) {
        let header = [Some(0), Some(1), Some(2), Some(3), Some(4), None];
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        for record in reader.records().take(64) {
            let Ok(record) = record else { break };
            let _ = self.layout.decode_csv(&header, &record);
        }
    }
}

/// Sparkplug B payloads as the host reads them, under the topics of births, data and deaths;
/// the host's state carries over from one input to the next, as it does between messages.
#[derive(Default)]
pub struct Sparkplug {
    host: HostState,
    count: u64,
}

const SPARKPLUG_TOPICS: &[&str] = &[
    "spBv1.0/g/NBIRTH/n",
    "spBv1.0/g/NDATA/n",
    "spBv1.0/g/DBIRTH/n/d",
    "spBv1.0/g/DDATA/n/d",
    "spBv1.0/g/DDEATH/n/d",
    "spBv1.0/g/NDEATH/n",
];

impl Target for Sparkplug {
    fn name(&self) -> &'static str {
        "sparkplug"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        // Protobuf keys of the payload and metric fields, with small varints.
        &[
            b"\x08\x01",
            b"\x12",
            b"\x18\x00",
            b"\x0a\x04temp",
            b"\x10\x01",
            b"\x20\x09",
            b"\x58",
            b"\x7a",
        ]
    }

    fn max_len(&self) -> usize {
        2048
    }

    fn run(&mut self, input: &[u8]) {
        let Some((&which, body)) = input.split_first() else {
            return;
        };
        self.count += 1;
        if self.count.is_multiple_of(4096) {
            // Bounded memory over millions of inputs.
            self.host = HostState::default();
        }
        let topic = SPARKPLUG_TOPICS[usize::from(which) % SPARKPLUG_TOPICS.len()];
        let Ok(Parsed::Message(topic)) = parse_topic(topic) else {
            unreachable!("the topics above parse")
        };
        if let Ok(payload) = decode_payload(body) {
            let _ = self.host.apply(&topic, &payload, 1_764_547_200_000);
        }
    }
}

/// Registers as a PLC answers them, decoded for every kind of tag; and values encoded for
/// writing.
pub struct Modbus {
    tags: TagMap,
}

const MODBUS_TAGS: &str = r#"
[[tag]]
name = "i16"
register = "holding"
address = 0
type = "int16"
scale = 0.1
[[tag]]
name = "u32_cdab"
register = "holding"
address = 1
type = "uint32"
byte_order = "CDAB"
[[tag]]
name = "f32_badc"
register = "input"
address = 3
type = "float32"
byte_order = "BADC"
[[tag]]
name = "f64"
register = "input"
address = 5
type = "float64"
[[tag]]
name = "i64_dcba"
register = "holding"
address = 9
type = "int64"
byte_order = "DCBA"
[[tag]]
name = "text"
register = "input"
address = 13
type = "string(8)"
"#;

impl Modbus {
    fn new() -> Self {
        Modbus {
            tags: TagMap::parse(MODBUS_TAGS, Duration::from_secs(1)).expect("the tag map parses"),
        }
    }
}

impl Target for Modbus {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"\x00\x00",
            b"\xff\xff",
            b"\x7f\xff",
            b"\x80\x00",
            b"\x7f\x80\x00\x00",
        ]
    }

    fn max_len(&self) -> usize {
        256
    }

    fn run(&mut self, input: &[u8]) {
        let words: Vec<u16> = input
            .chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))
            .collect();
        for tag in &self.tags.tags {
            let width = usize::from(tag.value_type.width());
            if let Some(registers) = words.get(..width) {
                let value = decode_registers(tag, registers);
                let _ = encode_registers(tag, &value);
            }
            if let Some(bytes) = input.get(..8) {
                let number = f64::from_le_bytes(bytes.try_into().expect("eight bytes"));
                let _ = encode_registers(tag, &RawValue::Float(number));
                let _ = encode_registers(tag, &RawValue::Int(number as i64));
            }
            let _ = encode_registers(tag, &RawValue::Text(String::from_utf8_lossy(input).into()));
        }
    }
}

/// Tag maps, which users write and may post inline.
pub struct TagMaps;

impl Target for TagMaps {
    fn name(&self) -> &'static str {
        "tagmap"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"[[tag]]\n",
            b"name = ",
            b"register = \"holding\"\n",
            b"register = \"coil\"\n",
            b"address = ",
            b"type = \"string(",
            b"byte_order = \"",
            b"scale = ",
            b"offset = ",
            b"min = ",
            b"max = ",
            b"interlocks = [\"",
            b"\"]\n",
            b"[groups]\n",
            b"fast = \"100ms\"\n",
            b"group = ",
            b"deadband = ",
            b"65535",
            b"\n",
        ]
    }

    fn max_len(&self) -> usize {
        4096
    }

    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        if let Ok(map) = TagMap::parse(&text, Duration::from_secs(1)) {
            let _ = map.one_based();
        }
    }
}

/// What a WebSocket client sends a subscription, read in two pieces.
pub struct WebSocket;

impl Target for WebSocket {
    fn name(&self) -> &'static str {
        "websocket"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"\x81\x85",
            b"\x89\x80",
            b"\x88\x82",
            b"\x82\xfe",
            b"\x81\xff",
            b"\x01\x02\x03\x04",
        ]
    }

    fn max_len(&self) -> usize {
        1024
    }

    fn run(&mut self, input: &[u8]) {
        let Some((&split, rest)) = input.split_first() else {
            return;
        };
        let at = usize::from(split).min(rest.len());
        let mut frames = ClientFrames::new(bytes::Bytes::new());
        let _ = frames.feed(&rest[..at]);
        let _ = frames.feed(&rest[at..]);
    }
}

/// Postgres frontend messages as the Postgres port decodes them (startup, then queries,
/// parse, bind…), and the classification each statement's text gets (`postgres::statements`).
/// The first byte chooses whether the connection is still starting up.
pub struct Postgres;

fn classify_statements(text: &str) {
    for statement in vibelux::server::postgres::statements::split(text) {
        let _ = vibelux::server::postgres::statements::classify(statement);
    }
}

impl Target for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn dictionary(&self) -> &'static [&'static [u8]] {
        &[
            b"Q\x00\x00\x00",
            b"P\x00\x00\x00",
            b"B\x00\x00\x00",
            b"E\x00\x00\x00",
            b"D\x00\x00\x00",
            b"S\x00\x00\x00\x04",
            b"\x00\x03\x00\x00",
            b"\x04\xd2\x16\x2f",
            b"user\x00",
            b"SUBSCRIBE ",
            b"COPY (",
            b") TO STDOUT",
            b" WITH (",
            b"SNAPSHOT = false",
            b"PROGRESS",
            b"SHOW ",
            b"BEGIN",
            b";",
            b"'",
            b"\"",
            b"--",
            b"/*",
        ]
    }

    fn max_len(&self) -> usize {
        2048
    }

    fn run(&mut self, input: &[u8]) {
        use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
        let Some((&mode, rest)) = input.split_first() else {
            return;
        };
        let mut context = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        if mode & 1 == 1 {
            context.awaiting_frontend_ssl = false;
            context.awaiting_frontend_startup = false;
        }
        let mut buffer = bytes::BytesMut::from(rest);
        for _ in 0..64 {
            // pgwire 0.42's decoders panic on some malformed messages (a Bind whose lengths
            // run past its end, found here). The server runs each connection in its own task,
            // so such a panic ends that connection only (engine/tests/postgres.rs checks it);
            // here it ends the input, and what follows is ours.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                PgWireFrontendMessage::decode(&mut buffer, &context)
            }));
            let Ok(decoded) = decoded else { break };
            match decoded {
                Ok(Some(message)) => {
                    match &message {
                        PgWireFrontendMessage::Query(query) => classify_statements(&query.query),
                        PgWireFrontendMessage::Parse(parse) => {
                            let _ = vibelux::server::postgres::statements::classify(&parse.query);
                        }
                        _ => {}
                    }
                    context.awaiting_frontend_ssl = false;
                    context.awaiting_frontend_startup = false;
                }
                Ok(None) | Err(_) => break,
            }
        }
        classify_statements(&String::from_utf8_lossy(rest));
    }
}
