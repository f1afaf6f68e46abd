//! `POST /v1/alarms/{name}/{acknowledge|shelve|unshelve}`: people's commands to alarm instances.
//!
//! The instance is named by its key, e.g. `{"key": {"zone": "z1"}, "by": "maria"}`, and looked
//! up in the alarm's state view, so a command for an instance that does not exist (or is not
//! active, for an acknowledgement) is refused here with the reason. Accepted commands go through
//! the run's alarm desk to the worker that holds the instance. That worker records the
//! transition (with `by` and `note`) in the alarm's event time.
//!
//! With tokens, `by` is the token's name: a command cannot be recorded in someone else's. A
//! shelve is bounded (`--max-shelve`): an alarm shelved "forever" is an alarm removed without
//! anyone deciding to remove it.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use vibelux_operators::alarm::{AlarmAction, AlarmCommand};

use super::audit::{AuditEntry, Peer};
use super::{ApiError, Caller, ServerState};
use crate::format::datum_text;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// The instance's key columns and values.
    #[serde(default)]
    key: serde_json::Map<String, Value>,
    /// Who acknowledges or shelves: recorded in the transition. With tokens, the token's name
    /// (and may be left out).
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    note: String,
    /// For `shelve`: how long, e.g. `"30m"`.
    #[serde(rename = "for")]
    duration: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub async fn command(
    State(state): State<Arc<ServerState>>,
    Extension(caller): Extension<Caller>,
    peer: Option<Extension<Peer>>,
    Path((alarm, action)): Path<(String, String)>,
    axum::Json(body): axum::Json<CommandBody>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let target = format!("{alarm}/{action} {}", Value::Object(body.key.clone()));
    let answer = execute(&state, &caller, alarm, action, body);
    let (outcome, detail) = match &answer {
        Ok(_) => ("ok", String::new()),
        Err(ApiError(_, message)) => ("refused", message.clone()),
    };
    state.audit(AuditEntry {
        actor: caller.name(),
        role: caller.token_role(),
        action: "alarm",
        target: &target,
        outcome,
        detail: &detail,
        peer: peer.map(|Extension(peer)| peer),
    });
    answer
}

fn execute(
    state: &ServerState,
    caller: &Caller,
    alarm: String,
    action: String,
    body: CommandBody,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let by = caller.actor(body.by.as_deref())?;
    let action_name = action.clone();
    let action = match action.as_str() {
        "acknowledge" => AlarmAction::Acknowledge,
        "unshelve" => AlarmAction::Unshelve,
        "shelve" => {
            let text = body
                .duration
                .as_deref()
                .ok_or_else(|| bad("shelve needs `for`, how long: e.g. \"30m\""))?;
            let duration: Duration = humantime::parse_duration(text)
                .map_err(|error| bad(format!("`for`: {error} (e.g. \"30m\", \"8h\")")))?;
            let longest = state.access.max_shelve;
            if duration > longest {
                return Err(bad(format!(
                    "`for`: {text} is longer than an alarm may be shelved here ({}, --max-shelve)",
                    humantime::format_duration(longest)
                )));
            }
            AlarmAction::Shelve {
                for_nanos: i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX),
            }
        }
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: acknowledge, shelve or unshelve"),
            ));
        }
    };
    let view = state.views.get(&format!("{alarm}_state")).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no alarm `{alarm}` in this pipeline"),
        )
    })?;
    let keys = view.key.clone().unwrap_or_default();
    let key_names: Vec<String> = keys
        .iter()
        .map(|column| view.schema.field(*column).name().clone())
        .collect();
    let given: Vec<String> = body.key.keys().cloned().collect();
    let mut missing: Vec<&String> = key_names
        .iter()
        .filter(|k| !body.key.contains_key(*k))
        .collect();
    missing.extend(given.iter().filter(|k| !key_names.contains(k)));
    if !missing.is_empty() || given.len() != key_names.len() {
        return Err(bad(format!(
            "alarm `{alarm}` is keyed by [{}]; give \"key\": {{{}}}",
            key_names.join(", "),
            key_names
                .iter()
                .map(|k| format!("\"{k}\": …"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let wanted: Vec<String> = key_names
        .iter()
        .map(|name| match &body.key[name] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect();
    let snapshot = view.snapshot();
    let state_column = view
        .schema
        .index_of("state")
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no state column".into()))?;
    let row = snapshot
        .rows
        .iter()
        .map(|(row, _)| row)
        .find(|row| {
            keys.iter()
                .zip(&wanted)
                .all(|(column, value)| datum_text(&row[*column]) == *value)
        })
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("alarm `{alarm}` has no instance with that key (none has raised yet)"),
            )
        })?;
    let current = datum_text(&row[state_column]);
    if action == AlarmAction::Acknowledge && current != "active" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("cannot acknowledge: the instance is {current}, not active"),
        ));
    }
    let key = keys.iter().map(|column| row[*column].clone()).collect();
    let command = AlarmCommand {
        key,
        action: action.clone(),
        by: by.clone(),
        note: body.note.clone(),
    };
    if !state.metrics.alarms.send(&alarm, command) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("alarm `{alarm}` is not running"),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "alarm": alarm,
            "key": body.key,
            "action": action_name,
            "by": by,
        })),
    ))
}
