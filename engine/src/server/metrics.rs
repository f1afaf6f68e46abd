//! `GET /metrics`: the run's counters in the Prometheus (OpenMetrics) text format.
//!
//! Counters live where the work happens (atomics in sources, sinks and views); a collector reads
//! them at scrape time, so metrics cost the dataflow nothing between scrapes. Only the step
//! latency histogram is observed as it happens, by worker 0.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::ServerState;
use crate::live::view::{LiveView, LiveViews};
use crate::runtime::RunMetrics;
use crate::state::CheckpointMetrics;
use vibelux_connectors::sink::SinkMetrics;
use vibelux_operators::row::Datum;

struct RunCollector {
    metrics: Arc<RunMetrics>,
    views: LiveViews,
    added_sinks: Vec<(String, Arc<SinkMetrics>)>,
}

impl std::fmt::Debug for RunCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labelled, value) in values {
        let labels = [(label, *labelled)];
        ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, f64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labelled, value) in values {
        let labels = [(label, *labelled)];
        ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for RunCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let sources = &self.metrics.sources;
        let per_source = |read: &dyn Fn(&vibelux_connectors::source::SourceMetrics) -> u64| {
            sources
                .iter()
                .map(|(name, m)| (name.as_str(), read(m)))
                .collect::<Vec<_>>()
        };
        counter(
            &mut encoder,
            "vibelux_source_rows",
            "Rows a source accepted",
            "source",
            &per_source(&|m| m.rows.load(Relaxed)),
        )?;
        counter(
            &mut encoder,
            "vibelux_source_dead_letters",
            "Input a source could not decode (kept in <source>_errors)",
            "source",
            &per_source(&|m| m.dead_letters.load(Relaxed)),
        )?;
        counter(
            &mut encoder,
            "vibelux_source_late_rows",
            "Rows beyond the allowed lateness (kept in <source>_late)",
            "source",
            &per_source(&|m| m.late_rows.load(Relaxed)),
        )?;
        counter(
            &mut encoder,
            "vibelux_source_read_errors",
            "Times a source could not read its input (a live one retries with backoff)",
            "source",
            &per_source(&|m| m.read_errors.load(Relaxed)),
        )?;
        let networked: Vec<&(String, Arc<vibelux_connectors::source::SourceMetrics>)> = sources
            .iter()
            .filter(|(_, m)| m.networked.load(Relaxed))
            .collect();
        let connected: Vec<(&str, f64)> = networked
            .iter()
            .map(|(name, m)| {
                (
                    name.as_str(),
                    f64::from(u8::from(m.connected.load(Relaxed))),
                )
            })
            .collect();
        gauge(
            &mut encoder,
            "vibelux_source_connected",
            "1 while a networked source (MQTT) is connected to its broker",
            "source",
            &connected,
        )?;
        let failures: Vec<(&str, u64)> = networked
            .iter()
            .map(|(name, m)| (name.as_str(), m.connection_errors.load(Relaxed)))
            .collect();
        counter(
            &mut encoder,
            "vibelux_source_connection_errors",
            "Times a networked source lost its connection or failed to reconnect",
            "source",
            &failures,
        )?;
        let now_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as f64;
        let lags: Vec<(&str, f64)> = sources
            .iter()
            .filter_map(|(name, m)| {
                let watermark = m.watermark_millis()? as f64;
                Some((name.as_str(), (now_millis - watermark) / 1000.0))
            })
            .collect();
        gauge(
            &mut encoder,
            "vibelux_watermark_lag_seconds",
            "Wall clock minus the source's watermark (large for replays of the past)",
            "source",
            &lags,
        )?;
        let all_sinks: Vec<&(String, Arc<SinkMetrics>)> =
            self.metrics.sinks.iter().chain(&self.added_sinks).collect();
        let sinks: Vec<(&str, u64)> = all_sinks
            .iter()
            .map(|(name, m)| (name.as_str(), m.rows_written.load(Relaxed)))
            .collect();
        counter(
            &mut encoder,
            "vibelux_sink_rows",
            "Rows a sink delivered (written out, committed, or accepted by the broker)",
            "sink",
            &sinks,
        )?;
        let errors: Vec<(&str, u64)> = all_sinks
            .iter()
            .map(|(name, m)| (name.as_str(), m.write_errors.load(Relaxed)))
            .collect();
        counter(
            &mut encoder,
            "vibelux_sink_write_errors",
            "Rows a sink's target refused (network sinks; see their audit logs)",
            "sink",
            &errors,
        )?;
        let delivery_errors: Vec<(&str, u64)> = all_sinks
            .iter()
            .map(|(name, m)| (name.as_str(), m.delivery_errors.load(Relaxed)))
            .collect();
        counter(
            &mut encoder,
            "vibelux_sink_delivery_errors",
            "Failed attempts to flush or commit a sink's rows (each retry counts; the rows are kept)",
            "sink",
            &delivery_errors,
        )?;
        let stalled: Vec<(&str, f64)> = all_sinks
            .iter()
            .map(|(name, m)| (name.as_str(), f64::from(u8::from(m.stalled().is_some()))))
            .collect();
        gauge(
            &mut encoder,
            "vibelux_sink_stalled",
            "1 while a sink cannot deliver (it holds its rows, retries, and holds sources back)",
            "sink",
            &stalled,
        )?;
        let views = self.views.all();
        let rows: Vec<(&str, f64)> = views
            .iter()
            .map(|view| (view.name.as_str(), view.len() as f64))
            .collect();
        gauge(
            &mut encoder,
            "vibelux_view_rows",
            "Rows in a materialized view",
            "view",
            &rows,
        )?;
        let subscribers: Vec<(&str, f64)> = views
            .iter()
            .map(|view| (view.name.as_str(), view.subscribers() as f64))
            .collect();
        gauge(
            &mut encoder,
            "vibelux_view_subscribers",
            "WebSocket subscribers of a materialized view",
            "view",
            &subscribers,
        )?;
        let updates: Vec<(&str, u64)> = views
            .iter()
            .map(|view| (view.name.as_str(), view.updates_published()))
            .collect();
        counter(
            &mut encoder,
            "vibelux_view_updates",
            "Changes (rows with a diff) a materialized view published",
            "view",
            &updates,
        )?;
        {
            let mut sweeps = encoder.encode_descriptor(
                "vibelux_view_sweep_seconds",
                "Time one sweep took to write a materialized view's changes to its subscribers",
                None,
                MetricType::Histogram,
            )?;
            for view in &views {
                let labels = [("view", view.name.as_str())];
                view.fanout()
                    .sweep_seconds
                    .encode(sweeps.encode_family(&labels)?)?;
            }
        }
        let expression_errors: Vec<(&str, u64)> = self
            .metrics
            .expression_errors
            .iter()
            .map(|(view, calcs)| {
                let failed = calcs
                    .iter()
                    .map(|calc| calc.failed_rows.load(Relaxed))
                    .sum();
                (view.as_str(), failed)
            })
            .collect();
        counter(
            &mut encoder,
            "vibelux_view_expression_errors",
            "Rows on which a view's expressions failed (kept in <view>_errors)",
            "view",
            &expression_errors,
        )?;
        encode_alarm_instances(&mut encoder, &self.metrics.alarm_states, &views)?;
        if let Some(checkpoints) = &self.metrics.checkpoints {
            encode_checkpoints(&mut encoder, checkpoints)?;
        }
        counter(
            &mut encoder,
            "vibelux_function_out_of_range",
            "Inputs a cultivation function refused (out of range: NULL instead)",
            "function",
            &vibelux_operators::cultivation::out_of_range(),
        )?;
        Ok(())
    }
}

