-- sagaflow on SQLite, schema version 3: gauges for the metrics endpoint.

-- Sagas counted by definition and status: a scan of this index alone, already in group
-- order, instead of a scan of every snapshot and a sort.
CREATE INDEX sagas_by_definition_status ON sagas (definition, status);
