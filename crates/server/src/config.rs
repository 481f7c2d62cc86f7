//! `sagaflow serve`'s configuration: flags, then `SAGAFLOW_…` environment variables, then an
//! optional TOML file, in that order of precedence. A bad value names where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sagaflow_api::{ApiKey, Right, Rights};
use serde::Deserialize;

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./sagaflow.db";
/// Where the server listens by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The largest request body accepted by default.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// `serve`'s flags; each also has an environment variable and a TOML key.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(after_help = API_KEYS_HELP)]
pub struct ServeArgs {
    /// Address to listen on [env: SAGAFLOW_LISTEN] [toml: listen] [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Largest request body in bytes [env: SAGAFLOW_BODY_LIMIT] [toml: body_limit] [default: 1048576].
    #[arg(long)]
    pub body_limit: Option<String>,
    /// A TOML file with any of: listen, database_url, body_limit, insecure, read_open,
    /// role, transport, redis_url, definitions, [services.NAME], [[api_keys]] [env: SAGAFLOW_CONFIG].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Allow listening on a non-loopback address although no API keys are configured
    /// [env: SAGAFLOW_INSECURE=true] [toml: insecure].
    #[arg(long)]
    pub insecure: bool,
    /// With API keys configured, leave GET endpoints open to anyone
    /// [env: SAGAFLOW_READ_OPEN=true] [toml: read_open].
    #[arg(long)]
    pub read_open: bool,
    /// What this process does: `all` (engine, API and, on the in-memory bus, the built-in
    /// participants), `engine` (replies, timers and publishing; /healthz, /readyz and
    /// /metrics only) or `api` (the HTTP API; the engine processes sharing its PostgreSQL
    /// database do the rest) [env: SAGAFLOW_ROLE] [toml: role] [default: all].
    #[arg(long)]
    pub role: Option<String>,
    /// How engine and participants talk: `memory` (in this process), `nats://HOST:PORT`
    /// (NATS JetStream), `amqp://USER:PASS@HOST:PORT/VHOST` (RabbitMQ) or
    /// `kafka://HOST:PORT` (Kafka)
    /// [env: SAGAFLOW_TRANSPORT] [toml: transport] [default: memory].
    #[arg(long)]
    pub transport: Option<String>,
    /// Redis for the social app's unread-counter cache, `redis://HOST:PORT[/DB]`; without it
    /// the cache lives in this process, which is right only when one process serves the
    /// counters [env: SAGAFLOW_REDIS_URL] [toml: redis_url].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Bind a participant service to a base URL, `NAME=URL` (repeatable): its commands
    /// `NAME.cmd` are POSTed to `URL/cmd` instead of going through the transport
    /// [env: SAGAFLOW_SERVICES=NAME=URL,NAME=URL] [toml: [services.NAME] url, timeout_ms,
    /// max_in_flight].
    #[arg(long = "service", value_name = "NAME=URL")]
    pub services: Vec<String>,
    /// A directory whose `*.json`, `*.yaml` and `*.yml` saga definitions are registered at
    /// start; a bad file stops the start, naming the file, the step and the reason
    /// [env: SAGAFLOW_DEFINITIONS] [toml: definitions].
    #[arg(long)]
    pub definitions: Option<PathBuf>,
}

/// What a `serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Engine and API in one process.
    All,
    /// Decision loop, replies, timers, outbox relay; no API.
    Engine,
    /// The HTTP API only.
    Api,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "all" => Some(Role::All),
            "engine" => Some(Role::Engine),
            "api" => Some(Role::Api),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Engine => "engine",
            Role::Api => "api",
        }
    }
}

