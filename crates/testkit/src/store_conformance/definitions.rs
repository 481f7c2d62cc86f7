//! Definition checks: definitions kept in the store come back exactly, a stored version
//! never changes (sagas in flight run on it), and racing saves store one content.

use std::sync::Arc;

use sagaflow_core::{
    Condition, Definition, Guard, GuardOtherwise, RetryPolicy, Step, Store, StoreError,
};
use serde_json::json;

async fn save(store: &dyn Store, def: &Definition) {
    store
        .save_definition(def)
        .await
        .unwrap_or_else(|e| panic!("save_definition({} v{}) failed: {e}", def.name, def.version));
}

async fn stored(store: &dyn Store) -> Vec<Definition> {
    store
        .definitions()
        .await
        .unwrap_or_else(|e| panic!("definitions() failed: {e}"))
}

fn build(builder: sagaflow_core::definition::DefinitionBuilder) -> Definition {
    builder
        .build()
        .unwrap_or_else(|e| panic!("the fixture definition must be valid: {e}"))
}

/// A definition using every field a definition has: custom retry policies (fractional
/// multiplier and jitter), timeouts, guards of every condition kind with both `otherwise`
/// choices (one comparing against a nested value holding a NUL and non-ASCII text), a
/// deadline and a correlation key.
fn rich(name: &str, version: u32) -> Definition {
    let retry = RetryPolicy {
        max_attempts: 7,
        initial_delay_ms: 250,
        multiplier: 1.5,
        max_delay_ms: 60_000,
        jitter: 0.25,
    };
    let vip = Guard {
        when: Condition::All {
            conditions: vec![
                Condition::Exists {
                    path: "customer.id".into(),
                },
                Condition::Equals {
                    path: "customer.tier".into(),
                    value: json!({ "name": "gold \u{0} ✓ grüß", "rank": 2.5, "tags": [1, null, true] }),
                },
            ],
        },
        otherwise: GuardOtherwise::Fail,
    };
    let not_blocked = Guard {
        when: Condition::Not {
            condition: Box::new(Condition::Truthy {
                path: "customer.blocked".into(),
            }),
        },
        otherwise: GuardOtherwise::Fail,
    };
    let wants_mail = Guard {
        when: Condition::Any {
            conditions: vec![
                Condition::Truthy {
                    path: "prefs.mail".into(),
                },
                Condition::Equals {
                    path: "prefs.channel".into(),
                    value: json!("mail"),
                },
            ],
        },
        otherwise: GuardOtherwise::Skip,
    };
    build(
        Definition::builder(name, version)
            .step(
                Step::compensatable("reserve", "stock.reserve", "stock.release")
                    .retry(retry)
                    .timeout_ms(4_500)
                    .guard(vip),
            )
            .step(
                Step::pivot("charge", "billing.charge")
                    .retry(RetryPolicy::none())
                    .timeout_ms(9_000)
                    .guard(not_blocked),
            )
            .step(Step::retriable("notify", "mail.send-receipt").guard(wants_mail))
            .deadline_ms(86_400_000)
            .correlation_key("customer.id"),
    )
}

/// A one-step definition whose step's retry policy allows `attempts` attempts: versions
/// that differ only in one number, the smallest difference a store must still notice.
fn small(name: &str, version: u32, attempts: u32) -> Definition {
    build(
        Definition::builder(name, version)
            .step(Step::pivot("go", "svc.go").retry(RetryPolicy::attempts(attempts, 100))),
    )
}

/// `save_definition` then `definitions` gives back exactly what was saved: every step,
/// retry policy, timeout, guard, the deadline and the correlation key.
pub async fn definitions_round_trip_exactly(store: Arc<dyn Store>) {
    assert_eq!(
        stored(&*store).await,
        vec![],
        "a fresh store has no definitions"
    );
    let def = rich("order", 1);
    save(&*store, &def).await;
    assert_eq!(
        stored(&*store).await,
        vec![def],
        "a stored definition comes back exactly as saved"
    );
}

