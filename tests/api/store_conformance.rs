//! One conformance suite for every store backend: the same verbs, the same answers.

use crate::helpers::RedisServer;
use futures_util::future::join_all;
use paylink::domain::{Amount, Currency, MerchantId, OrderId};
use paylink::session::{
    BeginPayment, ClaimId, ExpiredSession, Limited, Lockout, MemoryStore, PaymentToken, RateLimit,
    Revocation, SessionRecord, SessionStatus, SessionStore, StoreError, TokenDigest, connect_redis,
    now_ms,
};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::mpsc;

const RETENTION: Duration = Duration::from_secs(3600);
const LEASE: Duration = Duration::from_secs(30);
/// The claim of the tests that make one payment attempt at a time.
static CLAIM: LazyLock<ClaimId> = LazyLock::new(claim);

fn claim() -> ClaimId {
    ClaimId::generate().expect("the OS generator works")
}

/// A store under test, with whatever keeps it alive.
pub struct StoreUnderTest {
    pub store: Arc<dyn SessionStore>,
    pub expired: mpsc::UnboundedReceiver<ExpiredSession>,
    _redis: Option<RedisServer>,
    _cluster: Option<crate::helpers::RedisCluster>,
}

pub fn memory_store() -> StoreUnderTest {
    let (tx, rx) = mpsc::unbounded_channel();
    StoreUnderTest {
        store: Arc::new(MemoryStore::start(tx)),
        expired: rx,
        _redis: None,
        _cluster: None,
    }
}

pub fn redis_store() -> StoreUnderTest {
    let server = RedisServer::start();
    let (_tx, rx) = mpsc::unbounded_channel();
    StoreUnderTest {
        store: Arc::new(connect_redis(&server.url(), Duration::from_secs(2)).unwrap()),
        expired: rx,
        _redis: Some(server),
        _cluster: None,
    }
}

/// A standalone Redis reached through redis-rs alone: no connection of paylink's own for
/// the hot reads, as with a TLS (`rediss://`) URL.
pub async fn redis_rs_store() -> StoreUnderTest {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let (_tx, rx) = mpsc::unbounded_channel();
    StoreUnderTest {
        store: Arc::new(paylink::session::RedisStore::new(
            conn,
            Duration::from_secs(2),
        )),
        expired: rx,
        _redis: Some(server),
        _cluster: None,
    }
}

