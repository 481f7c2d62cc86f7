//! Saga definitions as files: `serve --definitions DIR` registers every `*.json`, `*.yaml`
//! and `*.yml` file in DIR at start, and `sagaflow definitions validate FILE…` checks files
//! without a server (in a CI, say). The schema is the one `POST /api/v1/definitions` takes.
//! A bad file is refused with its name, the step and the reason.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sagaflow_core::Definition;
use serde_json::Value;

/// The file extensions read as definitions.
const EXTENSIONS: [&str; 3] = ["json", "yaml", "yml"];

/// Reads and validates one definition file.
pub fn load(path: &Path) -> anyhow::Result<Definition> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read it", path.display()))?;
    parse(&text, path).map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))
}

/// Parses a definition's text (JSON, or YAML for a `.yaml`/`.yml` path) and validates it.
pub fn parse(text: &str, path: &Path) -> Result<Definition, String> {
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let value: Value = if yaml {
        serde_norway::from_str(text).map_err(|e| format!("not YAML: {e}"))?
    } else {
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?
    };
    let def: Definition = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner().to_string();
        match step_named_by(&value, &at) {
            Some(step) => format!("step {step:?} ({at}): {inner}"),
            None if at == "." => inner,
            None => format!("{at}: {inner}"),
        }
    })?;
    def.validate().map_err(|e| e.to_string())?;
    Ok(def)
}

/// The name of the step a path like `steps[2].kind` points into, when it has one.
fn step_named_by(value: &Value, path: &str) -> Option<String> {
    let rest = path.strip_prefix("steps[")?;
    let index: usize = rest.split(']').next()?.parse().ok()?;
    value["steps"][index]["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| Some(format!("#{}", index + 1)))
}

/// Every definition file in `dir`, by file name, each read and validated; the first bad one
/// stops it. Two files with the same name and version are refused.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Definition)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("definitions directory {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .collect();
    paths.sort();
    let mut loaded: Vec<(PathBuf, Definition)> = Vec::new();
    for path in paths {
        let def = load(&path)?;
        if let Some((other, _)) = loaded
            .iter()
            .find(|(_, d)| d.name == def.name && d.version == def.version)
        {
            bail!(
                "{}: definition {} v{} is also in {}; give each version one file",
                path.display(),
                def.name,
                def.version,
                other.display()
            );
        }
        loaded.push((path, def));
    }
    Ok(loaded)
}

/// `sagaflow definitions validate FILE…`: prints each file's verdict; fails if any is bad.
pub fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    if files.is_empty() {
        bail!("name at least one definition file");
    }
    let mut bad = 0;
    for file in files {
        match load(file) {
            Ok(def) => println!(
                "ok    {}: {} v{} ({} steps)",
                file.display(),
                def.name,
                def.version,
                def.steps.len()
            ),
            Err(e) => {
                bad += 1;
                println!("error {e:#}");
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} definition files are invalid", files.len());
    }
    Ok(())
}

/// `sagaflow definitions …`.
#[derive(Debug, clap::Subcommand)]
pub enum DefinitionsCommand {
    /// Check definition files (JSON or YAML, the schema of POST /api/v1/definitions) without
    /// a server; exits non-zero naming the file, the step and the reason of each bad one.
    Validate {
        /// The files.
        files: Vec<PathBuf>,
    },
}

/// Runs a `definitions` command.
pub fn run(command: DefinitionsCommand) -> anyhow::Result<()> {
    match command {
        DefinitionsCommand::Validate { files } => validate(&files),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
name: order
version: 1
steps:
  - name: reserve
    kind: compensatable
    action: inventory.reserve
    compensation: inventory.release
  - name: charge
    kind: pivot
    action: payments.charge
    retry: { max_attempts: 5, initial_delay_ms: 50 }
";

    #[test]
    fn yaml_and_json_read_the_same() {
        let y = parse(YAML, Path::new("order.yaml")).unwrap();
        let json = serde_json::to_string(&y).unwrap();
        let j = parse(&json, Path::new("order.json")).unwrap();
        assert_eq!(y, j);
        assert_eq!(y.steps[1].retry.max_attempts, 5);
    }

    #[test]
    fn bad_files_name_the_step_and_the_reason() {
        let typo = YAML.replace("kind: pivot", "kind: pivott");
        let e = parse(&typo, Path::new("x.yaml")).unwrap_err();
        assert!(e.contains("step \"charge\"") && e.contains("pivott"), "{e}");
        let no_comp = YAML.replace("    compensation: inventory.release\n", "");
        let e = parse(&no_comp, Path::new("x.yaml")).unwrap_err();
        assert!(
            e.contains("reserve") && e.contains("needs a compensation"),
            "{e}"
        );
        let unknown = YAML.replace("kind: pivot", "kind: pivot\n    retires: 3");
        let e = parse(&unknown, Path::new("x.yaml")).unwrap_err();
        assert!(e.contains("charge") && e.contains("retires"), "{e}");
        let e = parse("name: [", Path::new("x.yml")).unwrap_err();
        assert!(e.starts_with("not YAML"), "{e}");
        let e = parse("{", Path::new("x.json")).unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
    }

    #[test]
    fn a_directory_loads_in_order_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), YAML).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        std::fs::write(
            dir.path().join("a.yml"),
            YAML.replace("version: 1", "version: 2"),
        )
        .unwrap();
        let loaded = load_dir(dir.path()).unwrap();
        let versions: Vec<u32> = loaded.iter().map(|(_, d)| d.version).collect();
        assert_eq!(versions, [2, 1]);
        std::fs::write(dir.path().join("c.yaml"), YAML).unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c.yaml") && e.contains("b.yaml"), "{e}");
        std::fs::write(dir.path().join("c.yaml"), "name: 3").unwrap();
        let e = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(e.contains("c.yaml"), "{e}");
    }
}