/// Saving a definition equal to the stored one is a no-op, not an error: every engine
/// registers its definitions on each start.
pub async fn saving_the_same_definition_again_is_a_no_op(store: Arc<dyn Store>) {
    let def = rich("order", 3);
    save(&*store, &def).await;
    save(&*store, &def.clone()).await;
    save(&*store, &rich("order", 3)).await;
    assert_eq!(
        stored(&*store).await,
        vec![def],
        "saving an equal definition again stores nothing new"
    );
}

/// A different definition under a taken name and version is refused as
/// [`StoreError::Invalid`] saying to register a new version, and the stored one stays: sagas
/// in flight run on it. A definition that does not validate is refused the same way.
pub async fn a_different_definition_under_a_taken_version_is_invalid(store: Arc<dyn Store>) {
    let first = rich("order", 2);
    save(&*store, &first).await;
    let mut changed = first.clone();
    changed.steps[0].retry.max_attempts += 1;
    let mut fewer = first.clone();
    fewer.steps.pop();
    let mut no_deadline = first.clone();
    no_deadline.deadline_ms = None;
    for (what, other) in [
        ("another retry policy", changed),
        ("fewer steps", fewer),
        ("no deadline", no_deadline),
    ] {
        match store.save_definition(&other).await {
            Err(StoreError::Invalid(message)) => assert!(
                message.contains(
                    "definition order v2 is already stored with different steps: \
                     register a new version instead"
                ),
                "{what}: the refusal names the definition and says what to do: {message}"
            ),
            got => panic!("{what}: a different order v2 must be refused as Invalid, got {got:?}"),
        }
    }
    let mut unnamed = small("ok", 1, 3);
    unnamed.name = "not a name!".into();
    let mut bad_version = small("ok", 1, 3);
    bad_version.version = 0;
    for (what, bad) in [("a bad name", unnamed), ("version 0", bad_version)] {
        let got = store.save_definition(&bad).await;
        assert!(
            matches!(got, Err(StoreError::Invalid(_))),
            "{what}: a definition that does not validate is refused as Invalid, got {got:?}"
        );
    }
    assert_eq!(
        stored(&*store).await,
        vec![first],
        "refused saves leave the stored definitions unchanged"
    );
}

/// Versions of one name live side by side; `definitions` orders by name (bytewise, so
/// upper case first) then version (as a number: 2 before 10).
pub async fn definition_versions_are_listed_side_by_side_in_order(store: Arc<dyn Store>) {
    let order2 = small("order", 2, 2);
    let audit = small("audit", 1, 1);
    let order10 = small("order", 10, 10);
    let order1 = rich("order", 1);
    let upper = small("Order", 1, 5);
    let order_x = small("order_x", 1, 4);
    for def in [&order2, &audit, &order10, &order_x, &order1, &upper] {
        save(&*store, def).await;
    }
    assert_eq!(
        stored(&*store).await,
        vec![upper, audit, order1, order2, order10, order_x],
        "definitions are listed by name, then version"
    );
}

/// Two callers saving different definitions under the same new name and version at the
/// same moment: exactly one is stored, and the other caller hears `Invalid` (never both
/// "win" with different content, never a store error).
pub async fn concurrent_saves_of_one_version_store_one(store: Arc<dyn Store>) {
    // Several rounds, each on a new version, to give the race real chances to overlap.
    for version in 1..=10 {
        let contenders = [small("race", version, 2), small("race", version, 3)];
        let barrier = Arc::new(tokio::sync::Barrier::new(contenders.len()));
        let tasks: Vec<_> = contenders
            .iter()
            .cloned()
            .map(|def| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.save_definition(&def).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(match task.await {
                Ok(result) => result,
                Err(e) => panic!("a saving task failed: {e}"),
            });
        }
        let winners: Vec<&Definition> = contenders
            .iter()
            .zip(&results)
            .filter_map(|(def, result)| result.is_ok().then_some(def))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {version}: exactly one of two racing saves succeeds, got {results:?}"
        );
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::Invalid(_)))),
            "round {version}: the losing save is refused as Invalid, got {results:?}"
        );
        let race: Vec<Definition> = stored(&*store)
            .await
            .into_iter()
            .filter(|d| d.version == version)
            .collect();
        assert_eq!(
            race,
            vec![winners[0].clone()],
            "round {version}: the winner's definition is the one stored"
        );
    }
}
