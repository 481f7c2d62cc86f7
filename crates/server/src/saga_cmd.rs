//! `sagaflow saga ls | show | history | cancel | resume` and `sagaflow signal`: a client of a
//! running server's HTTP API. Human tables by default, the server's JSON with `--json`, and
//! a non-zero exit with the server's message on errors.

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server's base URL [env: SAGAFLOW_SERVER].
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// An API key, sent as `Authorization: Bearer` [env: SAGAFLOW_API_KEY].
    #[arg(long, global = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Saga commands.
#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// List sagas, newest first.
    Ls {
        /// Only this status (running, waiting, compensating, completed, compensated, failed).
        #[arg(long)]
        status: Option<String>,
        /// Only this definition.
        #[arg(long)]
        definition: Option<String>,
        /// Only this correlation id.
        #[arg(long)]
        correlation_id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one saga.
    Show {
        /// The saga id.
        id: String,
    },
    /// Show a saga's attempts: each action and compensation, how it went and when.
    History {
        /// The saga id.
        id: String,
    },
    /// Compensate what a saga did (refused after its pivot).
    Cancel {
        /// The saga id.
        id: String,
        /// Why, for the journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retry a Failed saga's failed step, or attempt a Waiting saga's step again now.
    Resume {
        /// The saga id.
        id: String,
    },
}

/// `sagaflow signal`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SignalArgs {
    /// The signal's name.
    pub name: String,
    /// Wake every waiting saga with this correlation key.
    #[arg(long, conflicts_with = "saga")]
    pub correlation_key: Option<String>,
    /// Wake this saga.
    #[arg(long)]
    pub saga: Option<String>,
    /// The signal's payload, as JSON.
    #[arg(long, default_value = "{}")]
    pub payload: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    fn new(args: &ClientArgs) -> Client {
        let base = args
            .server
            .clone()
            .or_else(|| std::env::var("SAGAFLOW_SERVER").ok())
            .unwrap_or_else(|| format!("http://{}", crate::config::DEFAULT_LISTEN));
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            key: args
                .api_key
                .clone()
                .or_else(|| std::env::var("SAGAFLOW_API_KEY").ok()),
        }
    }

    /// Sends a request; returns the JSON body of a success, or the server's problem as an error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach sagaflow at {}: {e} (is `sagaflow serve` running? set --server)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading the server's answer")?;
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(json);
        }
        match (json["detail"].as_str(), json["code"].as_str()) {
            (Some(detail), Some(code)) => bail!("{detail} ({code}, HTTP {})", status.as_u16()),
            _ => bail!("the server answered HTTP {}: {json}", status.as_u16()),
        }
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a saga command against the server.
pub async fn run(client_args: &ClientArgs, cmd: SagaCommand) -> anyhow::Result<()> {
    let client = Client::new(client_args);
    let json = client_args.json;
    match cmd {
        SagaCommand::Ls {
            status,
            definition,
            correlation_id,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [
                ("status", status),
                ("definition", definition),
                ("correlation_id", correlation_id),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(&v)));
                }
            }
            let page = client
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/sagas?{}", query.join("&")),
                    None,
                )
                .await?;
            if json {
                return print_json(&page);
            }
            println!(
                "{:<38} {:<12} {:<13} {:<20} CREATED",
                "SAGA", "DEFINITION", "STATUS", "STEP"
            );
            for s in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<12} {:<13} {:<20} {}",
                    text(&s["saga_id"]),
                    format!("{} v{}", text(&s["definition"]), s["version"]),
                    text(&s["status"]),
                    text(&s["current_step"]),
                    time(&s["created_at"])
                );
            }
        }
        SagaCommand::Show { id } => {
            let s = client
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/sagas/{}", encode(&id)),
                    None,
                )
                .await?;
            if json {
                return print_json(&s);
            }
            for (label, key) in [
                ("saga", "saga_id"),
                ("definition", "definition"),
                ("status", "status"),
                ("current step", "current_step"),
                ("correlation key", "correlation_key"),
                ("request id", "request_id"),
                ("reason", "reason"),
            ] {
                println!("{label:<16} {}", text(&s[key]));
            }
            println!("{:<16} v{}", "version", s["version"]);
            for (label, key) in [
                ("created", "created_at"),
                ("updated", "updated_at"),
                ("ended", "ended_at"),
            ] {
                println!("{label:<16} {}", time(&s[key]));
            }
            println!("context\n{}", serde_json::to_string_pretty(&s["context"])?);
        }
        SagaCommand::History { id } => {
            let h = client
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/sagas/{}/history", encode(&id)),
                    None,
                )
                .await?;
            if json {
                return print_json(&h);
            }
            println!(
                "{:<20} {:<13} {:>7} {:<10} {:<24} ERROR",
                "STEP", "KIND", "ATTEMPT", "STATUS", "STARTED"
            );
            for a in h["history"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<13} {:>7} {:<10} {:<24} {}",
                    text(&a["step_name"]),
                    text(&a["kind"]),
                    a["attempt"],
                    text(&a["status"]),
                    time(&a["started_at"]),
                    text(&a["error"])
                );
            }
        }
        SagaCommand::Cancel { id, reason } => {
            let body = reason.map(|r| serde_json::json!({ "reason": r }));
            let r = client
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/sagas/{}/cancel", encode(&id)),
                    body,
                )
                .await?;
            if json {
                return print_json(&r);
            }
            println!("saga {id} is {}", text(&r["status"]));
        }
        SagaCommand::Resume { id } => {
            let r = client
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/sagas/{}/resume", encode(&id)),
                    None,
                )
                .await?;
            if json {
                return print_json(&r);
            }
            println!("saga {id} is {}", text(&r["status"]));
        }
    }
    Ok(())
}

/// Runs `sagaflow signal`.
pub async fn signal(client_args: &ClientArgs, args: SignalArgs) -> anyhow::Result<()> {
    let payload: Value = serde_json::from_str(&args.payload)
        .with_context(|| format!("--payload {:?} is not JSON", args.payload))?;
    if args.saga.is_none() && args.correlation_key.is_none() {
        bail!("say which sagas to signal: --correlation-key KEY or --saga ID");
    }
    let body = serde_json::json!({
        "name": args.name,
        "saga_id": args.saga,
        "correlation_key": args.correlation_key,
        "payload": payload,
    });
    let r = Client::new(client_args)
        .call(reqwest::Method::POST, "/api/v1/signals", Some(body))
        .await?;
    if client_args.json {
        return print_json(&r);
    }
    let reached: Vec<&str> = r["reached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!("signal {} reached {} saga(s)", args.name, reached.len());
    for id in reached {
        println!("  {id}");
    }
    Ok(())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An API time (RFC 3339, or unix milliseconds) as `YYYY-MM-DD HH:MM:SS UTC`.
fn time(v: &Value) -> String {
    let ms = match v {
        Value::String(s) => sagaflow_api::parse_utc(s),
        other => other.as_i64(),
    };
    ms.map_or_else(|| "-".into(), sagaflow_api::utc_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(&serde_json::json!(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            time(&serde_json::json!(1_795_322_096_000_i64)),
            "2026-11-22 04:34:56 UTC"
        );
        assert_eq!(time(&Value::Null), "-");
        assert_eq!(
            time(&serde_json::json!("2026-11-22T04:34:56.789Z")),
            "2026-11-22 04:34:56 UTC"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
