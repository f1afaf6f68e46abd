//! Options of the `webhook` sink.

use std::path::PathBuf;
use std::time::Duration;

use crate::webhook::WebhookSinkConfig;

use vibelux_interfaces::options::OptionError;
use vibelux_interfaces::options::Options;

pub const SINK_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "retries",
    "backoff",
    "backoff_max",
    "timeout",
    "dead_letter",
    "audit",
    "tls_ca",
    "header.*",
];

pub fn sink(options: &mut Options, name: &str) -> Result<WebhookSinkConfig, OptionError> {
    let (url, position) = options.required("url", "a 'webhook' sink")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(OptionError::new(
            position,
            format!("option `url`: expected an http:// or https:// URL, found '{url}'"),
        ));
    }
    let retries = options.count("retries")?.unwrap_or(5);
    Ok(WebhookSinkConfig {
        url,
        retries: u32::try_from(retries).unwrap_or(u32::MAX),
        backoff: options
            .duration("backoff")?
            .unwrap_or(Duration::from_millis(200)),
        backoff_max: options
            .duration("backoff_max")?
            .unwrap_or(Duration::from_secs(10)),
        timeout: options
            .duration("timeout")?
            .unwrap_or(Duration::from_secs(5)),
        dead_letter: options
            .take("dead_letter")
            .map(|(path, _)| PathBuf::from(path))
            .unwrap_or_else(|| PathBuf::from(format!("{name}.dead.jsonl"))),
        audit: options
            .take("audit")
            .map(|(path, _)| PathBuf::from(path))
            .unwrap_or_else(|| PathBuf::from(format!("{name}.audit.jsonl"))),
        headers: options.take_prefixed("header."),
        tls_ca: options.take("tls_ca").map(|(path, _)| PathBuf::from(path)),
    })
}
