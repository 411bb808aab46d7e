//! One-time use under concurrency: N payers, revoke against pay, payments in flight.

use crate::helpers::{AppOptions, Backend, spawn_app, spawn_app_with, valid_card};
use crate::on_every_backend;
use futures_util::future::join_all;
use std::time::Duration;

async fn twenty_parallel_payments_of_one_link_charge_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    let form = valid_card();
    let replies = join_all((0..24).map(|_| app.pay(&created.token, &form))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 410 || r.status == 409)
        .count();
    assert_eq!(
        ok,
        1,
        "exactly one receipt: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(refused, 23, "everyone else is refused");
    assert_eq!(
        app.approvals(),
        1,
        "exactly one approval reached the processor"
    );
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "paid"
    );
}

async fn a_second_payment_while_one_is_in_flight_gets_409_and_never_reaches_the_processor(
    backend: Backend,
) {
    let mut options = AppOptions::new(backend);
    options.processor_delay = Some(Duration::from_millis(600));
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    let form = valid_card();
    let first = app.pay(&created.token, &form);
    let second = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        app.pay(&created.token, &form).await
    };
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        app.revoke_session(&created.token).await
    };
    let (first, second, revoke) = tokio::join!(first, second, revoke);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 409);
    assert!(second.text.contains("in progress"));
    assert_eq!(
        revoke.status, 409,
        "a payment in flight cannot be revoked: {}",
        revoke.text
    );
    assert_eq!(revoke.error_code(), "not_open");
    assert_eq!(app.approvals(), 1);
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "paid"
    );
}

async fn revoke_racing_a_payment_never_lets_both_succeed(backend: Backend) {
    let app = spawn_app(backend).await;
    let form = valid_card();
    let mut paid_wins = 0;
    let mut revoke_wins = 0;
    for round in 0..30 {
        let created = app.create_default_session().await;
        let (pay, revoke) = tokio::join!(
            app.pay(&created.token, &form),
            app.revoke_session(&created.token)
        );
        let status = app.get_session(&created.token).await.json()["status"].clone();
        match (pay.status, revoke.status) {
            (200, 409) => {
                paid_wins += 1;
                assert_eq!(status, "paid", "round {round}");
            }
            (410, 200) => {
                revoke_wins += 1;
                assert_eq!(status, "revoked", "round {round}");
            }
            other => panic!("round {round}: impossible outcome {other:?}"),
        }
    }
    assert_eq!(app.approvals(), paid_wins);
    assert_eq!(paid_wins + revoke_wins, 30);
}

on_every_backend!(
    twenty_parallel_payments_of_one_link_charge_exactly_once,
    a_second_payment_while_one_is_in_flight_gets_409_and_never_reaches_the_processor,
    revoke_racing_a_payment_never_lets_both_succeed,
);
