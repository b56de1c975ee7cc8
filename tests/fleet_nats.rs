//! Fleet transport tests: the NATS JetStream KV bucket that orch hosts share
//! bans through, with the per-host users of `examples/nats-server.conf`, on
//! Debian's nats-server 2.9.10 and a current upstream server, over TLS.
//!
//! These tests exercise the server configuration and async-nats directly;
//! they do not run the orch daemon. Each test runs its servers inside its
//! own network namespace and drives its clients from a thread in that
//! namespace, waits by polling with deadlines, and leaves nothing behind.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context, kv};
use async_nats::{ConnectErrorKind, Event};
use bytes::Bytes;
use common::NetNs;
use common::nats::{
    ADMIN, BUCKET, NatsAuth, NatsCluster, NatsOptions, NatsServer, NatsVersion, SAMPLE_HOSTS,
    block_on_in, render_accounts, sample_accounts_block,
};
use futures_util::StreamExt;

/// How long a denied JetStream request waits for its (never coming) answer.
const DENIED_TIMEOUT: Duration = Duration::from_secs(2);

/// The server errors (`-ERR`) a client received, e.g. permission violations.
#[derive(Clone, Default)]
struct ServerErrors(Arc<Mutex<Vec<String>>>);

impl ServerErrors {
    fn snapshot(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits (polling, with a deadline) for an error containing `needle`.
    async fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.snapshot().iter().any(|e| e.contains(needle)) {
                return;
            }
            tokio::time::sleep(common::POLL_INTERVAL).await;
        }
        panic!(
            "no server error containing {needle:?}; got {:?}",
            self.snapshot()
        );
    }
}

/// Connects as `user`, recording server errors; the JetStream context has a
/// short timeout so denied requests fail fast.
async fn connect(server: &NatsServer, user: &str) -> (async_nats::Client, Context, ServerErrors) {
    connect_with(server.connect_options(user), server.url(), user).await
}

/// [`connect`] from options and URL taken from a server beforehand.
async fn connect_with(
    opts: async_nats::ConnectOptions,
    url: String,
    user: &str,
) -> (async_nats::Client, Context, ServerErrors) {
    let errors = ServerErrors::default();
    let sink = errors.clone();
    let client = opts
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let Event::ServerError(err) = event
                    && let Ok(mut v) = sink.0.lock()
                {
                    v.push(err.to_string());
                }
            }
        })
        .connect(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("connect as {user} to {url}: {e}"));
    let js = jetstream::ContextBuilder::new()
        .timeout(DENIED_TIMEOUT)
        .build(client.clone());
    (client, js, errors)
}

/// The bucket as orch's admin creates it (see [`common::nats::create_bucket`]).
async fn create_bucket(admin: &Context, replicas: usize, ttl: bool) -> kv::Store {
    common::nats::create_bucket(admin, BUCKET, replicas, ttl).await
}

async fn open_bucket(js: &Context, who: &str) -> kv::Store {
    js.get_key_value(BUCKET)
        .await
        .unwrap_or_else(|e| panic!("{who} opens the bucket: {e}"))
}

/// Waits for the next watch entry for `key` (skipping others) with a deadline.
async fn next_entry_for(watch: &mut kv::Watch, key: &str) -> kv::Entry {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(entry) = watch.next().await {
            // Errors such as a missed heartbeat while the server restarts are
            // transient: the watcher re-creates its consumer and goes on.
            match entry {
                Ok(entry) if entry.key == key => return Some(entry),
                Ok(_) => {}
                Err(err) => eprintln!("watch: transient error: {err:?}"),
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(entry)) => entry,
        Ok(None) => panic!("watch ended before an entry for {key}"),
        Err(_) => panic!("no watch entry for {key} within 10s"),
    }
}

fn run(version: NatsVersion, body: impl AsyncFnOnce(&NatsServer) + Send) {
    run_with(NatsOptions::new(version), body);
}

/// [`run`] on a server in operator mode: users log in with `.creds` files.
fn run_in_operator_mode(version: NatsVersion, body: impl AsyncFnOnce(&NatsServer) + Send) {
    let mut opts = NatsOptions::new(version);
    opts.auth = NatsAuth::Operator;
    run_with(opts, body);
}

fn run_with(opts: NatsOptions, body: impl AsyncFnOnce(&NatsServer) + Send) {
    let ns = NetNs::new();
    let server = NatsServer::start(Some(&ns), opts);
    block_on_in(Some(&ns), || body(&server));
}

