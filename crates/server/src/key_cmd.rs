//! `sagaflow key new`: a fresh API key, and the configuration lines that hold its hash.

use anyhow::Context;
use sagaflow_api::{hash_key, to_hex, Right, Rights};

/// `sagaflow key …`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Print a fresh random API key and the configuration for its SHA-256 (the key itself is
    /// never stored: give it to its holder, configure only the hash).
    New {
        /// The key's name, shown in logs and 403 messages [default: key-<first hash digits>].
        #[arg(long)]
        name: Option<String>,
        /// Its rights, comma-separated: operate (every POST and DELETE), read (GET).
        #[arg(long, value_delimiter = ',', default_value = "operate,read")]
        rights: Vec<String>,
    },
}

/// Runs a key command.
pub fn run(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::New { name, rights } => {
            let rights = rights
                .iter()
                .map(|r| r.trim().parse::<Right>())
                .collect::<Result<Rights, _>>()
                .map_err(|e| anyhow::anyhow!("--rights: {e}"))?;
            if rights.is_empty() {
                anyhow::bail!("--rights: give operate and/or read");
            }
            let key = fresh_key()?;
            let hash = to_hex(&hash_key(&key));
            let name = name.unwrap_or_else(|| format!("key-{}", &hash[..8]));
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                anyhow::bail!("--name {name:?} must be 1 to 64 letters, digits, `-`, `_` or `.`");
            }
            print!("{}", render(&key, &name, &hash, rights));
            Ok(())
        }
    }
}

/// `sfk_` and 32 random bytes in hex: the prefix tells a key from its 64-digit hash.
fn fresh_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("no randomness from the operating system")?;
    Ok(format!("sfk_{}", to_hex(&bytes)))
}

fn render(key: &str, name: &str, hash: &str, rights: Rights) -> String {
    let toml_rights: Vec<String> = rights.iter().map(|r| format!("{:?}", r.name())).collect();
    format!(
        "API key {name:?} (shown only now; sagaflow keeps only its SHA-256):\n\
         \x20 {key}\n\
         \n\
         Add it to the TOML configuration file (after the top-level settings):\n\
         \n\
         [[api_keys]]\n\
         name = {name:?}\n\
         sha256 = {hash:?}\n\
         rights = [{}]\n\
         \n\
         or as an entry of SAGAFLOW_API_KEYS (entries are comma-separated):\n\
         \x20 {name}:{hash}:{rights}\n\
         \n\
         Clients send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`.\n",
        toml_rights.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_the_printed_hash_is_theirs() {
        let a = fresh_key().unwrap();
        let b = fresh_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        let hash = to_hex(&hash_key(&a));
        let both: Rights = [Right::Operate, Right::Read].into_iter().collect();
        let text = render(&a, "ops", &hash, both);
        assert!(text.contains(&format!("sha256 = \"{hash}\"")), "{text}");
        assert!(text.contains("rights = [\"operate\", \"read\"]"), "{text}");
        assert!(text.contains(&format!("ops:{hash}:operate+read")), "{text}");
    }
}
