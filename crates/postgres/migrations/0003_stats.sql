-- Gauges for the metrics endpoint.
-- Sagas counted by definition and status: an index-only scan in group order, instead of a
-- scan of every snapshot. Snapshot updates that keep the status stay HOT (status is
-- indexed already).

CREATE INDEX sagas_definition_status ON sagas (definition, status);
