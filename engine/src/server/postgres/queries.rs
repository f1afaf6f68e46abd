//! Running statements sent over the Postgres port, by the simple protocol (psql) and the
//! extended one (drivers: parse, bind with parameters, describe, execute).
//!
//! Each statement is classified first (`statements`), its role checked against the caller's,
//! and then served: queries by DataFusion over the live views and warehouse (`tables`),
//! subscriptions from the live view (`subscribe`), pipeline statements by the same `Control`
//! that serves `POST /v1/sql`, recorded in the audit trail the same way.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use futures_util::{Sink, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use vibelux_queries::planner::Outcome;

use super::encode::{batch_rows, fields, pg_type};
use super::login::caller;
use super::statements::{PgStatement, classify, split};
use super::{subscribe, tables, user_error};
use crate::auth::Role;
use crate::control::ControlError;
use crate::server::ServerState;
use crate::server::audit::{AuditEntry, Peer};
use crate::server::guard::Caller;

pub struct Queries {
    parser: Arc<Parser>,
}

impl Queries {
    pub fn new(state: Arc<ServerState>) -> Queries {
        Queries {
            parser: Arc::new(Parser { state }),
        }
    }
}

/// A statement as the extended protocol keeps it between parse and execute.
#[derive(Debug, Clone)]
pub struct Prepared {
    statement: PgStatement,
    /// The columns it returns (`None`: no rows).
    columns: Option<SchemaRef>,
    /// The types of `$1`, `$2`, … as the query uses them.
    parameters: Vec<Option<DataType>>,
}

pub struct Parser {
    state: Arc<ServerState>,
}

/// A session over the live views and warehouse as they are now.
fn query_session(state: &ServerState) -> PgWireResult<SessionContext> {
    let warehouse = state
        .control
        .as_ref()
        .map(|control| control.warehouse_tables())
        .unwrap_or_default();
    tables::session(state.views.clone(), warehouse).map_err(query_error)
}

fn query_error(error: datafusion::error::DataFusionError) -> PgWireError {
    let message = error.find_root().to_string();
    let code = if message.contains("not found") || message.contains("No table named") {
        "42P01"
    } else {
        "42000"
    };
    user_error(code, message)
}

/// Queries read: DataFusion's own DDL, DML and `SET` (`CREATE EXTERNAL TABLE`, `INSERT INTO`
/// a warehouse table, `COPY … TO` a file) are not served; the pipeline changes through its
/// own statements and roles.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses `statement` when `caller`'s role does not cover it.
fn authorize(state: &ServerState, caller: &Caller, statement: &PgStatement) -> PgWireResult<()> {
    let needed = statement.needs();
    if caller.role().includes(needed) {
        return Ok(());
    }
    state.access.refused("role");
    Err(user_error(
        "42501",
        format!(
            "token `{}` has role {}; changing the pipeline needs {needed} or above",
            caller.name(),
            caller.role()
        ),
    ))
}

impl Parser {
    /// Classifies and plans `sql`, learning its result columns and parameter types.
    async fn prepare(&self, sql: &str) -> PgWireResult<Prepared> {
        if split(sql).len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let statement = classify(sql).map_err(|message| user_error("42601", message))?;
        let (columns, parameters) = match &statement {
            PgStatement::Query(query) => {
                let context = query_session(&self.state)?;
                let plan = context
                    .state()
                    .create_logical_plan(query)
                    .await
                    .map_err(query_error)?;
                read_only().verify_plan(&plan).map_err(query_error)?;
                let mut parameters: Vec<(String, Option<DataType>)> = plan
                    .get_parameter_types()
                    .map_err(query_error)?
                    .into_iter()
                    .collect();
                parameters.sort_by_key(|(name, _)| {
                    name.trim_start_matches('$')
                        .parse::<usize>()
                        .unwrap_or(usize::MAX)
                });
                let schema: Schema = plan.schema().as_arrow().clone();
                (
                    Some(Arc::new(schema)),
                    parameters
                        .into_iter()
                        .map(|(_, data_type)| data_type)
                        .collect(),
                )
            }
            PgStatement::Subscribe(subscription) => {
                let view = self.find_view(&subscription.view)?;
                (
                    Some(Arc::new(subscribe::schema(&view, subscription))),
                    Vec::new(),
                )
            }
            PgStatement::ShowSetting(name) => (
                Some(Arc::new(Schema::new(vec![
                    datafusion::arrow::datatypes::Field::new(name, DataType::Utf8, true),
                ]))),
                Vec::new(),
            ),
            PgStatement::Pipeline {
                sql,
                changes: false,
            } => {
                // SHOW and EXPLAIN change nothing: their columns are learnt by running them.
                let outcomes = self.pipeline(sql, &Caller::Local).await?;
                (outcome_schema(outcomes.last().map(|(_, o)| o)), Vec::new())
            }
            _ => (None, Vec::new()),
        };
        Ok(Prepared {
            statement,
            columns,
            parameters,
        })
    }

