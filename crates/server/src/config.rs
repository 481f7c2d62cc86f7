//! `sagaflow serve`'s configuration: flags, then `SAGAFLOW_…` environment variables, then an
//! optional TOML file, in that order of precedence. A bad value names where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./sagaflow.db";
/// Where the server listens by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The largest request body accepted by default.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// `serve`'s flags; each also has an environment variable and a TOML key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [env: SAGAFLOW_LISTEN] [toml: listen] [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Largest request body in bytes [env: SAGAFLOW_BODY_LIMIT] [toml: body_limit] [default: 1048576].
    #[arg(long)]
    pub body_limit: Option<String>,
    /// A TOML file with any of: listen, database_url, body_limit, insecure [env: SAGAFLOW_CONFIG].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Allow listening on a non-loopback address although no API keys are configured
    /// [env: SAGAFLOW_INSECURE=true] [toml: insecure].
    #[arg(long)]
    pub insecure: bool,
}

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    body_limit: Option<u64>,
    insecure: Option<bool>,
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
    let (file, file_name) = match &file_path {
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
    let insecure = if args.insecure {
        true
    } else if let Some(v) = env("SAGAFLOW_INSECURE") {
        match v.as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" | "" => false,
            _ => bail!("SAGAFLOW_INSECURE = {v:?} must be true or false"),
        }
    } else {
        file.insecure.unwrap_or(false)
    };
    Ok(ServeConfig {
        listen,
        database_url,
        body_limit,
        insecure,
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).context("cannot read the configuration file")?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

impl ServeConfig {
    /// Refuses a non-loopback address unless explicitly allowed: the API has no keys yet, so
    /// anyone who can reach the port could cancel sagas.
    pub fn check_exposure(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && !self.insecure {
            bail!(
                "refusing to listen on {}: it is not a loopback address and no API keys are configured, so anyone who can reach it could start, cancel and resume sagas. Listen on 127.0.0.1, or pass --insecure (SAGAFLOW_INSECURE=true) if the network is protected otherwise",
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
}