/// `serve --help`'s epilogue: how API keys are configured.
pub const API_KEYS_HELP: &str = "\
API keys (none: everything is open, and only a loopback address is allowed without --insecure):
  `sagaflow key new --name ops --rights operate,read` prints a fresh key and its SHA-256;
  the server stores only the hash. Configure keys in the TOML file, after the top-level keys:
      [[api_keys]]
      name = \"ops\"
      sha256 = \"<64 hex digits>\"
      rights = [\"operate\", \"read\"]
  and/or in SAGAFLOW_API_KEYS as comma-separated NAME:SHA256:RIGHT+RIGHT entries, e.g.
      SAGAFLOW_API_KEYS=ops:<64 hex>:operate+read,dash:<64 hex>:read
  (both sources are used together; a name may appear only once). Rights: `operate` for
  every POST and DELETE (starting sagas included), `read` for GET unless --read-open.
  /healthz, /readyz, /metrics, /api/v1/openapi.json and /api/docs are always open.
  Clients send `Authorization: Bearer KEY` or `X-API-Key: KEY`.";

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Which database.
    pub database_url: String,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Whether a non-loopback address without API keys was explicitly allowed.
    pub insecure: bool,
    /// API keys, from the TOML file's `[[api_keys]]` and `SAGAFLOW_API_KEYS`.
    pub api_keys: Vec<ApiKey>,
    /// With keys, leave GET endpoints open.
    pub read_open: bool,
    /// What this process does.
    pub role: Role,
    /// The transport URL (`memory`, `nats://…`, `amqp://…`, `kafka://…`).
    pub transport: String,
    /// Redis for the social app's counter cache.
    pub redis_url: Option<String>,
    /// Participant services bound to HTTP URLs, by name.
    pub services: Vec<sagaflow_http::HttpService>,
    /// Where definition files are read from at start.
    pub definitions: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    body_limit: Option<u64>,
    insecure: Option<bool>,
    read_open: Option<bool>,
    role: Option<String>,
    transport: Option<String>,
    redis_url: Option<String>,
    definitions: Option<String>,
    services: Option<std::collections::BTreeMap<String, FileService>>,
    api_keys: Option<Vec<FileKey>>,
}

/// One `[services.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    url: String,
    timeout_ms: Option<u64>,
    max_in_flight: Option<usize>,
}

/// One `[[api_keys]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: String,
    sha256: String,
    rights: Vec<String>,
}

/// One setting's value and where it came from, for error messages.
struct Sourced {
    value: String,
    source: String,
}