    fn find_view(&self, name: &str) -> PgWireResult<Arc<crate::live::view::LiveView>> {
        self.state.views.get(name).ok_or_else(|| {
            let names: Vec<String> = self
                .state
                .views
                .all()
                .iter()
                .map(|v| v.name.clone())
                .collect();
            user_error(
                "42P01",
                format!(
                    "no materialized view `{name}` to subscribe to; there are: {}",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })
    }

    /// Applies pipeline statements as `POST /v1/sql` does.
    async fn pipeline(&self, sql: &str, caller: &Caller) -> PgWireResult<Vec<(String, Outcome)>> {
        let Some(control) = self.state.control.clone() else {
            return Err(user_error("55000", "this run takes no changes".into()));
        };
        let may_actuate = caller.role().includes(Role::Admin);
        let text = sql.to_string();
        let outcome =
            tokio::task::spawn_blocking(move || control.apply_statements(&text, may_actuate))
                .await
                .map_err(|error| user_error("XX000", error.to_string()))?;
        outcome.map_err(|error| match error {
            ControlError::Sql(message) => user_error("42601", message),
            ControlError::Unavailable(message) => user_error("55000", message),
            ControlError::Forbidden(message) => {
                self.state.access.refused("limits");
                user_error("42501", message)
            }
        })
    }

    /// Runs a prepared statement for `client`, with parameter values already bound.
    async fn execute<C>(
        &self,
        client: &mut C,
        prepared: &Prepared,
        parameters: ParamValues,
        format: &Format,
        describe: bool,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let caller = caller(client);
        authorize(&self.state, &caller, &prepared.statement)?;
        match &prepared.statement {
            PgStatement::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            PgStatement::End { tag } => Ok(Response::TransactionEnd(Tag::new(tag))),
            PgStatement::Setting { tag } => Ok(Response::Execution(Tag::new(tag))),
            PgStatement::ShowSetting(name) => {
                let value = setting(name)?;
                let schema = prepared.columns.clone().expect("a setting has a column");
                text_rows(&schema, format, vec![vec![value]], "SHOW")
            }
            PgStatement::Query(query) => {
                let context = query_session(&self.state)?;
                let mut frame = context
                    .sql_with_options(query, read_only())
                    .await
                    .map_err(query_error)?;
                if !parameters_empty(&parameters) {
                    frame = frame.with_param_values(parameters).map_err(query_error)?;
                }
                let schema: Schema = frame.schema().as_arrow().clone();
                let batches = frame.collect().await.map_err(query_error)?;
                let fields = Arc::new(fields(&schema, format));
                let mut rows = Vec::new();
                for batch in &batches {
                    rows.extend(batch_rows(batch, &fields)?);
                }
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    stream::iter(rows.into_iter().map(Ok)),
                )))
            }
            PgStatement::Subscribe(subscription) => {
                let view = self.find_view(&subscription.view)?;
                let seat = self
                    .state
                    .access
                    .seat(&caller)
                    .map_err(|refusal| user_error("53300", refusal.1))?;
                self.record(client, &caller, "subscribe", &view.name, "ok", "postgres");
                let rows = subscribe::stream(client, view, subscription, format, describe).await;
                drop(seat);
                let rows = rows?;
                Ok(Response::Execution(
                    Tag::new(if subscription.copy {
                        "COPY"
                    } else {
                        "SUBSCRIBE"
                    })
                    .with_rows(rows),
                ))
            }
            PgStatement::Pipeline { sql, changes } => {
                let result = self.pipeline(sql, &caller).await;
                if *changes {
                    let (outcome, detail) = match &result {
                        Ok(_) => ("ok", String::new()),
                        Err(error) => ("refused", error.to_string()),
                    };
                    self.record(client, &caller, "sql", sql, outcome, &detail);
                }
                let outcomes = result?;
                let Some((text, last)) = outcomes.last() else {
                    return Ok(Response::EmptyQuery);
                };
                match outcome_schema(Some(last)) {
                    Some(schema) => text_rows(&schema, format, outcome_rows(last), "SHOW"),
                    None => Ok(Response::Execution(Tag::new(&command_tag(text)))),
                }
            }
        }
    }

    fn record(
        &self,
        client: &impl ClientInfo,
        caller: &Caller,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) {
        self.state.audit(AuditEntry {
            actor: caller.name(),
            role: caller.token_role(),
            action,
            target,
            outcome,
            detail,
            peer: Some(Peer(client.socket_addr())),
        });
    }
}