// ---------------------------------------------------------------------------

#[test]
fn sample_config_has_the_harness_permissions() {
    let sample = include_str!("../examples/nats-server.conf");
    let block = sample_accounts_block(sample).expect("sample has the accounts markers");
    let rendered = render_accounts(BUCKET, &SAMPLE_HOSTS);
    assert_eq!(
        block, rendered,
        "examples/nats-server.conf differs from render_accounts(); expected block:\n{rendered}"
    );
}

async fn own_keys_and_reading(server: &NatsServer) {
    let (_a, admin, _) = connect(server, ADMIN).await;
    create_bucket(&admin, 1, false).await;
    let (_c1, js1, errors1) = connect(server, "srv1").await;
    let (_c2, js2, errors2) = connect(server, "srv2").await;
    let kv1 = open_bucket(&js1, "srv1").await;
    let kv2 = open_bucket(&js2, "srv2").await;

    // srv2 watches the whole bucket with history before srv1 writes.
    let mut watch = kv2.watch_all().await.expect("srv2 watch_all");

    let key = "srv1.192.0.2.7/32";
    let key6 = "srv1.2001_db8__1/128";
    kv1.put(key, Bytes::from_static(b"{\"jail\":\"sshd\"}"))
        .await
        .expect("srv1 puts its own key");
    kv1.put(key6, Bytes::from_static(b"{}"))
        .await
        .expect("srv1 puts its own IPv6 key");

    let seen = next_entry_for(&mut watch, key).await;
    assert_eq!(seen.operation, kv::Operation::Put);
    assert_eq!(&seen.value[..], b"{\"jail\":\"sshd\"}");
    assert_eq!(
        kv2.get(key).await.expect("srv2 get"),
        Some(Bytes::from_static(b"{\"jail\":\"sshd\"}"))
    );
    let entry = kv2.entry(key6).await.expect("srv2 entry").expect("present");
    assert_eq!(entry.operation, kv::Operation::Put);

    // keys() and watch_with_history (what a starting host replays).
    let mut keys: Vec<String> = kv2
        .keys()
        .await
        .expect("srv2 keys")
        .map(|k| k.expect("key"))
        .collect()
        .await;
    keys.sort();
    assert_eq!(keys, vec![key.to_string(), key6.to_string()]);
    let mut history = kv2
        .watch_with_history("srv1.>")
        .await
        .expect("srv2 watch_with_history");
    next_entry_for(&mut history, key).await;

    // srv1 deletes its own key; srv2's watcher sees the delete.
    kv1.delete(key).await.expect("srv1 deletes its own key");
    let seen = next_entry_for(&mut watch, key).await;
    assert_eq!(seen.operation, kv::Operation::Delete);
    assert_eq!(kv2.get(key).await.expect("srv2 get after delete"), None);
    kv1.purge(key6).await.ok(); // rollups are off: see the denial test
    assert!(
        errors1.snapshot().is_empty() && errors2.snapshot().is_empty(),
        "unexpected server errors: {:?} / {:?}",
        errors1.snapshot(),
        errors2.snapshot()
    );
}

#[test]
fn host_writes_own_keys_and_reads_all_debian() {
    run(NatsVersion::Debian, own_keys_and_reading);
}

#[test]
fn host_writes_own_keys_and_reads_all_current() {
    run(NatsVersion::Current, own_keys_and_reading);
}

