//! Assembles the whole application in one place: store, merchants, processor, routes.
//! Only this file knows which store backend is live.

use crate::config::Settings;
use crate::error::{ApiError, PageError};
use crate::lifecycle::{Lifecycle, LifecycleEvent};
use crate::merchants::{DEMO_API_KEY, Merchants, MerchantsError};
use crate::metrics::{Metrics, TimedStore};
use crate::payments::{PaymentProcessor, TestProcessor};
use crate::routes::{admin, assets, health, merchant_api, openapi, pay};
use crate::session::{
    ExpiredSession, LazyClusterConnection, MemoryStore, RedisStore, SessionStore, connect_redis,
    spawn_cluster_expiry_watcher, spawn_expiry_catch_up, spawn_expiry_watcher,
};
use crate::telemetry::{RedactedRootSpan, route_pattern};
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{
    App, Error, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError, web,
};
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing_actix_web::{RequestId, TracingLogger};

/// Everything a request handler may use.
pub struct AppState {
    pub store: Arc<dyn SessionStore>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    pub merchants: Arc<Merchants>,
    pub processor: Arc<dyn PaymentProcessor>,
    pub settings: Arc<Settings>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Merchants(#[from] MerchantsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the Redis connection: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("REDIS_URL names no cluster nodes")]
    NoClusterNodes,
}

pub struct Application {
    port: u16,
    server: Server,
    store: Arc<dyn SessionStore>,
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

impl Application {
    /// Builds with the contract's test processor.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, Arc::new(TestProcessor::default())).await
    }

