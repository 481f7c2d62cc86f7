//! `/ui/sagas`: sagas newest first, filtered by status, definition, correlation id, a
//! business key in the context and a time range, 50 a page (a keyset cursor), the rows
//! refreshed every 5 s (htmx, `/ui/sagas/rows`) while the page is open.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use sagaflow_engine::core::{SagaFilter, SagaId, SagaState, Status};
use serde::Deserialize;
use serde_json::Value;

use super::{layout, status_badge, when};
use crate::extract::ApiQuery;
use crate::ApiState;

const PAGE: usize = 50;

/// The list's filters, as the form sends them (empty means any).
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
pub(crate) struct Filters {
    status: Option<String>,
    definition: Option<String>,
    correlation: Option<String>,
    /// A value anywhere at the top of the context (an order id, a user id).
    key: Option<String>,
    /// `YYYY-MM-DDTHH:MM` (UTC), as a datetime-local input sends it.
    from: Option<String>,
    to: Option<String>,
    /// `{created_at}_{saga_id}` of the last row of the previous page.
    before: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

use crate::times::parse_utc as parse_time;

/// The page of sagas the filters select, and the cursor of the next page; or what is wrong
/// with a filter.
async fn select(state: &ApiState, f: &Filters) -> Result<(Vec<SagaState>, Option<String>), String> {
    let status = match given(&f.status) {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| format!("{s:?} is not a status"))?),
    };
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        given(v)
            .map(|t| {
                parse_time(t)
                    .ok_or_else(|| format!("{name} {t:?} is not a time (YYYY-MM-DDTHH:MM, UTC)"))
            })
            .transpose()
    };
    let before = match given(&f.before) {
        None => None,
        Some(c) => Some(
            c.split_once('_')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, SagaId(id.to_string()))))
                .ok_or_else(|| "that page link is broken; start from the first page".to_string())?,
        ),
    };
    let key = given(&f.key).map(str::to_string);
    let mut filter = SagaFilter {
        status,
        definition: given(&f.definition).map(str::to_string),
        correlation_key: given(&f.correlation).map(str::to_string),
        created_after: time("from", &f.from)?,
        created_before: time("to", &f.to)?,
        before,
        limit: PAGE + 1,
    };
    let mut found = Vec::new();
    // A business key is looked for in the context; pages are read until one is full.
    for _ in 0..20 {
        let batch = state
            .engine
            .list(&filter)
            .await
            .map_err(|e| e.to_string())?;
        let exhausted = batch.len() < filter.limit;
        filter.before = batch.last().map(|s| (s.created_at, s.saga_id.clone()));
        found.extend(
            batch
                .into_iter()
                .filter(|s| key.as_deref().is_none_or(|k| holds(&s.context, k))),
        );
        if found.len() > PAGE || exhausted || key.is_none() {
            break;
        }
    }
    let more = found.len() > PAGE;
    found.truncate(PAGE);
    let next = more
        .then(|| {
            found
                .last()
                .map(|s| format!("{}_{}", s.created_at, s.saga_id.0))
        })
        .flatten();
    Ok((found, next))
}

/// Whether a top-level value of the context is (or, for numbers, prints as) `key`.
fn holds(context: &Value, key: &str) -> bool {
    context.as_object().is_some_and(|o| {
        o.values().any(|v| match v {
            Value::String(s) => s == key,
            Value::Number(n) => n.to_string() == key,
            _ => false,
        })
    })
}