async fn others_keys_are_protected(server: &NatsServer) {
    let (_a, admin, _) = connect(server, ADMIN).await;
    let admin_kv = create_bucket(&admin, 1, false).await;
    let (_c1, js1, _) = connect(server, "srv1").await;
    let (c2, js2, errors2) = connect(server, "srv2").await;
    let kv1 = open_bucket(&js1, "srv1").await;
    let kv2 = open_bucket(&js2, "srv2").await;
    let key = "srv1.198.51.100.9/32";
    let seq = kv1
        .put(key, Bytes::from_static(b"ban"))
        .await
        .expect("srv1 put");
    let still_there = async |what: &str| {
        assert_eq!(
            kv2.get(key).await.expect("srv2 get"),
            Some(Bytes::from_static(b"ban")),
            "srv1's key is gone after srv2 tried {what}"
        );
    };

    // KV delete and purge: publishes to $KV.orch-bans.srv1.… → denied.
    let err = kv2
        .delete(key)
        .await
        .expect_err("srv2 must not delete srv1's key");
    assert!(err.to_string().contains("timed out"), "delete error: {err}");
    errors2
        .wait_for(&format!(
            "Permissions Violation for Publish to \"$KV.{BUCKET}.{key}\""
        ))
        .await;
    still_there("KV delete").await;
    let err = kv2
        .purge(key)
        .await
        .expect_err("srv2 must not purge srv1's key");
    assert!(err.to_string().contains("timed out"), "purge error: {err}");
    still_there("KV purge").await;
    // Writing someone else's key is denied the same way.
    kv2.put(key, Bytes::from_static(b"forged"))
        .await
        .expect_err("srv2 must not overwrite srv1's key");
    still_there("KV put").await;

    // The JetStream API routes: every one is a publish permission violation.
    let stream = format!("KV_{BUCKET}");
    for (api, body) in [
        (
            format!("STREAM.MSG.DELETE.{stream}"),
            serde_json::json!({ "seq": seq, "no_erase": true }),
        ),
        (
            format!("STREAM.PURGE.{stream}"),
            serde_json::json!({ "filter": format!("$KV.{BUCKET}.srv1.>") }),
        ),
        (format!("STREAM.DELETE.{stream}"), serde_json::json!({})),
        (
            format!("STREAM.UPDATE.{stream}"),
            serde_json::json!({ "name": stream, "subjects": ["$KV.x.>"] }),
        ),
    ] {
        let res: Result<serde_json::Value, _> = js2.request(api.clone(), &body).await;
        let err = res.expect_err(&format!("srv2 must not call $JS.API.{api}"));
        assert!(err.to_string().contains("timed out"), "{api}: {err}");
        errors2
            .wait_for(&format!(
                "Permissions Violation for Publish to \"$JS.API.{api}\""
            ))
            .await;
        still_there(&api).await;
    }

    // A rollup of everything through one of srv2's own keys: the subject is
    // allowed, but the bucket has allow_rollup off.
    let own = format!("$KV.{BUCKET}.srv2.203.0.113.1/32");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "all");
    let err = js2
        .publish_with_headers(own, headers, Bytes::new())
        .await
        .expect("publish sent")
        .await
        .expect_err("a rollup of the whole bucket must be refused");
    assert!(err.to_string().contains("rollup"), "rollup error: {err}");
    still_there("Nats-Rollup: all").await;
    drop(c2);

    // The admin may delete any key.
    admin_kv
        .delete(key)
        .await
        .expect("admin deletes srv1's key");
    assert_eq!(kv1.get(key).await.expect("srv1 get"), None);
}

#[test]
fn host_cannot_delete_others_keys_debian() {
    run(NatsVersion::Debian, others_keys_are_protected);
}

#[test]
fn host_cannot_delete_others_keys_current() {
    run(NatsVersion::Current, others_keys_are_protected);
}

/// The same permissions carried by user JWTs (`.creds` files) instead of
/// the server's `accounts` block.
#[test]
fn host_with_creds_cannot_delete_others_keys_debian() {
    run_in_operator_mode(NatsVersion::Debian, others_keys_are_protected);
}

#[test]
fn host_with_creds_cannot_delete_others_keys_current() {
    run_in_operator_mode(NatsVersion::Current, others_keys_are_protected);
}

async fn bad_credentials(server: &NatsServer) {
    let err = server
        .connect_options_with("srv1", "not-the-password")
        .connect(server.url())
        .await
        .expect_err("a wrong password must be refused");
    assert_eq!(err.kind(), ConnectErrorKind::AuthorizationViolation);
    assert!(
        err.to_string().contains("authorization violation"),
        "error text: {err}"
    );
    // A host cannot create the bucket (only the admin does).
    let (_c, js1, errors) = connect(server, "srv1").await;
    let err = js1
        .create_key_value(kv::Config {
            bucket: BUCKET.into(),
            ..Default::default()
        })
        .await
        .expect_err("a host must not create the bucket");
    assert!(err.to_string().contains("timed out"), "create error: {err}");
    errors.wait_for("Permissions Violation for Publish").await;
}

#[test]
fn wrong_password_is_refused_debian() {
    run(NatsVersion::Debian, bad_credentials);
}

#[test]
fn wrong_password_is_refused_current() {
    run(NatsVersion::Current, bad_credentials);
}

