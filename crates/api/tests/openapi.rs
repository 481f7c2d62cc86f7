//! The OpenAPI document: served, covering every route, and kept reviewed by a snapshot.

mod support;

use axum::http::StatusCode;
use support::Api;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_document_matches_the_committed_snapshot() {
    let generated = sagaflow_api::openapi()
        .to_pretty_json()
        .expect("the document serialises")
        + "\n";
    if std::env::var_os("SAGAFLOW_UPDATE_OPENAPI").is_some() {
        std::fs::write(SNAPSHOT, &generated).expect("write the snapshot");
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == generated,
        "crates/api/openapi.json is not the document the code generates. Review the change, \
         then refresh it with: SAGAFLOW_UPDATE_OPENAPI=1 cargo test -p sagaflow-api"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_generated_one_and_covers_every_route() {
    let api = Api::start().await;
    let reply = api.get("/api/v1/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let expected = serde_json::to_value(sagaflow_api::openapi()).expect("json");
    assert_eq!(reply.body, expected);
    assert_eq!(reply.body["openapi"], "3.1.0");
    let paths = &reply.body["paths"];
    for (path, method) in [
        ("/api/v1/sagas", "post"),
        ("/api/v1/sagas", "get"),
        ("/api/v1/sagas/{id}", "get"),
        ("/api/v1/sagas/{id}/history", "get"),
        ("/api/v1/sagas/{id}/journal", "get"),
        ("/api/v1/sagas/{id}/cancel", "post"),
        ("/api/v1/sagas/{id}/resume", "post"),
        ("/api/v1/signals", "post"),
        ("/api/v1/definitions", "get"),
        ("/api/v1/definitions", "post"),
        ("/api/v1/definitions/{name}", "get"),
        ("/api/v1/dead-letters", "get"),
        ("/api/v1/flows/{correlation_id}", "get"),
        ("/api/v1/dead-letters/{id}/replay", "post"),
        ("/api/v1/dead-letters/{id}", "delete"),
        ("/api/v1/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // Found by schemathesis: an empty signal name is refused, so the document says so.
    assert_eq!(
        reply.body["components"]["schemas"]["SignalRequest"]["properties"]["name"]["minLength"],
        1
    );
    for schema in ["Problem", "Definition", "Step", "SagaView", "StartRequest"] {
        assert!(
            reply.body["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    api.stop().await;
}
