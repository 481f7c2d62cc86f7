//! Registered definitions, several versions side by side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use sagaflow_core::Definition;

use crate::error::EngineError;

/// The definitions an engine knows, by name and version.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: RwLock<HashMap<String, BTreeMap<u32, Arc<Definition>>>>,
}

impl Registry {
    /// Validates and adds a definition. Registering the same definition again is a no-op;
    /// a different one under a taken name and version is refused.
    pub fn register(&self, def: Definition) -> Result<Arc<Definition>, EngineError> {
        def.validate()?;
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        let versions = map.entry(def.name.clone()).or_default();
        if let Some(existing) = versions.get(&def.version) {
            if **existing == def {
                return Ok(existing.clone());
            }
            return Err(EngineError::DefinitionChanged {
                name: def.name,
                version: def.version,
            });
        }
        let def = Arc::new(def);
        versions.insert(def.version, def.clone());
        Ok(def)
    }

    /// A definition by name and version, or its newest version when none is given.
    pub fn get(&self, name: &str, version: Option<u32>) -> Result<Arc<Definition>, EngineError> {
        let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        let found = map.get(name).and_then(|versions| match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        });
        found.ok_or_else(|| EngineError::UnknownDefinition {
            name: name.to_string(),
            version,
        })
    }

    /// Every registered definition, by name then version.
    pub fn all(&self) -> Vec<Arc<Definition>> {
        let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.values().flat_map(|v| v.values().cloned()).collect();
        out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        out
    }
}
