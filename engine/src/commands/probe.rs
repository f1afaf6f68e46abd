//! `vibelux probe URL`: a health check for containers, whose images carry no HTTP client.

use std::time::Duration;

use anyhow::{Context as _, bail};

/// GETs `url`; succeeds on 200 and prints the answer either way.
pub fn probe(url: &str) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    println!("{}", body.trim_end());
    if status != 200 {
        bail!("{url} answered {status}");
    }
    Ok(())
}