/// Reads environment variables through a function, so tests need not touch the process's.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Resolves the configuration: `flags` (with the global `--database-url`), then `env`, then
/// the TOML file named by `--config` or `SAGAFLOW_CONFIG`.
pub fn resolve(
    args: &ServeArgs,
    database_url_flag: Option<&str>,
    env: Env,
) -> anyhow::Result<ServeConfig> {
    let file_path = args
        .config
        .clone()
        .map(|p| (p, "--config".to_string()))
        .or_else(|| env("SAGAFLOW_CONFIG").map(|p| (PathBuf::from(p), "SAGAFLOW_CONFIG".into())));
    let (mut file, file_name) = match &file_path {
        Some((path, from)) => (
            read_file(path).with_context(|| format!("{from} {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (FileConfig::default(), String::new()),
    };
    let pick =
        |flag: Option<String>, flag_name: &str, var: &str, from_file: Option<String>, key: &str| {
            flag.map(|value| Sourced {
                value,
                source: flag_name.to_string(),
            })
            .or_else(|| {
                env(var).map(|value| Sourced {
                    value,
                    source: var.to_string(),
                })
            })
            .or_else(|| {
                from_file.map(|value| Sourced {
                    value,
                    source: format!("{file_name}: {key}"),
                })
            })
        };

    let listen = match pick(
        args.listen.clone(),
        "--listen",
        "SAGAFLOW_LISTEN",
        file.listen,
        "listen",
    ) {
        Some(s) => s.value.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "{} = {:?} is not a socket address; use HOST:PORT such as 127.0.0.1:8080",
                s.source,
                s.value
            )
        })?,
        None => DEFAULT_LISTEN.parse()?,
    };
    let database_url = match pick(
        database_url_flag.map(str::to_string),
        "--database-url",
        "SAGAFLOW_DATABASE_URL",
        file.database_url,
        "database_url",
    ) {
        Some(s) => {
            let ok = s.value.starts_with("sqlite:")
                || s.value.starts_with("postgres://")
                || s.value.starts_with("postgresql://");
            if !ok {
                bail!(
                    "{} = {:?} is not a database URL; use sqlite://PATH or postgres://USER@HOST/DB",
                    s.source,
                    s.value
                );
            }
            s.value
        }
        None => DEFAULT_DATABASE_URL.to_string(),
    };
    let body_limit = match pick(
        args.body_limit.clone(),
        "--body-limit",
        "SAGAFLOW_BODY_LIMIT",
        file.body_limit.map(|b| b.to_string()),
        "body_limit",
    ) {
        Some(s) => match s.value.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => bail!(
                "{} = {:?} must be a positive number of bytes",
                s.source,
                s.value
            ),
        },
        None => DEFAULT_BODY_LIMIT,
    };
    let role = match pick(
        args.role.clone(),
        "--role",
        "SAGAFLOW_ROLE",
        file.role,
        "role",
    ) {
        Some(s) => Role::parse(&s.value).ok_or_else(|| {
            anyhow::anyhow!(
                "{} = {:?} is not a role; use all, engine or api",
                s.source,
                s.value
            )
        })?,
        None => Role::All,
    };
    let (transport, transport_source) = match pick(
        args.transport.clone(),
        "--transport",
        "SAGAFLOW_TRANSPORT",
        file.transport,
        "transport",
    ) {
        Some(s) => {
            crate::transport_url::kind(&s.value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", s.source))?;
            (s.value, s.source)
        }
        None => (
            crate::transport_url::DEFAULT_TRANSPORT.to_string(),
            "the default".to_string(),
        ),
    };
    if role != Role::All {
        if transport == crate::transport_url::DEFAULT_TRANSPORT {
            bail!(
                "--role {} needs a broker that other processes reach: set --transport to nats://…, amqp://… or kafka://… (the transport is memory, from {transport_source})",
                role.as_str()
            );
        }
        if database_url.starts_with("sqlite:") {
            bail!(
                "--role {} needs a database other processes share: set --database-url to postgres://… (SQLite is one process's)",
                role.as_str()
            );
        }
    }
    let redis_url = pick(
        args.redis_url.clone(),
        "--redis-url",
        "SAGAFLOW_REDIS_URL",
        file.redis_url,
        "redis_url",
    )
    .map(|s| {
        if s.value.starts_with("redis://") {
            Ok(s.value)
        } else {
            Err(anyhow::anyhow!(
                "{} = {:?} is not a Redis URL: use redis://HOST:PORT[/DB]",
                s.source,
                s.value
            ))
        }
    })
    .transpose()?;
    let definitions = pick(
        args.definitions.as_ref().map(|p| p.display().to_string()),
        "--definitions",
        "SAGAFLOW_DEFINITIONS",
        file.definitions.clone(),
        "definitions",
    )
    .map(|s| {
        let path = PathBuf::from(&s.value);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(anyhow::anyhow!(
                "{} = {:?} is not a directory of definition files",
                s.source,
                s.value
            ))
        }
    })
    .transpose()?;
    let services = services(args, file.services.take(), &file_name, env)?;
    let insecure = switch(args.insecure, "SAGAFLOW_INSECURE", file.insecure, env)?;
    let read_open = switch(args.read_open, "SAGAFLOW_READ_OPEN", file.read_open, env)?;

    // Keys from both places: a key is never dropped because another source has some too.
    let mut api_keys: Vec<(ApiKey, String)> = Vec::new();
    for (i, k) in file.api_keys.unwrap_or_default().into_iter().enumerate() {
        let source = format!("{file_name}: api_keys[{i}]");
        let rights = k
            .rights
            .iter()
            .map(|r| r.parse::<Right>())
            .collect::<Result<Rights, _>>()
            .map_err(|e| anyhow::anyhow!("{source}.rights: {e}"))?;
        let key = api_key(&k.name, &k.sha256, rights)
            .map_err(|e| anyhow::anyhow!("{source} (name {:?}): {e}", k.name))?;
        api_keys.push((key, source));
    }
    if let Some(list) = env("SAGAFLOW_API_KEYS") {
        for (i, entry) in list.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let source = format!("SAGAFLOW_API_KEYS entry {} ({entry:?})", i + 1);
            let key = env_key(entry).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
            api_keys.push((key, source));
        }
    }
    for (i, (key, source)) in api_keys.iter().enumerate() {
        for (other, other_source) in &api_keys[..i] {
            if other.name == key.name {
                bail!(
                    "{source}: the name {:?} is taken by {other_source}; give each key its own name",
                    key.name
                );
            }
            if other.sha256 == key.sha256 {
                bail!(
                    "{source}: the same key as {other_source} ({:?}); configure each key once",
                    other.name
                );
            }
        }
    }
    Ok(ServeConfig {
        listen,
        database_url,
        body_limit,
        insecure,
        api_keys: api_keys.into_iter().map(|(k, _)| k).collect(),
        read_open,
        role,
        transport,
        redis_url,
        services,
        definitions,
    })
}