    /// Binds `settings.addr` (port 0 picks a free port), connects the store and wires every
    /// route. Serving starts with [`Application::run_until_stopped`].
    pub async fn build_with(
        settings: Settings,
        processor: Arc<dyn PaymentProcessor>,
    ) -> Result<Self, StartupError> {
        let merchants = load_merchants(&settings)?;
        let metrics = Arc::new(Metrics::new());
        let lifecycle = Arc::new(Lifecycle::new(metrics.clone()));
        let (expired_tx, expired_rx) = mpsc::unbounded_channel();
        let store: Arc<dyn SessionStore> = Arc::new(TimedStore::new(
            build_store(&settings, &merchants, expired_tx).await?,
            metrics.clone(),
        ));
        tokio::spawn(log_expiries(expired_rx, lifecycle.clone()));

        let listener = TcpListener::bind(settings.addr).map_err(|source| StartupError::Bind {
            addr: settings.addr,
            source,
        })?;
        let bind_error = |source| StartupError::Bind {
            addr: settings.addr,
            source,
        };
        let port = listener.local_addr().map_err(bind_error)?.port();
        let admin_enabled = settings.admin_token.is_some();
        let state = web::Data::new(AppState {
            store: store.clone(),
            lifecycle,
            metrics: metrics.clone(),
            merchants: Arc::new(merchants),
            processor,
            settings: Arc::new(settings.clone()),
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(security_headers))
                .wrap(from_fn(track_latency))
                .wrap(TracingLogger::<RedactedRootSpan>::new())
                .app_data(state.clone())
                .service(readable("/healthz", health::healthz))
                .service(readable("/readyz", health::readyz))
                .service(readable("/favicon.ico", HttpResponse::NoContent))
                .service(readable("/api/v1/openapi.json", openapi::spec))
                // The payer's pages, routed by `pay::route` itself (see there why).
                .service(web::scope("/pay").default_service(web::to(pay::route)))
                .service(
                    web::resource("/api/v1/sessions")
                        .route(web::post().to(merchant_api::create))
                        .default_service(web::to(merchant_api::method_not_allowed_on_collection)),
                )
                .service(
                    web::resource("/api/v1/sessions/{token}")
                        .route(web::get().to(merchant_api::read))
                        .route(web::delete().to(merchant_api::revoke))
                        .default_service(web::to(merchant_api::method_not_allowed_on_session)),
                )
                .configure(|cfg| {
                    if admin_enabled {
                        admin::configure(cfg);
                    }
                })
                // Built into the binary (see `assets`).
                .service(web::scope("/static").default_service(web::to(assets::serve)))
                .default_service(web::to(not_found))
        })
        .listen(listener)
        .map_err(bind_error)?
        .run();
        Ok(Application {
            port,
            server,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The live store, for tests that look at it directly.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn load_merchants(settings: &Settings) -> Result<Merchants, StartupError> {
    match Merchants::load(&settings.merchants)? {
        Some(merchants) => {
            tracing::info!(
                count = merchants.all().len(),
                path = %settings.merchants.display(),
                "merchants loaded"
            );
            Ok(merchants)
        }
        None => {
            tracing::warn!(
                path = %settings.merchants.display(),
                merchantId = "demo",
                apiKey = DEMO_API_KEY,
                "no merchants file: serving the demo merchant with a public key. \
                 Development only; create merchants with `paylink merchant add`"
            );
            Ok(Merchants::demo())
        }
    }
}

async fn build_store(
    settings: &Settings,
    merchants: &Merchants,
    expired: mpsc::UnboundedSender<ExpiredSession>,
) -> Result<Arc<dyn SessionStore>, StartupError> {
    let merchant_ids: Vec<_> = merchants.all().iter().map(|m| m.id.clone()).collect();
    let timeout = settings.store_timeout();
    match settings.redis_url.as_deref() {
        None => {
            tracing::info!("session store: embedded (in-process); sessions are lost on restart");
            Ok(Arc::new(MemoryStore::start(expired)))
        }
        Some(url) if url.starts_with("redis+cluster://") => {
            let nodes: Vec<String> = url["redis+cluster://".len()..]
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(StartupError::NoClusterNodes);
            }
            let client = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()?;
            let conn = LazyClusterConnection::connect(client).await;
            let store = RedisStore::new_cluster(conn, timeout)
                .with_wait_replicas(settings.redis_wait_replicas);
            spawn_cluster_expiry_watcher(nodes, store.clone(), expired.clone());
            spawn_expiry_catch_up(store.clone(), merchant_ids, expired);
            tracing::info!("session store: Redis Cluster");
            Ok(Arc::new(store))
        }
        Some(url) => {
            let store =
                connect_redis(url, timeout)?.with_wait_replicas(settings.redis_wait_replicas);
            spawn_expiry_watcher(url, store.clone(), expired.clone());
            spawn_expiry_catch_up(store.clone(), merchant_ids, expired);
            tracing::info!("session store: Redis");
            Ok(Arc::new(store))
        }
    }
}

async fn log_expiries(
    mut expired: mpsc::UnboundedReceiver<ExpiredSession>,
    lifecycle: Arc<Lifecycle>,
) {
    while let Some(session) = expired.recv().await {
        lifecycle.emit(LifecycleEvent::Expired, &session.record, &session.digest);
    }
}

/// Request latency by method, route pattern (never the path: it may hold a token) and status.
async fn track_latency(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = std::time::Instant::now();
    let route = route_pattern(&req);
    let method = req.method().clone();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        metrics
            .http_duration
            .local()
            .with_label_values(&[method_label(&method), &route, response.status().as_str()])
            .observe(start.elapsed().as_secs_f64());
    }
    Ok(response)
}

/// A request's method as a metric label: the standard methods by name, anything else
/// (a client may send any token there) as `OTHER`, so that clients cannot add series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// The security headers of the contract on every response (error pages included), and the
/// request id for correlating with the log.
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req.extensions().get::<RequestId>().map(ToString::to_string);
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    // Only a response that says how it may be kept (an asset) is kept.
    let says_how_kept = headers.contains_key(header::CACHE_CONTROL);
    let mut set = |name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    if !says_how_kept {
        set(header::CACHE_CONTROL, "no-store");
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    Ok(response)
}

/// A resource that is only read: GET, and HEAD, which answers the same without the body
/// (load balancers probe health that way). Any other method gets 405 with
/// `Allow: GET, HEAD`, a JSON error under `/api/` and a page elsewhere.
pub fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(only_get_or_head))
}

async fn only_get_or_head(req: HttpRequest) -> HttpResponse {
    method_not_allowed(&req, "GET, HEAD")
}

/// A 405 naming the methods in `allow`: a JSON error under `/api/`, a page elsewhere.
pub fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> HttpResponse {
    if req.path().starts_with("/api/") {
        ApiError::method_not_allowed(allow).error_response()
    } else {
        PageError::MethodNotAllowed { allow }.error_response()
    }
}

/// Unknown paths: JSON under `/api/`, a page elsewhere.
async fn not_found(req: HttpRequest) -> HttpResponse {
    if req.path().starts_with("/api/") {
        ApiError::route_not_found().error_response()
    } else {
        PageError::NotFound.error_response()
    }
}