/// An error as one of a simple query's responses: the statements before it stand.
fn error_response(error: PgWireError) -> Response {
    match error {
        PgWireError::UserError(info) => Response::Error(info),
        other => Response::Error(Box::new(pgwire::error::ErrorInfo::new(
            "ERROR".into(),
            "XX000".into(),
            other.to_string(),
        ))),
    }
}

fn parameters_empty(parameters: &ParamValues) -> bool {
    matches!(parameters, ParamValues::List(list) if list.is_empty())
}

/// `CREATE VIEW`, `CREATE MATERIALIZED VIEW`, `DROP SINK`: a statement's words up to the kind
/// of object, as Postgres tags them.
fn command_tag(statement: &str) -> String {
    let mut words = Vec::new();
    for word in statement.split_whitespace().take(4) {
        let word = word.to_ascii_uppercase();
        let kind = matches!(
            word.as_str(),
            "VIEW" | "SINK" | "SOURCE" | "TABLE" | "MODEL" | "ALARM"
        );
        words.push(word);
        if kind {
            break;
        }
    }
    words.join(" ")
}

/// The columns of a `SHOW` or `EXPLAIN` outcome (`None` for one that returns no rows).
fn outcome_schema(outcome: Option<&Outcome>) -> Option<SchemaRef> {
    let text = |name: &str| datafusion::arrow::datatypes::Field::new(name, DataType::Utf8, true);
    match outcome? {
        Outcome::Table { columns, .. } => Some(Arc::new(Schema::new(
            columns.iter().map(|c| text(c)).collect::<Vec<_>>(),
        ))),
        Outcome::Text(_) => Some(Arc::new(Schema::new(vec![text("QUERY PLAN")]))),
        _ => None,
    }
}

fn outcome_rows(outcome: &Outcome) -> Vec<Vec<String>> {
    match outcome {
        Outcome::Table { rows, .. } => rows.clone(),
        Outcome::Text(text) => text.lines().map(|line| vec![line.to_string()]).collect(),
        _ => Vec::new(),
    }
}

/// Rows of text columns.
fn text_rows(
    schema: &Schema,
    format: &Format,
    rows: Vec<Vec<String>>,
    tag: &str,
) -> PgWireResult<Response> {
    let fields = Arc::new(fields(schema, format));
    let mut encoder = pgwire::api::results::DataRowEncoder::new(fields.clone());
    let mut encoded = Vec::with_capacity(rows.len());
    for row in rows {
        for value in row {
            encoder.encode_field(&value)?;
        }
        encoded.push(Ok(encoder.take_row()));
    }
    let mut response = QueryResponse::new(fields, stream::iter(encoded));
    response.set_command_tag(tag);
    Ok(Response::Query(response))
}