/// The HTTP bindings: the file's `[services.NAME]` tables, then `SAGAFLOW_SERVICES`, then
/// `--service` flags; a later source rebinds a name's URL (keeping the file's timeout and
/// concurrency for it).
fn services(
    args: &ServeArgs,
    from_file: Option<std::collections::BTreeMap<String, FileService>>,
    file_name: &str,
    env: Env,
) -> anyhow::Result<Vec<sagaflow_http::HttpService>> {
    use sagaflow_http::HttpService;
    let mut bound: Vec<HttpService> = Vec::new();
    for (name, s) in from_file.unwrap_or_default() {
        let source = format!("{file_name}: services.{name}");
        let mut service =
            HttpService::new(&name, &s.url).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        if let Some(ms) = s.timeout_ms {
            service = service
                .timeout_ms(ms)
                .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        }
        if let Some(n) = s.max_in_flight {
            service = service
                .max_in_flight(n)
                .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        }
        bound.push(service);
    }
    let mut rebind = |binding: &str, source: String| -> anyhow::Result<()> {
        let service = HttpService::parse(binding).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        match bound.iter_mut().find(|s| s.name == service.name) {
            Some(existing) => existing.url = service.url,
            None => bound.push(service),
        }
        Ok(())
    };
    if let Some(list) = env("SAGAFLOW_SERVICES") {
        for (i, entry) in list.split(',').map(str::trim).enumerate() {
            if !entry.is_empty() {
                rebind(entry, format!("SAGAFLOW_SERVICES entry {}", i + 1))?;
            }
        }
    }
    for binding in &args.services {
        rebind(binding, "--service".to_string())?;
    }
    Ok(bound)
}

/// An on/off setting: the flag, else the environment variable, else the file, else off.
fn switch(flag: bool, var: &str, from_file: Option<bool>, env: Env) -> anyhow::Result<bool> {
    if flag {
        return Ok(true);
    }
    match env(var) {
        Some(v) => match v.as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" | "" => Ok(false),
            _ => bail!("{var} = {v:?} must be true or false"),
        },
        None => Ok(from_file.unwrap_or(false)),
    }
}

/// One `SAGAFLOW_API_KEYS` entry: `NAME:SHA256:RIGHT+RIGHT`.
fn env_key(entry: &str) -> anyhow::Result<ApiKey> {
    let parts: Vec<&str> = entry.split(':').collect();
    let [name, sha256, rights] = parts[..] else {
        bail!("expected NAME:SHA256:RIGHT+RIGHT, e.g. ops:<64 hex digits>:operate+read");
    };
    let rights = rights
        .split('+')
        .map(|r| r.trim().parse::<Right>())
        .collect::<Result<Rights, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    api_key(name.trim(), sha256.trim(), rights)
}

