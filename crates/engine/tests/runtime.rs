//! The runtime end to end on a real SQLite file: sagas complete, compensate newest first,
//! wait for signals, time out, are cancelled and resumed, and survive crashes and duplicates.

mod support;

use std::sync::Arc;

use sagaflow_core::{Envelope, Event, Phase, Status, REPLY_TOPIC};
use sagaflow_engine::{EngineError, SignalTarget, StartSaga};
use serde_json::json;
use support::{duplicate_effects, effects_of, order, set_flag, Harness};

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_completes_with_each_effect_once() {
    let h = Harness::new(vec![order(1)]).await;
    let started = h
        .engine
        .start_saga(StartSaga::new("order", json!({"customer": "ann"})))
        .await
        .unwrap();
    assert!(started.created);
    let s = h.wait_status(&started.saga_id, Status::Completed).await;
    assert_eq!(s.context["ship_action"], json!(true));
    assert_eq!(
        effects_of(&h.store, &started.saga_id).await,
        pairs(&[
            ("reserve", "action"),
            ("charge", "action"),
            ("ship", "action"),
            ("notify", "action")
        ])
    );
    let journal = h.engine.journal(&started.saga_id).await.unwrap();
    assert!(matches!(
        journal.last().map(|e| &e.event),
        Some(Event::Ended { .. })
    ));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_pivot_compensates_done_steps_newest_first() {
    let h = Harness::new(vec![order(1)]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({"reject": "ship"})))
        .await
        .unwrap()
        .saga_id;
    let s = h.wait_status(&id, Status::Compensated).await;
    assert!(s.reason.unwrap().contains("ship says no"));
    assert_eq!(
        effects_of(&h.store, &id).await,
        pairs(&[
            ("reserve", "action"),
            ("charge", "action"),
            ("charge", "compensation"),
            ("reserve", "compensation"),
        ])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_use_durable_timers_and_retriable_steps_never_give_up() {
    let h = Harness::new(vec![order(1)]).await;
    // charge fails twice (3 attempts allowed); notify, after the pivot, fails 5 times.
    let id = h
        .engine
        .start_saga(StartSaga::new(
            "order",
            json!({"fail": {"charge": 2, "notify": 5}}),
        ))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Completed).await;
    let journal = h.engine.journal(&id).await.unwrap();
    let failures = journal
        .iter()
        .filter(|e| matches!(e.event, Event::AttemptFailed { .. }))
        .count();
    assert_eq!(failures, 7);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_saga() {
    let h = Harness::new(vec![order(1)]).await;
    let req = StartSaga::new("order", json!({})).idempotency_key("order-42");
    let a = h.engine.start_saga(req.clone()).await.unwrap();
    let b = h.engine.start_saga(req).await.unwrap();
    assert_eq!(a.saga_id, b.saga_id);
    assert!(a.created && !b.created);
    // Concurrent starts with one key make one saga.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let engine = h.engine.clone();
        handles.push(tokio::spawn(async move {
            engine
                .start_saga(StartSaga::new("order", json!({})).idempotency_key("order-43"))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0].saga_id == w[1].saga_id));
    assert_eq!(ids.iter().filter(|s| s.created).count(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_saga_waits_and_a_correlated_signal_wakes_it() {
    let h = Harness::new(vec![order(1)]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new(
            "order",
            json!({"customer": "bob", "park": "charge"}),
        ))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Waiting).await;
    let wrong = h
        .engine
        .signal(SignalTarget::Saga(id.clone()), "stop", json!({}))
        .await
        .unwrap_err();
    assert!(
        wrong.to_string().contains("waits for signal \"go\""),
        "{wrong}"
    );
    let woken = h
        .engine
        .signal(
            SignalTarget::Correlation("bob".into()),
            "go",
            json!({"go": true}),
        )
        .await
        .unwrap();
    assert_eq!(woken, vec![id.clone()]);
    h.wait_status(&id, Status::Completed).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_saga_compensates_and_cancel_after_the_pivot_is_refused() {
    let h = Harness::new(vec![order(1)]).await;
    let waiting = h
        .engine
        .start_saga(StartSaga::new("order", json!({"park": "ship"})))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&waiting, Status::Waiting).await;
    let s = h
        .engine
        .cancel(&waiting, "customer changed their mind")
        .await
        .unwrap();
    assert_eq!(s.status, Status::Compensating);
    h.wait_status(&waiting, Status::Compensated).await;
    assert_eq!(
        effects_of(&h.store, &waiting).await,
        pairs(&[
            ("reserve", "action"),
            ("charge", "action"),
            ("charge", "compensation"),
            ("reserve", "compensation"),
        ])
    );
    let err = h.engine.cancel(&waiting, "again").await.unwrap_err();
    assert!(
        err.to_string().contains("already ended as compensated"),
        "{err}"
    );

    let shipped = h
        .engine
        .start_saga(StartSaga::new("order", json!({"park": "notify"})))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&shipped, Status::Waiting).await;
    let before = h.engine.journal(&shipped).await.unwrap().len();
    let err = h.engine.cancel(&shipped, "too late").await.unwrap_err();
    assert!(
        matches!(err, EngineError::Refused(_)) && err.to_string().contains("pivot step \"ship\""),
        "{err}"
    );
    assert_eq!(
        h.engine.journal(&shipped).await.unwrap().len(),
        before,
        "a refusal writes nothing"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_compensation_fails_and_resume_finishes_it() {
    let h = Harness::new(vec![order(1)]).await;
    set_flag(&h.store, "refund_broken", true).await;
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({"reject": "ship"})))
        .await
        .unwrap()
        .saga_id;
    let failed = h.wait_status(&id, Status::Failed).await;
    assert!(failed.reason.unwrap().contains("refund service down"));
    let err = h
        .engine
        .resume(
            &h.engine
                .start_saga(StartSaga::new("order", json!({})))
                .await
                .unwrap()
                .saga_id,
        )
        .await;
    assert!(err.is_err_and(|e| e.to_string().contains("only a failed or waiting saga")));
    set_flag(&h.store, "refund_broken", false).await;
    h.engine.resume(&id).await.unwrap();
    h.wait_status(&id, Status::Compensated).await;
    assert_eq!(
        effects_of(&h.store, &id).await,
        pairs(&[
            ("reserve", "action"),
            ("charge", "action"),
            ("charge", "compensation"),
            ("reserve", "compensation"),
        ])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_may_have_happened_so_it_is_compensated() {
    let mut def = order(1);
    def.steps[1].action = sagaflow_core::Command::parse("slow.charge").unwrap();
    def.steps[1].timeout_ms = Some(150);
    def.steps[1].retry.max_attempts = 1;
    let h = Harness::new(vec![def]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({})))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Compensated).await;
    let journal = h.engine.journal(&id).await.unwrap();
    assert!(journal
        .iter()
        .any(|e| matches!(e.event, Event::AttemptTimedOut { step: 1, .. })));
    // charge never ran, yet its compensation was sent (unknown means maybe), newest first.
    assert_eq!(
        effects_of(&h.store, &id).await,
        pairs(&[
            ("reserve", "action"),
            ("charge", "compensation"),
            ("reserve", "compensation")
        ])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_deadline_fires_from_the_timer_table() {
    let mut def = order(1);
    def.deadline_ms = Some(200);
    let h = Harness::new(vec![def]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({"park": "charge"})))
        .await
        .unwrap()
        .saga_id;
    let s = h.wait_status(&id, Status::Compensated).await;
    assert_eq!(s.reason.as_deref(), Some("saga deadline exceeded"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_command_has_no_second_effect_and_gets_the_same_reply() {
    let h = Harness::new(vec![order(1)]).await;
    // A second consumer group on the shop's topic sees a copy of every command.
    let mut spy = sagaflow_core::Transport::subscribe(&*h.bus, "sagaflow.commands.shop", "spy")
        .await
        .unwrap();
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({})))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Completed).await;
    let first = spy.next().await.unwrap();
    let first_command = first.body.clone();
    first.ack().await;
    let key = Envelope::from_bytes(&first_command).unwrap().message_id;
    let reply_id = format!("{key}:reply");
    // Redeliveries, as a broker makes them: the same command under new delivery ids.
    for i in 0..3 {
        sagaflow_core::Transport::publish(
            &*h.bus,
            "sagaflow.commands.shop",
            &format!("redelivery-{i}"),
            first_command.clone(),
        )
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let replies = loop {
        let replies: Vec<Vec<u8>> = h
            .bus
            .published_to(REPLY_TOPIC)
            .into_iter()
            .filter(|(id, _)| id.starts_with(&reply_id))
            .map(|(_, body)| body)
            .collect();
        if replies.len() >= 4 || tokio::time::Instant::now() > deadline {
            break replies;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(replies.len(), 4, "one reply per delivery");
    assert!(
        replies.iter().all(|r| *r == replies[0]),
        "the same reply every time"
    );
    // Answers read back from the inbox go out under fresh ids (a lost first reply must be
    // replaceable); the saga records each as ignored and changes nothing.
    let s = h
        .wait(&id, "three ignored replies", |s| s.journal_version >= 13)
        .await;
    assert_eq!(s.status, Status::Completed);
    let journal = h.engine.journal(&id).await.unwrap();
    let ignored = journal
        .iter()
        .filter(|e| matches!(&e.event, Event::ReplyIgnored { .. }))
        .count();
    assert_eq!(ignored, 3);
    assert_eq!(
        h.engine.saga(&id).await.unwrap().unwrap().status,
        Status::Completed
    );
    assert!(duplicate_effects(&h.store).await.is_empty());
    assert_eq!(effects_of(&h.store, &id).await.len(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_replies_go_to_the_dead_letters_with_the_reason() {
    let h = Harness::new(vec![order(1)]).await;
    sagaflow_core::Transport::publish(&*h.bus, REPLY_TOPIC, "m0", b"{not json".to_vec())
        .await
        .unwrap();
    let unknown = Envelope {
        protocol: sagaflow_core::PROTOCOL_VERSION,
        message_id: "m1".into(),
        kind: sagaflow_core::MessageKind::Reply,
        subject: REPLY_TOPIC.into(),
        saga_id: Some("no-such-saga".into()),
        correlation_id: None,
        causation_id: None,
        step: None,
        attempt: None,
        traceparent: None,
        request_id: None,
        payload: json!({"step": 0, "attempt": 1, "phase": "action", "outcome": "succeeded"}),
    };
    sagaflow_core::Transport::publish(&*h.bus, REPLY_TOPIC, "m1", unknown.to_bytes())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let letters = loop {
        let letters = h.store.dead_letters(0, 10).await.unwrap();
        if letters.len() == 2 || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let reasons: Vec<_> = letters.iter().map(|l| l.reason.clone()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a sagaflow envelope")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("saga no-such-saga not found")),
        "{reasons:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_refuses_to_start_without_a_version_sagas_in_flight_need() {
    let h = Harness::new(vec![order(1), order(2)]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({"park": "reserve"})).version(2))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Waiting).await;
    // Definitions are kept in the store, so v2 would come from there; take it away, as in a
    // database whose definitions were lost.
    let mut tx = h.store.begin().await.unwrap();
    tx.execute("DELETE FROM definitions WHERE version = $1", &[2i64.into()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let dir = h.stop().await;
    let err = Harness::on(dir.clone(), vec![order(1)])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("order v2"), "{err}");
    let again = Harness::on(dir, vec![order(1), order(2)])
        .await
        .expect("starts with v2");
    assert_eq!(again.engine.saga(&id).await.unwrap().unwrap().version, 2);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_new_engine_finishes_every_saga_exactly_once() {
    let h = Harness::new(vec![order(1)]).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let input = if i % 5 == 0 {
            json!({"reject": "ship"})
        } else {
            json!({"fail": {"notify": 1}})
        };
        ids.push(
            h.engine
                .start_saga(StartSaga::new("order", input))
                .await
                .unwrap()
                .saga_id,
        );
    }
    let dir = h.crash();
    let h = Harness::on(dir, vec![order(1)]).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 5 == 0 {
            Status::Compensated
        } else {
            Status::Completed
        };
        h.wait_status(id, expected).await;
        let effects = effects_of(&h.store, id).await;
        assert_eq!(effects.len(), 4, "saga {i}: {effects:?}");
    }
    assert!(duplicate_effects(&h.store).await.is_empty());
    // The journal is the truth: folding it gives the snapshot.
    let def = order(1);
    for id in &ids {
        let journal = h.engine.journal(id).await.unwrap();
        let folded = sagaflow_core::fold(id.clone(), &def, &journal);
        let snapshot = h.engine.saga(id).await.unwrap().unwrap();
        assert_eq!(folded.status, snapshot.status);
        assert_eq!(folded.context, snapshot.context);
        assert_eq!(folded.journal_version, snapshot.journal_version);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_decisions_taken_and_refuses_new_work() {
    let h = Harness::new(vec![order(1)]).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(
            h.engine
                .start_saga(StartSaga::new("order", json!({})))
                .await
                .unwrap()
                .saga_id,
        );
    }
    let engine = h.engine.clone();
    let dir = h.stop().await;
    let err = engine
        .start_saga(StartSaga::new("order", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ShuttingDown), "{err}");
    let h = Harness::on(dir, vec![order(1)]).await.unwrap();
    for id in &ids {
        h.wait_status(id, Status::Completed).await;
    }
    assert!(duplicate_effects(&h.store).await.is_empty());
    let _ = Arc::clone(&h.dir);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_typed_errors_that_name_what_is_wrong() {
    let h = Harness::new(vec![order(1)]).await;
    let err = h
        .engine
        .start_saga(StartSaga::new("nope", json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown definition nope");
    let err = h
        .engine
        .start_saga(StartSaga::new("order", json!({})).version(9))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown definition order v9");
    let mut bad = order(2);
    bad.steps[1].compensation = None;
    let err = h.engine.register(bad).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("step \"charge\": a compensatable step needs a compensation"),
        "{err}"
    );
    let mut changed = order(1);
    changed.steps.pop();
    let err = h.engine.register(changed).await.unwrap_err();
    assert!(
        err.to_string().contains("order v1 is already registered"),
        "{err}"
    );
    let missing = sagaflow_core::SagaId("no-such-saga".into());
    let err = h.engine.cancel(&missing, "x").await.unwrap_err();
    assert_eq!(err.to_string(), "saga no-such-saga not found");
    let err = h.engine.resume(&missing).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_decided_on_fresh_state_even_when_another_engine_moved_the_saga() {
    // Engine B (with the shop participant) and engine A (without) share one database file.
    let b = Harness::new(vec![order(1)]).await;
    let a_store = support::open_store(&b.dir).await;
    let a = sagaflow_engine::Engine::builder(a_store, Arc::new(sagaflow_engine::MemoryBus::new()))
        .register(order(1))
        .config(support::fast_config())
        .start()
        .await
        .unwrap();
    // A starts the saga and caches it as Running; nobody on A's bus answers, so B's relay
    // takes the command over when its lease ends, B's participant parks it, B commits Waiting.
    let id = a
        .start_saga(StartSaga::new("order", json!({"park": "reserve"})))
        .await
        .unwrap()
        .saga_id;
    b.wait_status(&id, Status::Waiting).await;
    // A's cached copy still says Running; the signal must be decided on what is stored.
    let woken = a
        .signal(SignalTarget::Saga(id.clone()), "go", json!({"go": true}))
        .await
        .expect("a waiting saga accepts the signal");
    assert_eq!(woken, vec![id.clone()]);
    b.wait_status(&id, Status::Completed).await;
    a.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_park_timeout_fires_from_the_timer_table_and_compensates() {
    let h = Harness::new(vec![order(1)]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new(
            "order",
            json!({"park": "charge", "park_timeout_ms": 150}),
        ))
        .await
        .unwrap()
        .saga_id;
    let s = h.wait_status(&id, Status::Compensated).await;
    assert_eq!(s.reason.as_deref(), Some("step charge waited too long"));
    let journal = h.engine.journal(&id).await.unwrap();
    assert!(journal
        .iter()
        .any(|e| matches!(e.event, Event::ParkTimedOut { step: 1 })));
    assert_eq!(
        effects_of(&h.store, &id).await,
        pairs(&[("reserve", "action"), ("reserve", "compensation")])
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_waiting_saga_attempts_its_step_again_now() {
    let h = Harness::new(vec![order(1)]).await;
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({"park": "charge"})))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Waiting).await;
    let s = h.engine.resume(&id).await.unwrap();
    assert_eq!(s.status, Status::Running);
    // The participant still cannot proceed, so the second attempt parks again.
    let s = h
        .wait(&id, "parked again", |s| {
            s.status == Status::Waiting && s.steps[1].attempts == 2
        })
        .await;
    assert_eq!(s.steps[1].attempts, 2);
    let journal = h.engine.journal(&id).await.unwrap();
    assert!(journal.iter().any(|e| matches!(e.event, Event::Resumed)));
    assert!(journal.iter().any(|e| matches!(
        e.event,
        Event::AttemptDispatched {
            step: 1,
            attempt: 2,
            phase: Phase::Action,
            ..
        }
    )));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_and_trace_context_travel_in_every_message_of_the_saga() {
    let h = Harness::new(vec![order(1)]).await;
    let mut commands =
        sagaflow_core::Transport::subscribe(&*h.bus, "sagaflow.commands.shop", "spy")
            .await
            .unwrap();
    let mut replies = sagaflow_core::Transport::subscribe(&*h.bus, REPLY_TOPIC, "spy")
        .await
        .unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = h
        .engine
        .start_saga(
            StartSaga::new("order", json!({"reject": "ship"}))
                .request_id("req-42")
                .traceparent(traceparent),
        )
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Compensated).await;
    // reserve, charge, ship, then the two compensations: five commands and five replies.
    for (name, sub) in [("command", &mut commands), ("reply", &mut replies)] {
        for _ in 0..5 {
            let env = Envelope::from_bytes(&sub.next().await.unwrap().body).unwrap();
            assert_eq!(env.saga_id.as_deref(), Some(id.0.as_str()));
            assert_eq!(env.request_id.as_deref(), Some("req-42"), "{name} {env:?}");
            assert_eq!(
                env.traceparent.as_deref(),
                Some(traceparent),
                "{name} {env:?}"
            );
        }
    }
    let s = h.engine.saga(&id).await.unwrap().unwrap();
    assert_eq!(s.request_id.as_deref(), Some("req-42"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_registered_at_runtime_survive_a_restart_and_reach_other_engines() {
    let h = Harness::new(vec![order(1)]).await;
    // v3 exists only because it was registered while running (as over HTTP, later).
    h.engine.register(order(3)).await.unwrap();
    let id = h
        .engine
        .start_saga(StartSaga::new("order", json!({"park": "charge"})).version(3))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&id, Status::Waiting).await;
    let dir = h.stop().await;
    // A new engine with nothing in code still knows v3 from the store and finishes the saga.
    let h = Harness::on(dir.clone(), vec![])
        .await
        .expect("v3 comes from the store");
    assert!(h.engine.registry().get("order", Some(3)).is_ok());
    h.engine
        .signal(SignalTarget::Saga(id.clone()), "go", json!({"go": true}))
        .await
        .unwrap();
    h.wait_status(&id, Status::Completed).await;
    let dir2 = h.stop().await;
    // Code that disagrees with the stored v3 is refused, naming it.
    let mut other = order(3);
    other.steps.pop();
    let err = Harness::on(dir2, vec![other]).await.err().expect("refused");
    assert!(
        err.to_string().contains("order v3 is already registered"),
        "{err}"
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sagas_attempts_and_durations() {
    let h = Harness::new(vec![order(1)]).await;
    let ok = h
        .engine
        .start_saga(StartSaga::new("order", json!({})))
        .await
        .unwrap()
        .saga_id;
    let no = h
        .engine
        .start_saga(StartSaga::new("order", json!({"reject": "ship"})))
        .await
        .unwrap()
        .saga_id;
    h.wait_status(&ok, Status::Completed).await;
    h.wait_status(&no, Status::Compensated).await;
    let text = h.engine.metrics_text().await.unwrap();
    for line in [
        "sagaflow_sagas_started_total{definition=\"order\"} 2",
        "sagaflow_sagas_ended_total{definition=\"order\",status=\"completed\"} 1",
        "sagaflow_sagas_ended_total{definition=\"order\",status=\"compensated\"} 1",
        "sagaflow_step_attempts_total{definition=\"order\",step=\"ship\",kind=\"action\",outcome=\"rejected\"} 1",
        "sagaflow_step_attempts_total{definition=\"order\",step=\"reserve\",kind=\"compensation\",outcome=\"succeeded\"} 1",
        "sagaflow_step_attempts_total{definition=\"order\",step=\"reserve\",kind=\"action\",outcome=\"succeeded\"} 2",
        "sagaflow_saga_duration_seconds_count{definition=\"order\"} 2",
        "sagaflow_step_duration_seconds_count{definition=\"order\",step=\"reserve\"} 3",
        "sagaflow_sagas{definition=\"order\",status=\"completed\"} 1",
        "sagaflow_sagas{definition=\"order\",status=\"compensated\"} 1",
        "sagaflow_outbox_rows 0",
        "sagaflow_dead_letters 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    h.stop().await;
}

/// A handler whose dependency is down says `Unavailable`: nothing is replied, the command
/// comes again, and the saga goes on once it answers — without a new attempt. A
/// transactional handler's `after_commit` runs once its transaction is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_handler_is_redelivered_and_after_commit_follows_the_commit() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use sagaflow_core::{Definition, Outcome, ParticipantTx, Step, StoreError};
    use sagaflow_engine::{async_trait, CommandCall, Participant, TxHandler, Unavailable};

    struct Note {
        store: Arc<dyn sagaflow_core::Store>,
        seen_after_commit: Arc<Mutex<Vec<i64>>>,
    }

    #[async_trait]
    impl TxHandler for Note {
        async fn handle(
            &self,
            call: &CommandCall,
            tx: &mut dyn ParticipantTx,
        ) -> Result<Outcome, StoreError> {
            tx.execute(
                "INSERT INTO remote_notes (saga_id) VALUES ($1)",
                &[call.saga_id.as_str().into()],
            )
            .await?;
            Ok(Outcome::ok(json!({})))
        }

        async fn after_commit(&self, call: &CommandCall, _outcome: &Outcome) {
            // Another transaction already sees the row.
            let mut tx = self.store.begin().await.unwrap();
            let rows = tx
                .query(
                    "SELECT COUNT(*) FROM remote_notes WHERE saga_id = $1",
                    &[call.saga_id.as_str().into()],
                )
                .await
                .unwrap();
            let _ = tx.rollback().await;
            self.seen_after_commit
                .lock()
                .unwrap()
                .push(rows[0][0].as_i64().unwrap());
        }
    }

    let h = Harness::new(vec![]).await;
    let mut tx = h.store.begin().await.unwrap();
    tx.execute("CREATE TABLE remote_notes (saga_id TEXT NOT NULL)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let def = Definition::builder("lookup", 1)
        .step(Step::pivot("ask", "remote.ask").timeout_ms(60_000))
        .step(Step::retriable("note", "remote.note"))
        .build()
        .unwrap();
    h.engine.register(def).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let remote = {
        let calls = calls.clone();
        Participant::new("remote")
            .on_try("ask", move |call: CommandCall| {
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        return Err(Unavailable("the directory is down".into()));
                    }
                    Ok(Outcome::ok(json!({ "redelivered": call.redelivered })))
                }
            })
            .on_tx(
                "note",
                Note {
                    store: h.store.clone(),
                    seen_after_commit: seen.clone(),
                },
            )
            .start(h.store.clone(), h.bus.clone())
            .await
            .unwrap()
    };
    let id = h
        .engine
        .start_saga(StartSaga::new("lookup", json!({})))
        .await
        .unwrap()
        .saga_id;
    let s = h.wait_status(&id, Status::Completed).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Delivered again by the bus or re-sent by the outbox's lease, whichever came first.
    assert!(s.context["redelivered"].is_u64());
    let journal = h.engine.journal(&id).await.unwrap();
    let dispatched = journal
        .iter()
        .filter(|e| matches!(e.event, Event::AttemptDispatched { step: 0, .. }))
        .count();
    assert_eq!(
        dispatched, 1,
        "no new attempt: the transport did the retrying"
    );
    assert_eq!(*seen.lock().unwrap(), vec![1]);
    remote.shutdown().await;
    h.stop().await;
}