/// Publishes `key` with a `Nats-TTL` header (async-nats' `PublishMessage::ttl`).
async fn put_with_ttl(
    js: &Context,
    key: &str,
    ttl: Duration,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    js.send_publish(
        format!("$KV.{BUCKET}.{key}"),
        jetstream::message::PublishMessage::build()
            .payload(Bytes::from_static(b"ban"))
            .ttl(ttl),
    )
    .await?
    .await
}

#[test]
fn per_key_ttl_expires_current() {
    run(NatsVersion::Current, async |server| {
        let (_a, admin, _) = connect(server, ADMIN).await;
        create_bucket(&admin, 1, true).await;
        let (_c, js1, _) = connect(server, "srv1").await;
        let kv1 = open_bucket(&js1, "srv1").await;
        let mut watch = kv1.watch_all().await.expect("watch_all");
        let key = "srv1.192.0.2.55/32";
        put_with_ttl(&js1, key, Duration::from_secs(1))
            .await
            .expect("put with a 1 s TTL");
        kv1.put("srv1.192.0.2.56/32", Bytes::from_static(b"keep"))
            .await
            .expect("put without TTL");
        assert!(kv1.get(key).await.expect("get").is_some());
        let seen = next_entry_for(&mut watch, key).await;
        assert_eq!(seen.operation, kv::Operation::Put);
        // The server removes it (no marker: orch's bucket has none, since
        // delete markers turn rollups back on).
        let deadline = Instant::now() + Duration::from_secs(10);
        while kv1.get(key).await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "TTL key still there after 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let info = kv1.status().await.expect("status");
        assert!(!info.info.config.allow_rollup, "rollups stay off with TTLs");
        assert!(
            kv1.get("srv1.192.0.2.56/32")
                .await
                .expect("get kept")
                .is_some()
        );
        // create_with_ttl works the same way for a key that does not exist.
        kv1.create_with_ttl("srv1.192.0.2.57/32", "x".into(), Duration::from_secs(1))
            .await
            .expect("create_with_ttl");
        let deadline = Instant::now() + Duration::from_secs(10);
        while kv1.get("srv1.192.0.2.57/32").await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "TTL key still there after 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn per_key_ttl_on_debian_server() {
    run(NatsVersion::Debian, async |server| {
        let (_a, admin, _) = connect(server, ADMIN).await;
        // async-nats 0.51's create_key_value first reads the account info
        // ($JS.API.INFO), whose 2.9 answer lacks fields (reserved_memory,
        // reserved_storage) the client requires: it fails on 2.9 with or
        // without limit_markers, before creating anything. orch creates the
        // bucket's stream with create_stream instead (see create_bucket).
        for limit_markers in [None, Some(Duration::from_secs(60))] {
            let err = admin
                .create_key_value(kv::Config {
                    bucket: "probe".into(),
                    limit_markers,
                    ..Default::default()
                })
                .await
                .expect_err("create_key_value against 2.9");
            assert_eq!(
                err.kind(),
                jetstream::context::CreateKeyValueErrorKind::JetStream,
                "{err:?}"
            );
            assert!(
                format!("{err:?}").contains("did not match any variant"),
                "{err:?}"
            );
        }
        admin
            .query_account()
            .await
            .expect_err("2.9's account info does not parse");
        // A stream config with allow_msg_ttl: 2.9 does not know the field.
        let store = create_bucket_lenient(&admin).await;
        let (_c, js1, _) = connect(server, "srv1").await;
        let key = "srv1.192.0.2.77/32";
        let ack = put_with_ttl(&js1, key, Duration::from_secs(1)).await;
        ack.expect("2.9 accepts a Nats-TTL header (it does not know it)");
        let info = admin
            .get_stream(format!("KV_{BUCKET}"))
            .await
            .expect("stream info");
        assert!(!info.cached_info().config.allow_message_ttl);
        // Still there well past the TTL: the header is ignored. Poll for 3 s.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            assert!(
                store.get(key).await.expect("get").is_some(),
                "2.9 expired a Nats-TTL key"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// On 2.9: creating the bucket stream with `allow_msg_ttl` set; the server
/// ignores the unknown field, so this is the same bucket without TTL.
async fn create_bucket_lenient(admin: &Context) -> kv::Store {
    create_bucket(admin, 1, true).await
}

#[test]
fn replicated_bucket_survives_a_node_current() {
    let ns = NetNs::new();
    let mut cluster = NatsCluster::start(Some(&ns), NatsOptions::new(NatsVersion::Current));
    let key = "gw.192.0.2.99/32";
    block_on_in(Some(&ns), || async {
        let (_a, admin, _) = connect(&cluster.nodes[0], ADMIN).await;
        let store = create_bucket(&admin, 3, false).await;
        assert_eq!(
            store
                .status()
                .await
                .expect("status")
                .info
                .config
                .num_replicas,
            3
        );
        let (_g, jsg, _) = connect(&cluster.nodes[1], "gw").await;
        let gw_store = open_bucket(&jsg, "gw").await;
        // A just-created R3 stream may not be known on every node yet
        // ("stream not found"): retry with a deadline.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match gw_store.put(key, Bytes::from_static(b"ban")).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("gw put not accepted yet: {e:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("gw put: {e:?}"),
            }
        }
    });
    cluster.nodes[0].kill();
    block_on_in(Some(&ns), || async {
        let (_c, js2, _) = connect(&cluster.nodes[2], "srv2").await;
        // The remaining two elect a new leader for the stream first; until
        // then requests time out. Retry with a deadline.
        let deadline = Instant::now() + Duration::from_secs(20);
        let kv2 = loop {
            match js2.get_key_value(BUCKET).await {
                Ok(kv) => break kv,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bucket not open yet with a node down: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("srv2 cannot open the bucket with a node down: {e}"),
            }
        };
        let value = loop {
            match kv2.get(key).await {
                Ok(value) => break value,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("get with a node down failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("get with a node down: {e}"),
            }
        };
        assert_eq!(value, Some(Bytes::from_static(b"ban")));
    });
    cluster.nodes[0].restart();
}

/// After a server restart a host resumes watching from the last revision it
/// saw. (async-nats 0.51's own re-creation is not relied on: when the
/// disconnect and reconnect both happen while the watch is not polled, the
/// watch yields a MissingHeartbeat error and then stays silent, so orch must
/// re-create its watch on errors with `watch_all_from_revision`.)
fn watch_resumes_after_restart(version: NatsVersion) {
    let ns = NetNs::new();
    let server = Mutex::new(NatsServer::start(Some(&ns), NatsOptions::new(version)));
    let lock = || {
        server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    block_on_in(Some(&ns), || async {
        let (opts, url) = {
            let s = lock();
            (
                [ADMIN, "srv1", "srv2"].map(|u| s.connect_options(u)),
                s.url(),
            )
        };
        let [o_admin, o1, o2] = opts;
        let admin = connect_with(o_admin, url.clone(), ADMIN).await;
        let srv1 = connect_with(o1, url.clone(), "srv1").await;
        let srv2 = connect_with(o2, url, "srv2").await;
        create_bucket(&admin.1, 1, false).await;
        let kv1 = open_bucket(&srv1.1, "srv1").await;
        let kv2 = open_bucket(&srv2.1, "srv2").await;
        let mut watch = kv2.watch_all().await.expect("srv2 watch_all");
        kv1.put("srv1.192.0.2.1/32", Bytes::from_static(b"a"))
            .await
            .expect("put before restart");
        next_entry_for(&mut watch, "srv1.192.0.2.1/32").await;
        // Blocks this (single) runtime thread while the server restarts.
        lock().restart();
        // The clients reconnect by themselves; retry the put until it lands.
        let deadline = Instant::now() + Duration::from_secs(15);
        while kv1
            .put("srv1.192.0.2.2/32", Bytes::from_static(b"b"))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "no put after restart within 15 s"
            );
        }
        let last = kv2
            .entry("srv1.192.0.2.1/32")
            .await
            .expect("entry")
            .expect("present");
        drop(watch);
        let mut watch = kv2
            .watch_all_from_revision(last.revision + 1)
            .await
            .expect("srv2 re-creates its watch");
        let seen = next_entry_for(&mut watch, "srv1.192.0.2.2/32").await;
        assert_eq!(&seen.value[..], b"b");
        let errors = srv2.2.snapshot();
        assert!(
            !errors.iter().any(|e| e.contains("Permissions Violation")),
            "srv2's watcher hit a permission: {errors:?}"
        );
    });
}

#[test]
fn watch_resumes_after_server_restart_debian() {
    watch_resumes_after_restart(NatsVersion::Debian);
}

#[test]
fn watch_resumes_after_server_restart_current() {
    watch_resumes_after_restart(NatsVersion::Current);
}
