//! Webhooks as a plug-in sink: a POST per row, retried, dead-lettered to a file.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{DeclaredSink, Reach, SinkConnector, SinkSpec};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::sink::{SinkError, SinkWriter};

use super::{WebhookSender, WebhookSinkConfig};

pub struct Webhook;

impl SinkConnector for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn options(&self) -> &'static [&'static str] {
        super::options::SINK_OPTIONS
    }

    fn plan(
        &self,
        sink: &DeclaredSink,
        options: &mut Options,
    ) -> Result<Arc<dyn SinkSpec>, OptionError> {
        Ok(Arc::new(Deliveries(super::options::sink(
            options, &sink.name,
        )?)))
    }
}

#[derive(Debug)]
struct Deliveries(WebhookSinkConfig);

impl SinkSpec for Deliveries {
    fn connector(&self) -> &'static str {
        "webhook"
    }

    fn reach(&self) -> Reach {
        Reach {
            hosts: url_authority(&self.0.url).into_iter().collect(),
            ..Reach::default()
        }
    }

    fn describe(&self) -> String {
        format!("{} (webhook)", self.0.url)
    }

    fn open(&self, schema: SchemaRef, changelog: bool) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(WebhookSender::open(
            self.0.clone(),
            schema,
            changelog,
            false,
        )?))
    }

    /// At least once: a cut waits until the receiver has answered every row before it (or it
    /// was dead-lettered), and each request carries the row's `Idempotency-Key`.
    fn resumes(&self) -> bool {
        true
    }

    fn open_resuming(
        &self,
        schema: SchemaRef,
        changelog: bool,
        _part: Option<&[u8]>,
    ) -> Result<Box<dyn SinkWriter>, SinkError> {
        Ok(Box::new(WebhookSender::open(
            self.0.clone(),
            schema,
            changelog,
            true,
        )?))
    }
}

/// `host:port` of an `http(s)://` URL (the port of its scheme when none is given).
fn url_authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let has_port = authority.rsplit_once(':').is_some_and(|(_, port)| {
        port.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']')
    });
    Some(if has_port {
        authority.to_ascii_lowercase()
    } else if scheme.eq_ignore_ascii_case("https") {
        format!("{}:443", authority.to_ascii_lowercase())
    } else {
        format!("{}:80", authority.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::url_authority;

    #[test]
    fn a_url_names_the_host_and_port_it_reaches() {
        assert_eq!(
            url_authority("http://127.0.0.1:9000/hook").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            url_authority("https://Alerts.example/x?y").as_deref(),
            Some("alerts.example:443")
        );
        assert_eq!(
            url_authority("http://user:pw@host.example/").as_deref(),
            Some("host.example:80")
        );
        assert_eq!(url_authority("not a url"), None);
    }
}
