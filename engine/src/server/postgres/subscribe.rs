//! `SUBSCRIBE view` over the Postgres port: the view's contents, then every change, as rows of
//! `(mz_timestamp, [mz_progressed,] mz_diff, columns…)`, Materialize's shape, so tools written
//! for it read ours. As a query result (psycopg's `cursor.stream`) or inside `COPY (…) TO
//! STDOUT` (psql, which prints a query's rows only once it ends).
//!
//! Each row is written and flushed as it comes: a subscriber sees a change as soon as the view
//! publishes it. The subscription ends when the view does (the run finished), with an error
//! if it fell further behind than the view keeps history for, and when the client goes away
//! (noticed at the next write).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures_util::{Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::RowDescription;
use vibelux_operators::row::{Datum, Row, format_date, format_duration, format_timestamp};

use super::encode::{encode_row, fields};
use super::statements::Subscription;
use super::user_error;
use crate::live::view::{LiveView, Since};

/// The columns a subscription's rows have.
pub fn schema(view: &LiveView, subscription: &Subscription) -> Schema {
    let mut columns = vec![Field::new("mz_timestamp", DataType::Int64, false)];
    if subscription.progress {
        columns.push(Field::new("mz_progressed", DataType::Boolean, false));
    }
    columns.push(Field::new("mz_diff", DataType::Int64, true));
    columns.extend(view.schema.fields().iter().map(|f| f.as_ref().clone()));
    Schema::new(columns)
}

/// Where the rows go: query rows, or lines of a `COPY` in text format.
enum Output {
    Rows(DataRowEncoder),
    Copy,
}

struct Writer<'a, C> {
    client: &'a mut C,
    output: Output,
    progress: bool,
    width: usize,
    rows: usize,
}

impl<C> Writer<'_, C>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    async fn write(
        &mut self,
        time: u64,
        progressed: bool,
        diff: Option<i64>,
        row: &Row,
    ) -> PgWireResult<()> {
        let mut values: Row = Vec::with_capacity(self.width);
        values.push(Datum::Int64(time as i64));
        if self.progress {
            values.push(Datum::Boolean(progressed));
        }
        values.push(diff.map_or(Datum::Null, Datum::Int64));
        if row.is_empty() {
            values.resize(self.width, Datum::Null);
        } else {
            values.extend(row.iter().cloned());
        }
        let message = match &mut self.output {
            Output::Rows(encoder) => PgWireBackendMessage::DataRow(encode_row(encoder, &values)?),
            Output::Copy => {
                PgWireBackendMessage::CopyData(CopyData::new(copy_line(&values).into()))
            }
        };
        self.client.send(message).await?;
        self.rows += 1;
        Ok(())
    }
}

/// A row as a line of `COPY … TO STDOUT` text: tab-separated, `\N` for null.
fn copy_line(values: &[Datum]) -> String {
    let mut line = String::new();
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            line.push('\t');
        }
        match value {
            Datum::Null => line.push_str("\\N"),
            Datum::Boolean(v) => line.push(if *v { 't' } else { 'f' }),
            Datum::Int64(v) => line.push_str(&v.to_string()),
            Datum::Float64(v) => line.push_str(&v.to_string()),
            Datum::Utf8(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => line.push_str("\\\\"),
                        '\t' => line.push_str("\\t"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        c => line.push(c),
                    }
                }
            }
            Datum::Timestamp(nanos) => line.push_str(&format_timestamp(*nanos)),
            Datum::Duration(nanos) => line.push_str(&format_duration(*nanos)),
            Datum::Date(days) => line.push_str(&format_date(*days)),
            Datum::List(_) | Datum::Decimal { .. } => line.push_str(&value.to_string()),
        }
    }
    line.push('\n');
    line
}

/// Streams `subscription` of `view` to the client until the view ends or the client leaves;
/// returns the rows written. `describe` sends the row description first (a simple query; the
/// extended protocol described the portal already).
pub async fn stream<C>(
    client: &mut C,
    view: Arc<LiveView>,
    subscription: &Subscription,
    format: &Format,
    describe: bool,
) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let schema = schema(&view, subscription);
    let fields: Arc<Vec<FieldInfo>> = Arc::new(fields(&schema, format));
    let output = if subscription.copy {
        let columns = fields.len();
        client
            .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                0,
                columns as i16,
                vec![0; columns],
            )))
            .await?;
        Output::Copy
    } else {
        if describe {
            let description = RowDescription::new(fields.iter().map(Into::into).collect());
            client
                .send(PgWireBackendMessage::RowDescription(description))
                .await?;
        }
        Output::Rows(DataRowEncoder::new(fields.clone()))
    };
    let mut writer = Writer {
        client,
        output,
        progress: subscription.progress,
        width: fields.len(),
        rows: 0,
    };
    let mut frontier = view.watch();
    let mut cursor = if subscription.snapshot {
        let snapshot = view.snapshot();
        for (row, count) in &snapshot.rows {
            writer
                .write(snapshot.time, false, Some(*count), row)
                .await?;
        }
        snapshot.time
    } else {
        view.progress().0
    };
    loop {
        match view.since(cursor) {
            Since::Ticks {
                ticks,
                frontier: reached,
                closed,
            } => {
                for tick in &ticks {
                    for (row, diff) in &tick.updates {
                        writer.write(tick.time, false, Some(*diff), row).await?;
                    }
                }
                if reached > cursor {
                    if subscription.progress {
                        writer.write(reached, true, None, &Vec::new()).await?;
                    }
                    cursor = reached;
                }
                if closed {
                    break;
                }
            }
            Since::Behind { oldest } => {
                return Err(user_error(
                    "57014",
                    format!(
                        "the subscription to `{}` fell behind what the view keeps (from {oldest}): subscribe again",
                        view.name
                    ),
                ));
            }
        }
        if frontier.changed().await.is_err() {
            break;
        }
    }
    if subscription.copy {
        writer
            .client
            .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
    }
    Ok(writer.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_escape_text_and_mark_nulls() {
        let line = copy_line(&[
            Datum::Int64(5),
            Datum::Null,
            Datum::Utf8("a\tb\\c".into()),
            Datum::Boolean(true),
        ]);
        assert_eq!(line, "5\t\\N\ta\\tb\\\\c\tt\n");
    }
}