/// A key from its parts, each checked.
fn api_key(name: &str, sha256: &str, rights: Rights) -> anyhow::Result<ApiKey> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        bail!("name {name:?} must be 1 to 64 letters, digits, `-`, `_` or `.`");
    }
    let sha256 =
        sagaflow_api::parse_sha256_hex(sha256).map_err(|e| anyhow::anyhow!("sha256: {e}"))?;
    if rights.is_empty() {
        bail!("no rights; give it operate and/or read");
    }
    Ok(ApiKey {
        name: name.to_string(),
        sha256,
        rights,
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).context("cannot read the configuration file")?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

impl ServeConfig {
    /// Refuses a non-loopback address without API keys unless explicitly allowed: anyone who
    /// could reach the port could cancel sagas.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && self.api_keys.is_empty() && !self.insecure {
            bail!(
                "refusing to listen on {}: it is not a loopback address and no API keys are configured, so anyone who can reach it could start, cancel and resume sagas. Configure API keys (`sagaflow key new` makes one; see `sagaflow serve --help`), listen on 127.0.0.1, or pass --insecure (SAGAFLOW_INSECURE=true) if the network is protected otherwise",
                self.listen
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_embedded_and_loopback() {
        let c = resolve(&ServeArgs::default(), None, &env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
        assert!(c.check_exposure().is_ok());
    }

    #[test]
    fn flags_beat_environment_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sagaflow.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9001\"\nbody_limit = 10\ndatabase_url = \"sqlite://file.db\"\n",
        )
        .unwrap();
        let env = env_of(&[
            ("SAGAFLOW_LISTEN", "127.0.0.1:9002"),
            ("SAGAFLOW_CONFIG", file.to_str().unwrap()),
        ]);
        let args = ServeArgs::default();
        let c = resolve(&args, None, &env).unwrap();
        assert_eq!(c.listen.port(), 9002, "environment over file");
        assert_eq!(c.body_limit, 10, "file over default");
        assert_eq!(c.database_url, "sqlite://file.db");
        let args = ServeArgs {
            listen: Some("127.0.0.1:9003".into()),
            ..ServeArgs::default()
        };
        let c = resolve(&args, Some("sqlite://flag.db"), &env).unwrap();
        assert_eq!(c.listen.port(), 9003, "flag over environment");
        assert_eq!(c.database_url, "sqlite://flag.db");
    }

    #[test]
    fn roles_other_than_all_need_a_broker_and_postgres() {
        let none = env_of(&[]);
        let c = resolve(&ServeArgs::default(), None, &none).unwrap();
        assert_eq!((c.role, c.transport.as_str()), (Role::All, "memory"));
        let args = ServeArgs {
            role: Some("engine".into()),
            ..ServeArgs::default()
        };
        let e = resolve(&args, Some("postgres://root@127.0.0.1/test"), &none).unwrap_err();
        assert!(e.to_string().contains("--transport"), "{e}");
        let env = env_of(&[("SAGAFLOW_TRANSPORT", "nats://127.0.0.1:4222")]);
        let e = resolve(&args, Some("sqlite://x.db"), &env).unwrap_err();
        assert!(e.to_string().contains("postgres://"), "{e}");
        let c = resolve(&args, Some("postgres://root@127.0.0.1/test"), &env).unwrap();
        assert_eq!(
            (c.role, c.transport.as_str()),
            (Role::Engine, "nats://127.0.0.1:4222")
        );
        let bad = ServeArgs {
            role: Some("worker".into()),
            ..ServeArgs::default()
        };
        let e = resolve(&bad, None, &none).unwrap_err().to_string();
        assert!(
            e.contains("--role") && e.contains("all, engine or api"),
            "{e}"
        );
        let e = resolve(
            &ServeArgs::default(),
            None,
            &env_of(&[("SAGAFLOW_TRANSPORT", "mqtt://x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("SAGAFLOW_TRANSPORT:") && e.contains("nats://") && e.contains("kafka://"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_names_its_source() {
        let e = resolve(
            &ServeArgs::default(),
            None,
            &env_of(&[("SAGAFLOW_LISTEN", "nowhere")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("SAGAFLOW_LISTEN = \"nowhere\" is not a socket address"),
            "{e}"
        );
        let args = ServeArgs {
            body_limit: Some("-3".into()),
            ..ServeArgs::default()
        };
        let e = resolve(&args, None, &env_of(&[])).unwrap_err().to_string();
        assert!(e.starts_with("--body-limit = \"-3\""), "{e}");
        let e = resolve(&ServeArgs::default(), Some("mysql://x"), &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--database-url = \"mysql://x\" is not a database URL"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listen = \"x:y\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let e = resolve(&args, None, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("bad.toml: listen = \"x:y\""), "{e}");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let e = format!("{:#}", resolve(&args, None, &env_of(&[])).unwrap_err());
        assert!(
            e.contains("--config") && e.contains("unknown field `lisen`"),
            "{e}"
        );
    }

    #[test]
    fn services_bind_from_the_file_the_environment_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let defs = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let (from_file, from_env, from_flag) = (defs("file"), defs("env"), defs("flag"));
        let file = dir.path().join("sagaflow.toml");
        std::fs::write(
            &file,
            format!("definitions = {:?}\n", from_file.display().to_string())
                + "\
             [services.payments]\nurl = \"http://127.0.0.1:9001\"\ntimeout_ms = 2500\nmax_in_flight = 8\n\
             [services.mail]\nurl = \"http://127.0.0.1:9002/hooks\"\n",
        )
        .unwrap();
        let env = env_of(&[
            ("SAGAFLOW_CONFIG", file.to_str().unwrap()),
            (
                "SAGAFLOW_SERVICES",
                "payments=http://10.0.0.5:7000, stock=http://127.0.0.1:9003",
            ),
        ]);
        let args = ServeArgs {
            services: vec!["stock=http://127.0.0.1:9004".into()],
            ..ServeArgs::default()
        };
        let c = resolve(&args, None, &env).unwrap();
        let bound: Vec<(&str, &str, u128, usize)> = c
            .services
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.url.as_str(),
                    s.timeout.as_millis(),
                    s.max_in_flight,
                )
            })
            .collect();
        assert_eq!(
            bound,
            vec![
                ("mail", "http://127.0.0.1:9002/hooks", 10_000, 64),
                // The environment rebinds the URL; the file's limits stay.
                ("payments", "http://10.0.0.5:7000", 2_500, 8),
                // The flag rebinds what the environment bound.
                ("stock", "http://127.0.0.1:9004", 10_000, 64),
            ]
        );
        assert_eq!(c.definitions.as_ref(), Some(&from_file));
        let env = env_of(&[
            ("SAGAFLOW_CONFIG", file.to_str().unwrap()),
            ("SAGAFLOW_DEFINITIONS", from_env.to_str().unwrap()),
        ]);
        let c = resolve(&ServeArgs::default(), None, &env).unwrap();
        assert_eq!(
            c.definitions.as_ref(),
            Some(&from_env),
            "environment over file"
        );
        let args = ServeArgs {
            definitions: Some(from_flag.clone()),
            ..ServeArgs::default()
        };
        let c = resolve(&args, None, &env).unwrap();
        assert_eq!(
            c.definitions.as_ref(),
            Some(&from_flag),
            "flag over environment"
        );
        let args = ServeArgs {
            definitions: Some(dir.path().join("missing")),
            ..ServeArgs::default()
        };
        let e = resolve(&args, None, &env).unwrap_err().to_string();
        assert!(
            e.starts_with("--definitions = ") && e.contains("is not a directory"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_service_binding_names_its_source() {
        let none = env_of(&[]);
        for (binding, says) in [
            ("payments", "NAME=URL"),
            ("payments=https://pay.example", "https"),
            ("payments=http://u:p@127.0.0.1:1", "credentials"),
            ("pay ments=http://127.0.0.1:1", "name"),
        ] {
            let args = ServeArgs {
                services: vec![binding.into()],
                ..ServeArgs::default()
            };
            let e = resolve(&args, None, &none).unwrap_err().to_string();
            assert!(e.starts_with("--service: "), "{binding}: {e}");
            assert!(e.contains(says), "{binding}: {e}");
        }
        let env = env_of(&[("SAGAFLOW_SERVICES", "a=http://127.0.0.1:1,b=ftp://x")]);
        let e = resolve(&ServeArgs::default(), None, &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SAGAFLOW_SERVICES entry 2: "), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sagaflow.toml");
        std::fs::write(
            &file,
            "[services.payments]\nurl = \"http://127.0.0.1:1\"\nmax_in_flight = 0\n",
        )
        .unwrap();
        let env = env_of(&[("SAGAFLOW_CONFIG", file.to_str().unwrap())]);
        let e = resolve(&ServeArgs::default(), None, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sagaflow.toml: services.payments: "), "{e}");
    }

    #[test]
    fn a_public_address_needs_insecure() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".into()),
            ..ServeArgs::default()
        };
        let c = resolve(&args, None, &env_of(&[])).unwrap();
        let e = c.check_exposure().unwrap_err().to_string();
        assert!(
            e.contains("not a loopback address") && e.contains("--insecure"),
            "{e}"
        );
        let c = resolve(&args, None, &env_of(&[("SAGAFLOW_INSECURE", "true")])).unwrap();
        assert!(c.check_exposure().is_ok());
    }

    fn hash_of(key: &str) -> String {
        sagaflow_api::to_hex(&sagaflow_api::hash_key(key))
    }

    #[test]
    fn keys_come_from_the_file_and_the_environment_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        std::fs::write(
            &file,
            format!(
                "read_open = true\n\n[[api_keys]]\nname = \"ops\"\nsha256 = \"{}\"\nrights = [\"operate\", \"read\"]\n",
                hash_of("sfk_ops")
            ),
        )
        .unwrap();
        let env_keys = format!(
            "dash:{}:read, ci:{}:operate",
            hash_of("sfk_dash"),
            hash_of("sfk_ci").to_uppercase()
        );
        let env = env_of(&[
            ("SAGAFLOW_CONFIG", file.to_str().unwrap()),
            ("SAGAFLOW_API_KEYS", &env_keys),
        ]);
        let c = resolve(&ServeArgs::default(), None, &env).unwrap();
        assert!(c.read_open);
        let keys: Vec<(&str, String)> = c
            .api_keys
            .iter()
            .map(|k| (k.name.as_str(), k.rights.to_string()))
            .collect();
        assert_eq!(
            keys,
            [
                ("ops", "operate+read".to_string()),
                ("dash", "read".to_string()),
                ("ci", "operate".to_string())
            ]
        );
        assert_eq!(c.api_keys[2].sha256, sagaflow_api::hash_key("sfk_ci"));

        // The environment's switch beats the file's; the flag beats both.
        let env = env_of(&[
            ("SAGAFLOW_CONFIG", file.to_str().unwrap()),
            ("SAGAFLOW_READ_OPEN", "false"),
        ]);
        assert!(
            !resolve(&ServeArgs::default(), None, &env)
                .unwrap()
                .read_open
        );
        let args = ServeArgs {
            read_open: true,
            ..ServeArgs::default()
        };
        assert!(resolve(&args, None, &env).unwrap().read_open);
        let c = resolve(&ServeArgs::default(), None, &env_of(&[])).unwrap();
        assert!(c.api_keys.is_empty() && !c.read_open, "none by default");
    }

    #[test]
    fn a_bad_key_names_its_source() {
        let good = hash_of("sfk_x");
        let env_err = |value: &str| {
            resolve(
                &ServeArgs::default(),
                None,
                &env_of(&[("SAGAFLOW_API_KEYS", value)]),
            )
            .unwrap_err()
            .to_string()
        };
        let e = env_err(&format!("ops:{good}:operate,dash:abc:read"));
        assert!(
            e.starts_with("SAGAFLOW_API_KEYS entry 2 (\"dash:abc:read\"): sha256: a SHA-256 is 64 hex digits, this has 3 characters"),
            "{e}"
        );
        let e = env_err(&format!("ops:{good}:operate+admin"));
        assert!(
            e.starts_with("SAGAFLOW_API_KEYS entry 1") && e.contains("unknown right \"admin\""),
            "{e}"
        );
        let e = env_err(&format!("ops:{}:read", "z".repeat(64)));
        assert!(e.contains("hex digits (0-9, a-f)"), "{e}");
        let e = env_err("just-a-name");
        assert!(e.contains("expected NAME:SHA256:RIGHT+RIGHT"), "{e}");
        let e = env_err(&format!("o ps:{good}:read"));
        assert!(e.contains("name \"o ps\" must be"), "{e}");
        let e = env_err(&format!("ops:{good}:"));
        assert!(e.contains("unknown right \"\""), "{e}");
        let e = env_err(&format!("ops:{good}:read,ops:{}:read", hash_of("sfk_y")));
        assert!(
            e.contains("entry 2") && e.contains("taken by SAGAFLOW_API_KEYS entry 1"),
            "{e}"
        );
        let e = env_err(&format!("ops:{good}:read,other:{good}:operate"));
        assert!(e.contains("the same key as"), "{e}");
        // A key pasted where its hash belongs.
        let e = env_err(&format!("ops:sfk_{good}:read"));
        assert!(e.contains("looks like a key itself"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let file_err = |text: String| {
            std::fs::write(&file, text).unwrap();
            format!("{:#}", resolve(&args, None, &env_of(&[])).unwrap_err())
        };
        let e = file_err(format!(
            "[[api_keys]]\nname = \"ops\"\nsha256 = \"{good}\"\nrights = [\"root\"]\n"
        ));
        assert!(
            e.contains("bad.toml: api_keys[0].rights: unknown right \"root\""),
            "{e}"
        );
        let e =
            file_err("[[api_keys]]\nname = \"ops\"\nsha256 = \"00\"\nrights = [\"read\"]\n".into());
        assert!(
            e.contains("bad.toml: api_keys[0] (name \"ops\"): sha256: a SHA-256 is 64 hex digits"),
            "{e}"
        );
        let e = file_err(format!(
            "[[api_keys]]\nname = \"ops\"\nsha256 = \"{good}\"\nrights = []\n"
        ));
        assert!(e.contains("api_keys[0] (name \"ops\"): no rights"), "{e}");
        let e = file_err(format!("[[api_keys]]\nname = \"ops\"\nkey = \"{good}\"\n"));
        assert!(
            e.contains("--config") && e.contains("unknown field `key`"),
            "{e}"
        );
        // The file's key and the environment's clash: both sources named.
        std::fs::write(
            &file,
            format!("[[api_keys]]\nname = \"ops\"\nsha256 = \"{good}\"\nrights = [\"read\"]\n"),
        )
        .unwrap();
        let env = env_of(&[(
            "SAGAFLOW_API_KEYS",
            "ops:0000000000000000000000000000000000000000000000000000000000000000:read",
        )]);
        let e = resolve(&args, None, &env).unwrap_err().to_string();
        assert!(
            e.starts_with("SAGAFLOW_API_KEYS entry 1") && e.contains("bad.toml: api_keys[0]"),
            "{e}"
        );
        let e = resolve(
            &ServeArgs::default(),
            None,
            &env_of(&[("SAGAFLOW_READ_OPEN", "maybe")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "SAGAFLOW_READ_OPEN = \"maybe\" must be true or false");
    }

    #[test]
    fn with_keys_a_public_address_needs_no_insecure() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".into()),
            ..ServeArgs::default()
        };
        let keys = format!("ops:{}:operate+read", hash_of("sfk_ops"));
        let c = resolve(&args, None, &env_of(&[("SAGAFLOW_API_KEYS", &keys)])).unwrap();
        assert_eq!(c.api_keys.len(), 1);
        assert!(!c.insecure);
        assert!(c.check_exposure().is_ok());
        let c = resolve(&args, None, &env_of(&[])).unwrap();
        let e = c.check_exposure().unwrap_err().to_string();
        assert!(
            e.contains("Configure API keys") && e.contains("--insecure"),
            "{e}"
        );
    }
}