pub async fn cluster_store() -> StoreUnderTest {
    let cluster = crate::helpers::RedisCluster::start(3, 0);
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}", n.port))
        .collect();
    let client = redis::cluster::ClusterClient::new(nodes).unwrap();
    let conn = client.get_async_connection().await.unwrap();
    let (_tx, rx) = mpsc::unbounded_channel();
    StoreUnderTest {
        store: Arc::new(paylink::session::RedisStore::new_cluster(
            conn,
            Duration::from_secs(2),
        )),
        expired: rx,
        _redis: None,
        _cluster: Some(cluster),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded_store() {
                    super::$name(super::memory_store()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(super::redis_store()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_through_redis_rs() {
                    super::$name(super::redis_rs_store().await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_cluster() {
                    super::$name(super::cluster_store().await).await
                }
            }
        )*
    };
}

fn merchant(id: &str) -> MerchantId {
    MerchantId::parse(id).unwrap()
}

pub fn record(ttl: Duration) -> SessionRecord {
    let now = now_ms();
    SessionRecord {
        merchant_id: merchant("acme"),
        order_id: OrderId::parse("ord_1").unwrap(),
        amount: Amount::new(1999).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        description: None,
        created_at_ms: now,
        expires_at_ms: now + ttl.as_millis() as i64,
        stored_status: SessionStatus::Open,
        paid_at_ms: None,
        revoked_at_ms: None,
        card_last4: None,
    }
}

pub fn digest() -> TokenDigest {
    PaymentToken::generate().unwrap().digest()
}

async fn open_session(store: &dyn SessionStore, ttl: Duration) -> (TokenDigest, SessionRecord) {
    let (d, r) = (digest(), record(ttl));
    store.create(&d, &r, RETENTION).await.unwrap();
    (d, r)
}

async fn a_created_session_loads_back_unchanged(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let d = digest();
    let mut r = record(Duration::from_secs(60));
    r.description = Some(paylink::domain::Description::parse("Tea for 2 — «special»").unwrap());
    store.create(&d, &r, RETENTION).await.unwrap();
    assert_eq!(store.load(&d).await.unwrap(), Some(r));
    assert_eq!(store.load(&digest()).await.unwrap(), None);
}

async fn a_digest_cannot_be_created_twice(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, r) = open_session(store, Duration::from_secs(60)).await;
    let again = store.create(&d, &r, RETENTION).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
}

async fn exactly_one_of_many_concurrent_claims_wins(t: StoreUnderTest) {
    let (d, _) = open_session(t.store.as_ref(), Duration::from_secs(60)).await;
    let claims = join_all((0..16).map(|_| {
        let store = t.store.clone();
        async move { store.begin_payment(&d, LEASE, claim()).await.unwrap() }
    }))
    .await;
    let won = claims
        .iter()
        .filter(|c| matches!(c, BeginPayment::Claimed(_)))
        .count();
    let busy = claims
        .iter()
        .filter(|c| matches!(c, BeginPayment::InProgress(_)))
        .count();
    assert_eq!((won, busy), (1, 15));
}

async fn a_completed_payment_ends_the_session_for_good(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    let paid_at = now_ms();
    let paid = store
        .complete_payment(&d, &merchant("acme"), paid_at, "4242", RETENTION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paid.stored_status, SessionStatus::Paid);
    assert_eq!(paid.paid_at_ms, Some(paid_at));
    assert_eq!(paid.card_last4.as_deref(), Some("4242"));
    assert_eq!(store.load(&d).await.unwrap(), Some(paid.clone()));
    // Nothing makes it payable again: not a release, not another claim.
    assert!(!store.abandon_payment(&d, *CLAIM).await.unwrap());
    match store.begin_payment(&d, LEASE, *CLAIM).await.unwrap() {
        BeginPayment::NotOpen(Some(r)) => assert_eq!(r.stored_status, SessionStatus::Paid),
        other => panic!("{other:?}"),
    }
    match store
        .revoke(&d, &merchant("acme"), now_ms(), RETENTION)
        .await
        .unwrap()
    {
        Revocation::NotOpen(r) => assert_eq!(r.stored_status, SessionStatus::Paid),
        other => panic!("{other:?}"),
    }
}

async fn an_abandoned_payment_leaves_the_link_payable(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::InProgress(_)
    ));
    assert!(store.abandon_payment(&d, *CLAIM).await.unwrap());
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
}

