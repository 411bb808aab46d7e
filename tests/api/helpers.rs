//! Test harness: `spawn_app(backend)` starts paylink on a free port with its own store;
//! `RedisServer` runs a real `redis-server` on a free loopback port for one test.

use paylink::config::Settings;
use paylink::merchants::api_key_digest;
use paylink::payments::{
    ChargeOutcome, ChargeRequest, PaymentProcessor, ProcessorError, TestProcessor,
};
use paylink::startup::Application;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ACME_KEY: &str = "sk_test_acme_0123456789abcdef";
pub const GLOBEX_KEY: &str = "sk_test_globex_0123456789abcdef";
/// The display name has markup in it, so pages must escape it.
pub const ACME_NAME: &str = "Acme <Tickets> & \"Co\"";

/// The store behind the app under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    Cluster,
}

/// Runs one async test body against every backend, as `#[tokio::test]`s named after it.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded_store() {
                    super::$name($crate::helpers::Backend::Memory).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name($crate::helpers::Backend::Redis).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis_cluster() {
                    super::$name($crate::helpers::Backend::Cluster).await
                }
            }
        )*
    };
}

/// A free loopback port for a `redis-server`, from 10000–19999: below the kernel's ephemeral
/// range (32768 and up on Linux), so that no outgoing connection of a parallel test can
/// take it between this check and the server's bind, and with its cluster-bus port (+10000)
/// free and out of that range too. Successive calls try different ports.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        // 97 is coprime with 10000: the candidates run through every port of the range.
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(97));
        let port = 10_000 + u16::try_from(n % 10_000).expect("below 10000");
        if [port, port + 10_000]
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return port;
        }
    }
}

