//! MQTT load: a publisher the live benchmark writes through, and the ingest benchmark, which
//! publishes as fast as the broker takes messages and watches the engine count them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

/// A connected publisher; counts what the broker acknowledged (QoS 1) or what was sent (QoS 0).
pub struct Publisher {
    pub client: Client,
    pub qos: QoS,
    delivered: Arc<AtomicU64>,
}

impl Publisher {
    pub fn connect(address: &str, client_id: &str, qos: u8) -> anyhow::Result<Publisher> {
        let (host, port) = address
            .rsplit_once(':')
            .context("the broker address is host:port")?;
        let mut options = MqttOptions::new(client_id, host, port.parse()?);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_request_channel_capacity(10_000);
        let (client, mut connection) = Client::new(options, 10_000);
        let qos = if qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let delivered = Arc::new(AtomicU64::new(0));
        let counter = delivered.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("publisher connection: {error}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
        Ok(Publisher {
            client,
            qos,
            delivered,
        })
    }

    pub fn publish(&self, topic: String, payload: String) -> anyhow::Result<()> {
        self.client.publish(topic, self.qos, false, payload)?;
        Ok(())
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// The broker (host:port).
    #[arg(long)]
    broker: String,
    /// The engine's HTTP address (host:port), whose metrics count the source's rows.
    #[arg(long)]
    engine: String,
    /// The engine's MQTT source.
    #[arg(long, default_value = "readings")]
    source: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    /// Publishing connections (each on its own thread).
    #[arg(long, default_value_t = 2)]
    connections: u64,
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Distinct sensors (topics).
    #[arg(long, default_value_t = 1_000)]
    sensors: u64,
}

/// The source's row count, from the engine's metrics.
pub fn engine_rows(engine: &str, source: &str) -> anyhow::Result<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(engine)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {engine}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let prefix = format!("vibelux_source_rows_total{{source=\"{source}\"}} ");
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0))
}

pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let before = engine_rows(&args.engine, &args.source)?;
    let started = Instant::now();
    let per_connection = args.messages / args.connections;
    let publishers: Vec<_> = (0..args.connections)
        .map(|connection| {
            let broker = args.broker.clone();
            let (qos, sensors, connections) = (args.qos, args.sensors, args.connections);
            std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
                let publisher =
                    Publisher::connect(&broker, &format!("bench-ingest-{connection}"), qos)?;
                let base = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")?
                    .timestamp_millis();
                for i in 0..per_connection {
                    // Interleaved, so all connections publish the same stretch of event time.
                    let n = i * connections + connection;
                    let sensor = n % sensors;
                    let payload = format!(
                        "{{\"ts\":{},\"temp_c\":{:.2},\"rh\":{:.1}}}",
                        base + (n / sensors) as i64 * 1000,
                        20.0 + (n % 97) as f64 / 10.0,
                        55.0 + (n % 13) as f64
                    );
                    publisher.publish(format!("bench/z{}/s{sensor:05}", sensor % 10), payload)?;
                }
                while publisher.delivered() < per_connection {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let published = started.elapsed();
                Ok((per_connection, published))
            })
        })
        .collect();
    let mut total = 0;
    let mut published = Duration::ZERO;
    for publisher in publishers {
        let (count, took) = publisher.join().expect("publisher thread")?;
        total += count;
        published = published.max(took);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut rows = 0;
    while Instant::now() < deadline {
        rows = engine_rows(&args.engine, &args.source)? - before;
        if rows >= total {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ingested = started.elapsed();
    println!(
        "qos {}: {total} messages over {} connections; broker acknowledged all after {:.2} s ({:.0} msg/s); engine counted {rows} rows after {:.2} s: {:.0} msg/s",
        args.qos,
        args.connections,
        published.as_secs_f64(),
        total as f64 / published.as_secs_f64(),
        ingested.as_secs_f64(),
        rows as f64 / ingested.as_secs_f64()
    );
    Ok(())
}