fn query_of(f: &Filters, before: Option<&str>) -> String {
    let pairs: Vec<(&str, &str)> = [
        ("status", given(&f.status)),
        ("definition", given(&f.definition)),
        ("correlation", given(&f.correlation)),
        ("key", given(&f.key)),
        ("from", given(&f.from)),
        ("to", given(&f.to)),
        ("before", before),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn rows_markup(sagas: &[SagaState], next: Option<&str>, f: &Filters) -> Markup {
    html! {
        @if sagas.is_empty() {
            tr { td colspan="6" { "No saga matches." } }
        }
        @for s in sagas {
            tr {
                td { a href={"/ui/sagas/" (super::seg(&s.saga_id.0))} { code { (s.saga_id.0) } } }
                td { (s.definition) " v" (s.version) }
                td { (status_badge(s.status.as_str())) }
                td { (s.correlation_key.clone().unwrap_or_default()) }
                td { (when(s.created_at)) }
                td { (when(s.updated_at)) }
            }
        }
        @if let Some(n) = next {
            tr { td colspan="6" { a href={"/ui/sagas?" (query_of(f, Some(n)))} rel="next" { "Older sagas →" } } }
        }
    }
}

/// `/ui/sagas/rows`: just the rows, for the live refresh.
pub(crate) async fn rows(
    State(state): State<ApiState>,
    ApiQuery(f): ApiQuery<Filters>,
) -> Response {
    match select(&state, &f).await {
        Ok((sagas, next)) => rows_markup(&sagas, next.as_deref(), &f).into_response(),
        Err(why) => html! { tr { td colspan="6" { (why) } } }.into_response(),
    }
}

/// `/ui/sagas`: the filters and the list.
pub(crate) async fn page(
    State(state): State<ApiState>,
    ApiQuery(f): ApiQuery<Filters>,
) -> Response {
    let selected = select(&state, &f).await;
    let definitions: Vec<String> = {
        let mut names: Vec<String> = state
            .engine
            .registry()
            .all()
            .iter()
            .map(|d| d.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let statuses = [
        "running",
        "waiting",
        "compensating",
        "completed",
        "compensated",
        "failed",
    ];
    let live = query_of(&f, given(&f.before));
    let body = html! {
        form.filters method="get" action="/ui/sagas" role="search" {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in statuses {
                        option value=(s) selected[given(&f.status) == Some(s)] { (s) }
                    }
                }
            }
            label { "Definition"
                select name="definition" {
                    option value="" { "any" }
                    @for d in &definitions {
                        option value=(d) selected[given(&f.definition) == Some(d.as_str())] { (d) }
                    }
                }
            }
            label { "Correlation id" input name="correlation" value=(given(&f.correlation).unwrap_or("")); }
            label { "Business key (a context value)" input name="key" value=(given(&f.key).unwrap_or("")); }
            label { "From (UTC)" input type="datetime-local" name="from" value=(given(&f.from).unwrap_or("")); }
            label { "To (UTC)" input type="datetime-local" name="to" value=(given(&f.to).unwrap_or("")); }
            button type="submit" { "Filter" }
            a href="/ui/sagas" { "Clear" }
        }
        @match &selected {
            Err(why) => p.message.refused role="alert" { (why) },
            Ok((sagas, next)) => {
                table {
                    caption.muted { "Newest first; refreshed every 5 seconds." }
                    thead { tr { th { "Saga" } th { "Definition" } th { "Status" } th { "Correlation" } th { "Created" } th { "Updated" } } }
                    tbody id="saga-rows" hx-get={"/ui/sagas/rows?" (live)} hx-trigger="every 5s [!document.activeElement.closest('#saga-rows')]" hx-swap="innerHTML" {
                        (rows_markup(sagas, next.as_deref(), &f))
                    }
                }
            }
        }
    };
    layout("Sagas", "/ui/sagas", None, body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_parse_as_utc() {
        assert_eq!(super::parse_time("1970-01-01T00:01"), Some(60_000));
        assert_eq!(
            super::parse_time("2026-11-22T00:00"),
            Some(1_795_305_600_000)
        );
        assert_eq!(super::parse_time("2026-13-01T00:00"), None);
        assert_eq!(super::parse_time("yesterday"), None);
    }

    #[test]
    fn wild_times_are_refused_without_overflow() {
        for wild in [
            "9223372036854775807-01-01T00:00",
            "-9223372036854775808-01-01T00:00",
            "0-01-01T00:00",
            "10000-01-01T00:00",
            "2026-01-01T-1:00",
            "2026-01-01T00:-5",
            "2026-01-01T00:00:-1",
        ] {
            assert_eq!(super::parse_time(wild), None, "{wild}");
        }
    }
}