/// The server settings clients ask for with `SHOW`.
fn setting(name: &str) -> PgWireResult<String> {
    Ok(match name {
        "server_version" => "14.0".into(),
        "server_version_num" => "140000".into(),
        "transaction_isolation" | "default_transaction_isolation" => "serializable".into(),
        "standard_conforming_strings" => "on".into(),
        "timezone" => "UTC".into(),
        "datestyle" => "ISO, MDY".into(),
        "client_encoding" | "server_encoding" => "UTF8".into(),
        "search_path" => "public".into(),
        "integer_datetimes" => "on".into(),
        "max_identifier_length" => "63".into(),
        _ => {
            return Err(user_error(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        }
    })
}

/// A bound parameter as DataFusion takes it: decoded by its Postgres type, then cast to the
/// type the query uses it as.
fn parameter(
    portal: &Portal<Prepared>,
    index: usize,
    pg: &Type,
    wanted: Option<&DataType>,
) -> PgWireResult<ScalarValue> {
    let bad = |error: String| user_error("22P02", format!("parameter ${}: {error}", index + 1));
    let value = match *pg {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(index, pg)?),
        Type::INT2 => ScalarValue::Int64(portal.parameter::<i16>(index, pg)?.map(i64::from)),
        Type::INT4 => ScalarValue::Int64(portal.parameter::<i32>(index, pg)?.map(i64::from)),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(index, pg)?),
        Type::FLOAT4 => ScalarValue::Float64(portal.parameter::<f32>(index, pg)?.map(f64::from)),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(index, pg)?),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<chrono::DateTime<chrono::FixedOffset>>(index, &Type::TIMESTAMPTZ)?
                .map(|time| time.timestamp_micros()),
            None,
        ),
        _ => {
            let text = match portal.parameters.get(index).and_then(Option::as_ref) {
                Some(bytes) if portal.parameter_format.is_text(index) => {
                    Some(String::from_utf8(bytes.to_vec()).map_err(|e| bad(e.to_string()))?)
                }
                Some(_) => {
                    return Err(bad(format!(
                        "binary values of type {pg} are not read; send it as text"
                    )));
                }
                None => None,
            };
            ScalarValue::Utf8(text)
        }
    };
    match wanted {
        Some(data_type) if value.data_type() != *data_type => value
            .cast_to(data_type)
            .map_err(|error| bad(error.find_root().to_string())),
        _ => Ok(value),
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.prepare(sql).await.map(Some)
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(statement
            .parameters
            .iter()
            .map(|data_type| data_type.as_ref().map_or(Type::TEXT, pg_type))
            .collect())
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &statement.columns {
            Some(schema) => fields(schema, format.unwrap_or(&Format::UnifiedText)),
            None => Vec::new(),
        })
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut responses = Vec::new();
        for text in split(query) {
            let prepared = match classify(text) {
                Err(message) => {
                    responses.push(error_response(user_error("42601", message)));
                    break;
                }
                // Pipeline statements need no preparing (and SHOW would run twice).
                Ok(statement @ PgStatement::Pipeline { .. }) => Prepared {
                    statement,
                    columns: None,
                    parameters: Vec::new(),
                },
                Ok(_) => match self.parser.prepare(text).await {
                    Ok(prepared) => prepared,
                    Err(error) => {
                        responses.push(error_response(error));
                        break;
                    }
                },
            };
            let no_parameters = ParamValues::List(Vec::new());
            match self
                .parser
                .execute(client, &prepared, no_parameters, &Format::UnifiedText, true)
                .await
            {
                Ok(response) => responses.push(response),
                // Later statements do not run after an error, as in Postgres.
                Err(error) => {
                    responses.push(error_response(error));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stored: &StoredStatement<Prepared> = &portal.statement;
        let prepared = &stored.statement;
        let mut values = Vec::with_capacity(portal.parameter_len());
        for index in 0..portal.parameter_len() {
            let wanted = prepared.parameters.get(index).and_then(Option::as_ref);
            let declared = stored.parameter_types.get(index).cloned().flatten();
            let pg = declared
                .filter(|t| *t != Type::UNKNOWN)
                .unwrap_or_else(|| wanted.map_or(Type::TEXT, pg_type));
            values.push(parameter(portal, index, &pg, wanted)?);
        }
        self.parser
            .execute(
                client,
                prepared,
                ParamValues::List(values.into_iter().map(Into::into).collect()),
                &portal.result_column_format,
                false,
            )
            .await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parameters = self.parser.get_parameter_types(&target.statement)?;
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(
            &portal.statement.statement,
            Some(&portal.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }
}
