//! The `audit` connector: the audit trail of this run, followed from its file.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use vibelux_interfaces::connector::{
    DeclaredSource, DefinedColumns, SourceConnector, SourceSpec, SourceStart,
};
use vibelux_interfaces::options::{OptionError, Options};
use vibelux_interfaces::source::SourceReader;

use crate::file::connector::FileInput;
use crate::file::source::{FileFormat, FileSourceConfig};
use crate::payload::RowLayout;

/// Options of an audit source: none of its own.
const OPTIONS: &[&str] = &[
    "connector",
    "allowed_lateness",
    "idle_timeout",
    "batch_size",
    "max_future",
];

/// The trail's entries are written in time order, a line at a time: a second covers a clock
/// step between two requests.
const WATERMARK_DELAY_NANOS: i64 = 1_000_000_000;

/// Lines are appended as things happen and nothing is late: a quiet trail lets the
/// watermark follow the clock after a second, so alarms and windows on it close promptly.
const QUIET_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The audit trail at `path`, where the engine writes it in this run (`--audit-log`).
pub struct AuditTrail {
    path: PathBuf,
}

impl AuditTrail {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        AuditTrail { path: path.into() }
    }
}

impl SourceConnector for AuditTrail {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn options(&self) -> &'static [&'static str] {
        OPTIONS
    }

    fn plan(
        &self,
        source: &DeclaredSource,
        options: &mut Options,
    ) -> Result<Arc<dyn SourceSpec>, OptionError> {
        let trail = super::schema();
        let columns: Vec<(&str, DataType)> = trail
            .fields()
            .iter()
            .map(|field| (field.name().as_str(), field.data_type().clone()))
            .collect();
        let layout = RowLayout::declared(source);
        crate::fixed_columns::check(options, &layout, "audit", &columns)?;
        let config = FileSourceConfig {
            path: self.path.clone(),
            format: FileFormat::Json,
            follow: true,
        };
        Ok(Arc::new(AuditInput {
            path: self.path.clone(),
            file: FileInput::new(config, layout),
        }))
    }

    fn defined_columns(&self) -> Option<DefinedColumns> {
        Some(DefinedColumns {
            schema: super::schema(),
            event_time: 0,
            watermark_delay_nanos: WATERMARK_DELAY_NANOS,
        })
    }
}

#[derive(Debug)]
struct AuditInput {
    path: PathBuf,
    file: FileInput,
}

impl SourceSpec for AuditInput {
    /// Process 0 serves the API and writes the trail; its first worker follows it.
    fn runs_in_a_cluster(&self) -> bool {
        true
    }

    fn connector(&self) -> &'static str {
        "audit"
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn resumes(&self) -> bool {
        self.file.resumes()
    }

    fn rescales(&self) -> bool {
        self.file.rescales()
    }

    fn idle_timeout(&self) -> Option<std::time::Duration> {
        Some(QUIET_AFTER)
    }

    fn describe(&self) -> String {
        format!("the audit trail, {}", self.path.display())
    }

    fn start(&self, start: &SourceStart) -> Result<Vec<Box<dyn SourceReader + Send>>, String> {
        self.file.start(start)
    }
}