/// How many instances of each alarm are in each state (`active`, `acknowledged`, `cleared`,
/// `shelved`, …), counted from its `<alarm>_state` view when scraped.
fn encode_alarm_instances(
    encoder: &mut DescriptorEncoder,
    alarm_states: &[(String, String)],
    views: &[Arc<LiveView>],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "vibelux_alarm_instances",
        "Instances of an alarm (one per key) by their latest state",
        None,
        MetricType::Gauge,
    )?;
    for (alarm, state_view) in alarm_states {
        let Some(view) = views.iter().find(|view| &view.name == state_view) else {
            continue;
        };
        let Ok(column) = view.schema.index_of("state") else {
            continue;
        };
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for (row, diff) in view.contents() {
            if let Some(Datum::Utf8(state)) = row.get(column) {
                *counts.entry(state.to_string()).or_default() += diff;
            }
        }
        for (state, count) in counts {
            let labels = [("alarm", alarm.as_str()), ("state", state.as_str())];
            ConstGauge::new(count as f64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Checkpoints stored and failed, and the last one's time, age, duration and size.
fn encode_checkpoints(
    encoder: &mut DescriptorEncoder,
    checkpoints: &CheckpointMetrics,
) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = [
        (
            "vibelux_checkpoints_stored",
            "Checkpoints stored in the state directory",
            checkpoints.stored.load(Relaxed),
        ),
        (
            "vibelux_checkpoint_failures",
            "Checkpoints that could not be stored",
            checkpoints.failures.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        ConstCounter::new(value).encode(encoder.encode_descriptor(
            name,
            help,
            None,
            MetricType::Counter,
        )?)?;
    }
    let last_millis = checkpoints.last_stored_unix_millis.load(Relaxed);
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut gauges = vec![
        (
            "vibelux_checkpoint_duration_seconds",
            "Time the last checkpoint took, from its request to stored",
            checkpoints.last_duration_micros.load(Relaxed) as f64 / 1e6,
        ),
        (
            "vibelux_checkpoint_size_bytes",
            "Size of the last checkpoint stored",
            checkpoints.last_size_bytes.load(Relaxed) as f64,
        ),
        (
            "vibelux_checkpoint_written_bytes",
            "What the last checkpoint wrote: the chunks of state that changed since the one before",
            checkpoints.last_written_bytes.load(Relaxed) as f64,
        ),
    ];
    if last_millis > 0 {
        gauges.push((
            "vibelux_checkpoint_last_stored_timestamp_seconds",
            "When the last checkpoint was stored (Unix time)",
            last_millis as f64 / 1e3,
        ));
        gauges.push((
            "vibelux_checkpoint_age_seconds",
            "Time since the last checkpoint was stored",
            now_millis.saturating_sub(last_millis) as f64 / 1e3,
        ));
    }
    for (name, help, value) in gauges {
        ConstGauge::new(value).encode(encoder.encode_descriptor(
            name,
            help,
            None,
            MetricType::Gauge,
        )?)?;
    }
    Ok(())
}

/// The text of one scrape.
pub fn encode(state: &ServerState) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RunCollector {
        metrics: state.metrics.clone(),
        views: state.views.clone(),
        added_sinks: state.added_sinks(),
    }));
    registry.register(
        "vibelux_http_refusals",
        "Requests refused, by reason: host, origin, token, role, content_type, limits, subscribers",
        state.access.refusals.clone(),
    );
    registry.register(
        "vibelux_dataflow_step_seconds",
        "Time this process's first worker spent in one dataflow step that had work",
        state.metrics.step_seconds.clone(),
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}
