//! Kafka ingest: produces readings as fast as the broker takes them and watches the engine's
//! metrics count them.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::mqtt::engine_rows;

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Bootstrap servers (host:port).
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value = "readings")]
    topic: String,
    /// The engine's HTTP address (host:port).
    #[arg(long)]
    engine: String,
    #[arg(long, default_value = "readings")]
    source: String,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long, default_value_t = 1_000)]
    sensors: u64,
}

pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let before = engine_rows(&args.engine, &args.source)?;
    let started = Instant::now();
    let base = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")?.timestamp_millis();
    for n in 0..args.messages {
        let sensor = n % args.sensors;
        let payload = format!(
            "{{\"zone\":\"z{}\",\"sensor_id\":\"s{sensor:05}\",\"ts\":{},\"temp_c\":{:.2},\"rh\":{:.1}}}",
            sensor % 10,
            base + (n / args.sensors) as i64 * 1000,
            20.0 + (n % 97) as f64 / 10.0,
            55.0 + (n % 13) as f64
        );
        let key = format!("s{sensor:05}");
        let mut record = BaseRecord::to(&args.topic).payload(&payload).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let produced = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut rows = 0;
    while Instant::now() < deadline {
        rows = engine_rows(&args.engine, &args.source)? - before;
        if rows >= args.messages {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ingested = started.elapsed();
    println!(
        "{} messages produced in {:.2} s ({:.0} msg/s); engine counted {rows} rows after {:.2} s: {:.0} msg/s",
        args.messages,
        produced.as_secs_f64(),
        args.messages as f64 / produced.as_secs_f64(),
        ingested.as_secs_f64(),
        rows as f64 / ingested.as_secs_f64()
    );
    Ok(())
}