/// A real `redis-server` of this test's own, on a free loopback port. Killed on drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<Child>>,
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. AOF settings). A server that exits at
    /// once (its port taken after all) is started again on another port.
    pub fn start_with(extra_args: &[&str]) -> Self {
        for _ in 0..5 {
            let server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().expect("a temp dir for redis"),
                child: std::sync::Mutex::new(None),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            };
            *server.child.lock().unwrap() = Some(server.spawn_process());
            if server.answers_ping() {
                return server;
            }
        }
        panic!("redis-server exited at start on 5 ports in a row")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and directory.
    pub fn restart(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "redis-server is already running");
        *child = Some(self.spawn_process());
        drop(child);
        self.wait_for_ping();
    }

    /// Starts the server again after its process died outside the harness's control
    /// (e.g. `kill -9` by a test), on the same port and directory.
    pub fn respawn_after_crash(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(mut old) = child.take() {
            let _ = old.wait();
        }
        *child = Some(self.spawn_process());
        drop(child);
        self.wait_for_ping();
    }

    fn spawn_process(&self) -> Child {
        Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). Install it with \
                     `apt-get install -y redis-server`, or run ./scripts/test, which does."
                )
            })
    }

    fn wait_for_ping(&self) {
        assert!(self.answers_ping(), "redis-server exited at start");
    }

    /// Waits until the server answers PING (true) or its process has exited (false).
    fn answers_ping(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.cli(&["PING"]).trim() == "PONG" {
                return true;
            }
            let exited = match self.child.lock().unwrap().as_mut() {
                Some(child) => child.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if exited {
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// Stops the server the hard way (SIGKILL).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-raw"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key with everything it holds, as text: what an attacker with a dump would see.
    pub fn dump_everything(&self) -> String {
        let keys = self.cli(&["--raw", "KEYS", "*"]);
        let mut dump = String::new();
        for key in keys.lines().filter(|k| !k.is_empty()) {
            dump.push_str(key);
            dump.push('\n');
            let kind = self.cli(&["--raw", "TYPE", key]);
            let value = match kind.trim() {
                "hash" => self.cli(&["--raw", "HGETALL", key]),
                "string" => self.cli(&["--raw", "GET", key]),
                "zset" => self.cli(&["--raw", "ZRANGE", key, "0", "-1", "WITHSCORES"]),
                "set" => self.cli(&["--raw", "SMEMBERS", key]),
                "list" => self.cli(&["--raw", "LRANGE", key, "0", "-1"]),
                other => format!("<{other}>"),
            };
            dump.push_str(&value);
        }
        dump
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster on loopback: `masters` masters with `replicas` replicas each, made
/// with `redis-cli --cluster create`. Every node is killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1500",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        if replicas > 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !cluster.nodes.iter().all(|n| {
                let info = n.cli(&["INFO", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
                    || info.contains(&format!("connected_slaves:{replicas}"))
            }) {
                assert!(Instant::now() < deadline, "replicas did not sync");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// Waits until every live node says the cluster is ok and agrees on all 16384 slots.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://` with every master's address.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Every key and value of every node, as text.
    pub fn dump_everything(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::dump_everything)
            .collect()
    }
}

/// Something a test runs at the moment the processor is asked to charge (e.g. pausing Redis).
pub type ChargeHook = Box<dyn Fn() + Send + Sync>;

/// The contract's test processor, optionally slowed down or with a hook run before each
/// charge, so a test can act while a payment is in flight.
pub struct HookedProcessor {
    pub inner: TestProcessor,
    pub delay: Option<Duration>,
    pub before_charge: Option<ChargeHook>,
}

#[async_trait::async_trait]
impl PaymentProcessor for HookedProcessor {
    async fn charge(&self, request: ChargeRequest<'_>) -> Result<ChargeOutcome, ProcessorError> {
        if let Some(hook) = &self.before_charge {
            hook();
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.inner.charge(request).await
    }
}

/// How a test wants its app.
pub struct AppOptions {
    pub backend: Backend,
    pub pay_rate_limit: u64,
    pub api_rate_limit: u64,
    pub retention_seconds: u64,
    pub store_timeout_ms: u64,
    pub processor_delay: Option<Duration>,
    pub before_charge: Option<ChargeHook>,
    pub redis: Option<RedisServer>,
    pub admin_token: Option<String>,
    pub cluster: Option<RedisCluster>,
    pub wait_replicas: u32,
    pub pay_max_declines: u32,
    pub pay_lockout_seconds: u64,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `REDIS_URL` as given, instead of the one of `redis` or `cluster` (which still run).
    pub redis_url: Option<String>,
}

impl AppOptions {
    pub fn new(backend: Backend) -> Self {
        AppOptions {
            backend,
            pay_rate_limit: 0,
            api_rate_limit: 0,
            retention_seconds: 86_400,
            store_timeout_ms: 1000,
            processor_delay: None,
            before_charge: None,
            redis: None,
            admin_token: None,
            cluster: None,
            wait_replicas: 0,
            pay_max_declines: 0,
            pay_lockout_seconds: 900,
            trusted_proxies: Vec::new(),
            redis_url: None,
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub processor: Arc<HookedProcessor>,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    _merchants_dir: tempfile::TempDir,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(AppOptions::new(backend)).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let merchants_dir = tempfile::tempdir().unwrap();
    let merchants_path = write_merchants(merchants_dir.path());

    let redis = match (options.backend, options.redis) {
        (Backend::Redis, Some(server)) => Some(server),
        (Backend::Redis, None) => Some(RedisServer::start()),
        (Backend::Memory | Backend::Cluster, _) => None,
    };

    let cluster = match (options.backend, options.cluster) {
        (Backend::Cluster, Some(cluster)) => Some(cluster),
        (Backend::Cluster, None) => Some(RedisCluster::start(3, 0)),
        _ => None,
    };

    let mut settings = Settings::for_tests();
    settings.merchants = merchants_path;
    settings.min_ttl_seconds = 1;
    settings.pay_rate_limit_per_minute = options.pay_rate_limit;
    settings.api_rate_limit_per_minute = options.api_rate_limit;
    settings.record_retention_seconds = options.retention_seconds;
    settings.store_timeout_ms = options.store_timeout_ms;
    settings.redis_url = options.redis_url.or_else(|| {
        redis
            .as_ref()
            .map(RedisServer::url)
            .or_else(|| cluster.as_ref().map(RedisCluster::url))
    });
    settings.admin_token = options.admin_token;
    settings.redis_wait_replicas = options.wait_replicas;
    settings.pay_max_declines = options.pay_max_declines;
    settings.pay_lockout_seconds = options.pay_lockout_seconds;
    settings.trusted_proxies = options.trusted_proxies;
    let settings = settings.validate().expect("valid test settings");

    let processor = Arc::new(HookedProcessor {
        inner: TestProcessor::default(),
        delay: options.processor_delay,
        before_charge: options.before_charge,
    });
    let app = Application::build_with(settings, processor.clone())
        .await
        .expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        processor,
        redis,
        cluster,
        _merchants_dir: merchants_dir,
    }
}

/// Writes the test merchants file (acme and globex) into `dir`.
pub fn write_merchants(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("merchants.toml");
    std::fs::write(
        &path,
        format!(
            "[[merchant]]\nid = \"acme\"\nname = {}\napi_key_sha256 = \"{}\"\n\n\
             [[merchant]]\nid = \"globex\"\nname = \"Globex\"\napi_key_sha256 = \"{}\"\n",
            toml_string(ACME_NAME),
            api_key_digest(ACME_KEY),
            api_key_digest(GLOBEX_KEY)
        ),
    )
    .unwrap();
    path
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A created session as the API returned it.
#[derive(Debug, Clone)]
pub struct Created {
    pub token: String,
    pub body: Value,
}

/// A response read whole, so assertions can look at everything.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap_or_default(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn valid_card() -> Vec<(&'static str, String)> {
    card("4242 4242 4242 4242")
}

pub fn card(number: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cardholderName", "Ada Lovelace".to_owned()),
        ("cardNumber", number.to_owned()),
        ("expiry", "12/39".to_owned()),
        ("cvc", "123".to_owned()),
    ]
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// POST /api/v1/sessions with an arbitrary body as acme.
    pub async fn post_session(&self, body: &Value) -> Reply {
        self.post_session_as(ACME_KEY, body).await
    }

    pub async fn post_session_as(&self, key: &str, body: &Value) -> Reply {
        let response = self
            .client
            .post(self.url("/api/v1/sessions"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request sent");
        Reply::read(response).await
    }

    /// Creates an open session for acme and returns its token.
    pub async fn create_session(&self, body: Value) -> Created {
        let reply = self.post_session(&body).await;
        assert_eq!(reply.status, 201, "create failed: {}", reply.text);
        let body = reply.json();
        Created {
            token: body["token"].as_str().unwrap().to_owned(),
            body,
        }
    }

    pub async fn create_default_session(&self) -> Created {
        self.create_session(json!({"orderId": "ord_1", "amount": 1999, "currency": "USD"}))
            .await
    }

    pub async fn get_session(&self, token: &str) -> Reply {
        self.get_session_as(ACME_KEY, token).await
    }

    pub async fn get_session_as(&self, key: &str, token: &str) -> Reply {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/sessions/{token}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent");
        Reply::read(response).await
    }

    pub async fn revoke_session(&self, token: &str) -> Reply {
        self.revoke_session_as(ACME_KEY, token).await
    }

    pub async fn revoke_session_as(&self, key: &str, token: &str) -> Reply {
        let response = self
            .client
            .delete(self.url(&format!("/api/v1/sessions/{token}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent");
        Reply::read(response).await
    }

    pub async fn get_pay_page(&self, token: &str) -> Reply {
        self.get(&format!("/pay/{token}")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        Reply::read(response).await
    }

    pub async fn pay(&self, token: &str, form: &[(&str, String)]) -> Reply {
        let response = self
            .client
            .post(self.url(&format!("/pay/{token}")))
            .form(form)
            .send()
            .await
            .expect("request sent");
        Reply::read(response).await
    }

    /// Approvals the processor gave, whichever processor the app was built with.
    pub fn approvals(&self) -> u64 {
        self.processor.inner.approvals()
    }

    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("this test runs on Redis")
    }

    /// Every key and value the app's Redis (standalone or cluster) holds.
    pub fn dump_store(&self) -> String {
        match (&self.redis, &self.cluster) {
            (Some(redis), _) => redis.dump_everything(),
            (_, Some(cluster)) => cluster.dump_everything(),
            _ => panic!("this test runs on Redis"),
        }
    }

    pub fn cluster_mut(&mut self) -> &mut RedisCluster {
        self.cluster
            .as_mut()
            .expect("this test runs on Redis Cluster")
    }

    pub fn redis_mut(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("this test runs on Redis")
    }
}

/// The real `paylink` binary, run as an operator would, with its stdout captured line by
/// line. Killed on drop.
pub struct BinaryApp {
    pub address: String,
    child: Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl BinaryApp {
    pub fn start(redis_url: Option<String>, extra_env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let merchants = write_merchants(dir.path());
        let mut command = Command::new(env!("CARGO_BIN_EXE_paylink"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PAYLINK_ADDR", "127.0.0.1:0")
            .env("PAYLINK_MERCHANTS", &merchants)
            .env("PAYLINK_MIN_TTL_SECONDS", "1")
            .env("PAYLINK_PAY_RATE_LIMIT_PER_MINUTE", "0")
            .env("PAYLINK_API_RATE_LIMIT_PER_MINUTE", "0")
            .env("PAYLINK_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(url) = redis_url {
            command.env("REDIS_URL", url);
        }
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the paylink binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v.get("port")?.as_u64()
            });
            if let Some(port) = found {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "paylink did not say where it listens"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        BinaryApp {
            address: format!("http://127.0.0.1:{port}"),
            child,
            lines,
            _dir: dir,
        }
    }

    /// Creates a session as acme through the real binary's API; the 201 body.
    pub async fn create_session(&self, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/sessions", self.address))
            .bearer_auth(ACME_KEY)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status().as_u16(), 201, "create failed");
        response.json().await.expect("a JSON body")
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The parsed lifecycle events (lines with an `event` field) so far.
    pub fn events(&self) -> Vec<Value> {
        self.log()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("event").is_some())
            .collect()
    }
}

impl Drop for BinaryApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SHA-256 of the token's text, first 12 hex characters: the contract's `tokenRef`.
pub fn token_ref(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))[..12].to_owned()
}

/// The admin token tests give their apps (`AppOptions::admin_token`).
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// The value of one Prometheus sample, named with its labels exactly as exposed.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

impl TestApp {
    /// Sends `request` as it is on a new connection and reads until the server closes it.
    pub async fn raw_exchange(&self, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("no answer and close within 15 s to {request:.60?}"))
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// `/admin/metrics` as a scraper with [`ADMIN_TOKEN`] sees it.
    pub async fn scrape_metrics(&self) -> String {
        self.client
            .get(self.url("/admin/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .unwrap_or_default()
    }
}

/// Waits until `check` holds, polling; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The headers the contract puts on every HTML response (section 3), on `reply`.
pub fn assert_security_headers(reply: &Reply, what: &str) {
    let csp = reply
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("form-action 'self'"), "{what}: {csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    assert_eq!(
        reply.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
    assert!(
        reply
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{what}"
    );
    assert!(!reply.text.contains("<script>"), "{what}: no inline script");
}