async fn a_claim_does_not_lapse_while_the_session_lives(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    let short = Duration::from_millis(200);
    assert!(matches!(
        store.begin_payment(&d, short, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    // Long past the lease: an approval that could not be recorded must not reopen the link.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        store.begin_payment(&d, short, *CLAIM).await.unwrap(),
        BeginPayment::InProgress(_)
    ));
    assert!(matches!(
        store
            .revoke(&d, &merchant("acme"), now_ms(), RETENTION)
            .await
            .unwrap(),
        Revocation::PaymentInProgress(_)
    ));
    // Only an explicit release frees it.
    assert!(store.abandon_payment(&d, *CLAIM).await.unwrap());
    assert!(matches!(
        store.begin_payment(&d, short, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
}

async fn a_claim_is_released_only_by_its_own_id(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    let (first, second) = (claim(), claim());
    // Releasing a claim nobody took (its outcome was unknown and it never landed) is a no-op.
    assert!(!store.abandon_payment(&d, first).await.unwrap());
    assert!(matches!(
        store.begin_payment(&d, LEASE, second).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    // A late release of an earlier attempt must not open the link under a live claim.
    assert!(!store.abandon_payment(&d, first).await.unwrap());
    assert!(matches!(
        store.begin_payment(&d, LEASE, first).await.unwrap(),
        BeginPayment::InProgress(_)
    ));
    // Nor does an earlier attempt's decline: it is counted, the claim stays.
    let lockout = Lockout {
        max_failures: 5,
        duration: Duration::from_secs(60),
    };
    assert_eq!(
        store.decline_payment(&d, first, lockout).await.unwrap(),
        None
    );
    assert!(matches!(
        store.begin_payment(&d, LEASE, first).await.unwrap(),
        BeginPayment::InProgress(_)
    ));
    assert!(store.abandon_payment(&d, second).await.unwrap());
    assert!(!store.abandon_payment(&d, second).await.unwrap());
    assert!(matches!(
        store.begin_payment(&d, LEASE, first).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    // The earlier decline was counted: four more lock the link.
    for _ in 0..3 {
        assert_eq!(
            store.decline_payment(&d, first, lockout).await.unwrap(),
            None
        );
        store.begin_payment(&d, LEASE, first).await.unwrap();
    }
    assert!(
        store
            .decline_payment(&d, first, lockout)
            .await
            .unwrap()
            .is_some()
    );
}

async fn only_the_owner_can_revoke_and_only_once(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    let now = now_ms();
    assert!(matches!(
        store
            .revoke(&d, &merchant("globex"), now, RETENTION)
            .await
            .unwrap(),
        Revocation::NotFound
    ));
    assert!(matches!(
        store
            .revoke(&digest(), &merchant("acme"), now, RETENTION)
            .await
            .unwrap(),
        Revocation::NotFound
    ));
    match store
        .revoke(&d, &merchant("acme"), now, RETENTION)
        .await
        .unwrap()
    {
        Revocation::Revoked(r) => {
            assert_eq!(r.stored_status, SessionStatus::Revoked);
            assert_eq!(r.revoked_at_ms, Some(now));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .revoke(&d, &merchant("acme"), now, RETENTION)
            .await
            .unwrap(),
        Revocation::NotOpen(_)
    ));
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::NotOpen(Some(_))
    ));
}

async fn a_payment_in_flight_cannot_be_revoked(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    assert!(matches!(
        store
            .revoke(&d, &merchant("acme"), now_ms(), RETENTION)
            .await
            .unwrap(),
        Revocation::PaymentInProgress(_)
    ));
    let paid = store
        .complete_payment(&d, &merchant("acme"), now_ms(), "4242", RETENTION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paid.stored_status, SessionStatus::Paid);
}

async fn a_session_expires_on_time_and_is_reported_once(mut t: StoreUnderTest) {
    let store = t.store.clone();
    let (d, _) = open_session(store.as_ref(), Duration::from_millis(1000)).await;
    assert!(matches!(
        store
            .begin_payment(&d, Duration::from_millis(1), *CLAIM)
            .await
            .unwrap(),
        BeginPayment::Claimed(_)
    ));
    assert!(store.abandon_payment(&d, *CLAIM).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::NotOpen(Some(_))
    ));
    let loaded = store.load(&d).await.unwrap().unwrap();
    assert_eq!(loaded.status_at(now_ms()), SessionStatus::Expired);
    // However many callers notice the expiry, it is reported exactly once.
    let marks = join_all((0..8).map(|_| {
        let store = store.clone();
        async move { store.mark_expired(&d).await.unwrap() }
    }))
    .await;
    let mut reports = marks.iter().filter(|m| m.is_some()).count();
    while let Ok(reported) = t.expired.try_recv() {
        assert_eq!(reported.digest, d);
        reports += 1;
    }
    assert_eq!(reports, 1);
    assert_eq!(
        store.load(&d).await.unwrap().unwrap().stored_status,
        SessionStatus::Expired
    );
}

async fn reads_do_not_extend_the_expiry(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_millis(900)).await;
    for _ in 0..6 {
        store.load(&d).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::NotOpen(_)
    ));
}

async fn outcome_records_are_forgotten_after_retention(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    store
        .revoke(&d, &merchant("acme"), now_ms(), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(store.load(&d).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load(&d).await.unwrap(), None);
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::NotOpen(None)
    ));
}

async fn rate_limit_counters_count_per_key_and_reset(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let window = Duration::from_millis(500);
    for expected in 1..=3 {
        let hit = store.hit_rate_limit("test:a", window).await.unwrap();
        assert_eq!(hit.count, expected);
        assert!(hit.resets_in <= window && hit.resets_in > Duration::ZERO);
    }
    assert_eq!(
        store.hit_rate_limit("test:b", window).await.unwrap().count,
        1
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        store.hit_rate_limit("test:a", window).await.unwrap().count,
        1
    );
}

async fn a_counted_load_counts_like_a_hit_and_reads_like_a_load(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let window = Duration::from_secs(60);
    let (d, r) = open_session(store, Duration::from_secs(60)).await;
    assert_eq!(
        store.hit_rate_limit("view:a", window).await.unwrap().count,
        1
    );
    let (hit, record) = store
        .hit_rate_limit_and_load("view:a", window, &d)
        .await
        .unwrap();
    let hit = hit.expect("counted");
    assert_eq!(hit.count, 2);
    assert!(hit.resets_in <= window && hit.resets_in > Duration::ZERO);
    assert_eq!(record, Some(r));
    // An unknown digest is counted all the same, and reads as nothing.
    let (hit, record) = store
        .hit_rate_limit_and_load("view:a", window, &digest())
        .await
        .unwrap();
    assert_eq!(hit.map(|h| h.count), Some(3));
    assert_eq!(record, None);
    assert_eq!(
        store.hit_rate_limit("view:a", window).await.unwrap().count,
        4
    );
    // Ended sessions read back as they are.
    store
        .revoke(&d, &merchant("acme"), now_ms(), RETENTION)
        .await
        .unwrap();
    let (_, record) = store
        .hit_rate_limit_and_load("view:b", window, &d)
        .await
        .unwrap();
    assert_eq!(record, store.load(&d).await.unwrap());
    assert_eq!(record.unwrap().stored_status, SessionStatus::Revoked);
}

async fn a_limited_create_creates_within_the_limit_and_nothing_over_it(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let window = Duration::from_secs(60);
    let limit = RateLimit {
        key: "api:acme",
        window,
        max: 2,
    };
    for _ in 0..2 {
        let (d, r) = (digest(), record(Duration::from_secs(60)));
        let created = store.create_limited(limit, &d, &r, RETENTION).await;
        assert!(matches!(created, Ok(Limited::Ran(()))), "{created:?}");
        assert_eq!(store.load(&d).await.unwrap(), Some(r));
    }
    let (d, r) = (digest(), record(Duration::from_secs(60)));
    match store
        .create_limited(limit, &d, &r, RETENTION)
        .await
        .unwrap()
    {
        Limited::Over(hit) => {
            assert_eq!(hit.count, 3);
            assert!(hit.resets_in <= window && hit.resets_in > Duration::ZERO);
        }
        other => panic!("over the limit: {other:?}"),
    }
    assert_eq!(
        store.load(&d).await.unwrap(),
        None,
        "nothing created over the limit"
    );
    // The step's own answers come through, and the counter is the one hits count on.
    let created = store
        .create_limited(RateLimit { max: 10, ..limit }, &d, &r, RETENTION)
        .await;
    assert!(matches!(created, Ok(Limited::Ran(()))), "{created:?}");
    let again = store
        .create_limited(RateLimit { max: 10, ..limit }, &d, &r, RETENTION)
        .await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    assert_eq!(
        store
            .hit_rate_limit("api:acme", window)
            .await
            .unwrap()
            .count,
        6
    );
}

async fn a_limited_claim_claims_within_the_limit_and_not_over_it(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let limit = RateLimit {
        key: "pay:127.0.0.1",
        window: Duration::from_secs(60),
        max: 1,
    };
    let (first, _) = open_session(store, Duration::from_secs(60)).await;
    let (second, r) = open_session(store, Duration::from_secs(60)).await;
    let begun = store
        .begin_payment_limited(limit, &first, LEASE, claim())
        .await;
    assert!(
        matches!(begun, Ok(Limited::Ran(BeginPayment::Claimed(_)))),
        "{begun:?}"
    );
    match store
        .begin_payment_limited(limit, &second, LEASE, claim())
        .await
    {
        Ok(Limited::Over(hit)) => assert_eq!(hit.count, 2),
        other => panic!("claimed over the limit: {other:?}"),
    }
    // Over the limit the link was left alone: anyone else may claim it.
    match store.begin_payment(&second, LEASE, *CLAIM).await.unwrap() {
        BeginPayment::Claimed(claimed) => assert_eq!(claimed, r),
        other => panic!("{other:?}"),
    }
    // Within the limit the claim answers as `begin_payment` does.
    let roomy = RateLimit { max: 10, ..limit };
    let begun = store
        .begin_payment_limited(roomy, &second, LEASE, claim())
        .await;
    assert!(
        matches!(begun, Ok(Limited::Ran(BeginPayment::InProgress(_)))),
        "{begun:?}"
    );
    let begun = store
        .begin_payment_limited(roomy, &digest(), LEASE, claim())
        .await;
    assert!(
        matches!(begun, Ok(Limited::Ran(BeginPayment::NotOpen(None)))),
        "{begun:?}"
    );
}

async fn a_limited_revoke_revokes_within_the_limit_and_nothing_over_it(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let limit = RateLimit {
        key: "api:acme",
        window: Duration::from_secs(60),
        max: 1,
    };
    let acme = merchant("acme");
    let (first, _) = open_session(store, Duration::from_secs(60)).await;
    let (second, _) = open_session(store, Duration::from_secs(60)).await;
    let revoked = store
        .revoke_limited(limit, &first, &acme, now_ms(), RETENTION)
        .await;
    assert!(
        matches!(revoked, Ok(Limited::Ran(Revocation::Revoked(_)))),
        "{revoked:?}"
    );
    match store
        .revoke_limited(limit, &second, &acme, now_ms(), RETENTION)
        .await
    {
        Ok(Limited::Over(hit)) => assert_eq!(hit.count, 2),
        other => panic!("revoked over the limit: {other:?}"),
    }
    let second_now = store.load(&second).await.unwrap().unwrap();
    assert_eq!(second_now.stored_status, SessionStatus::Open, "left alone");
    // Within the limit the answers are `revoke`'s.
    let roomy = RateLimit { max: 10, ..limit };
    let again = store
        .revoke_limited(roomy, &first, &acme, now_ms(), RETENTION)
        .await;
    assert!(
        matches!(again, Ok(Limited::Ran(Revocation::NotOpen(_)))),
        "{again:?}"
    );
    let other = store
        .revoke_limited(roomy, &second, &merchant("globex"), now_ms(), RETENTION)
        .await;
    assert!(
        matches!(other, Ok(Limited::Ran(Revocation::NotFound))),
        "{other:?}"
    );
}

async fn active_sessions_count_open_links_only_and_follow_expiry_unasked(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (acme, globex) = (merchant("acme"), merchant("globex"));
    let both = [acme.clone(), globex.clone(), merchant("nobody")];
    assert_eq!(store.active_sessions(&both).await.unwrap(), [0, 0, 0]);
    let mut long = Vec::new();
    for _ in 0..4 {
        long.push(open_session(store, Duration::from_secs(60)).await.0);
    }
    for _ in 0..2 {
        open_session(store, Duration::from_millis(500)).await;
    }
    let d = digest();
    let mut r = record(Duration::from_secs(60));
    r.merchant_id = globex.clone();
    store.create(&d, &r, RETENTION).await.unwrap();
    assert_eq!(store.active_sessions(&both).await.unwrap(), [6, 1, 0]);
    store.begin_payment(&long[0], LEASE, *CLAIM).await.unwrap();
    store
        .complete_payment(&long[0], &acme, now_ms(), "4242", RETENTION)
        .await
        .unwrap();
    store
        .revoke(&long[1], &acme, now_ms(), RETENTION)
        .await
        .unwrap();
    assert_eq!(store.active_sessions(&both).await.unwrap(), [4, 1, 0]);
    // The short ones expire with nobody touching them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.active_sessions(&both).await.unwrap(), [2, 1, 0]);
    // Ending a session twice does not count it twice.
    store
        .revoke(&long[1], &acme, now_ms(), RETENTION)
        .await
        .unwrap();
    store
        .complete_payment(&long[0], &acme, now_ms(), "4242", RETENTION)
        .await
        .unwrap();
    assert_eq!(store.active_sessions(&both).await.unwrap(), [2, 1, 0]);
}

async fn repeated_declines_lock_payments_until_the_lock_ends(t: StoreUnderTest) {
    let store = t.store.as_ref();
    let (d, _) = open_session(store, Duration::from_secs(60)).await;
    let lockout = Lockout {
        max_failures: 2,
        duration: Duration::from_millis(500),
    };
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    assert_eq!(
        store.decline_payment(&d, *CLAIM, lockout).await.unwrap(),
        None
    );
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    let until = store
        .decline_payment(&d, *CLAIM, lockout)
        .await
        .unwrap()
        .expect("locked");
    assert!(until > now_ms());
    assert!(
        matches!(store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(), BeginPayment::Locked { until_ms } if until_ms == until)
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
        BeginPayment::Claimed(_)
    ));
    // With the lock off, declines only release the link.
    let off = Lockout {
        max_failures: 0,
        duration: Duration::from_secs(60),
    };
    for _ in 0..5 {
        assert_eq!(store.decline_payment(&d, *CLAIM, off).await.unwrap(), None);
        assert!(matches!(
            store.begin_payment(&d, LEASE, *CLAIM).await.unwrap(),
            BeginPayment::Claimed(_)
        ));
    }
}

async fn the_store_answers_a_ping(t: StoreUnderTest) {
    t.store.ping().await.unwrap();
}

conformance!(
    a_created_session_loads_back_unchanged,
    a_digest_cannot_be_created_twice,
    exactly_one_of_many_concurrent_claims_wins,
    a_completed_payment_ends_the_session_for_good,
    an_abandoned_payment_leaves_the_link_payable,
    a_claim_does_not_lapse_while_the_session_lives,
    a_claim_is_released_only_by_its_own_id,
    only_the_owner_can_revoke_and_only_once,
    a_payment_in_flight_cannot_be_revoked,
    a_session_expires_on_time_and_is_reported_once,
    reads_do_not_extend_the_expiry,
    outcome_records_are_forgotten_after_retention,
    rate_limit_counters_count_per_key_and_reset,
    a_counted_load_counts_like_a_hit_and_reads_like_a_load,
    a_limited_create_creates_within_the_limit_and_nothing_over_it,
    a_limited_claim_claims_within_the_limit_and_not_over_it,
    a_limited_revoke_revokes_within_the_limit_and_nothing_over_it,
    active_sessions_count_open_links_only_and_follow_expiry_unasked,
    repeated_declines_lock_payments_until_the_lock_ends,
    the_store_answers_a_ping,
);

#[tokio::test]
async fn the_embedded_store_frees_memory_without_requests() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let store = MemoryStore::start(tx);
    // Enough random digests that every part of the store (by the digest's first byte)
    // holds some: a sweeper that skipped one would leave sessions behind.
    for _ in 0..400 {
        let r = record(Duration::from_millis(300));
        store
            .create(&digest(), &r, Duration::from_millis(200))
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 400);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(store.is_empty(), "{} sessions still held", store.len());
}
