//! Webhooks as a plug-in sink: a POST per row, retried, dead-lettered to a file.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use vibelux_interfaces::connector::{DeclaredSink, SinkConnector, SinkSpec};
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
