//! `ferry serve`: runs a flow directory the way OIC runs activated integrations.
//!
//! - [`app`] — the loaded flows, the run history, runs under way, how runs start (one run
//!   of a flow at a time, through a lease in the store).
//! - [`scheduler`] — cron ticks, each claimed by exactly one instance.
//! - [`api`] — REST triggers declared by flows, ferry's JSON API, OIC-compatible paths,
//!   `/healthz`, `/readyz`, `/metrics`; [`auth`] — Basic credentials and roles.
//! - [`ui`] — the monitoring page.
//! - [`reload`] — hot reload of flows, lookups and connections.
//! - [`metrics`] — Prometheus metrics.
//!
//! Several instances may share one PostgreSQL run history: ticks and leases live there, and
//! each instance heartbeats so that the runs of one that died are marked interrupted.

pub mod api;
pub mod app;
pub mod auth;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod reload;
pub mod scheduler;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use app::{App, AppSettings, StartError};
pub use auth::{Role, User, Users};
pub use limits::Limits;

use crate::compile::{Inputs, load_limited};
use crate::history::{HistoryError, Store};

/// How `ferry serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Flows, lookups and connections.
    pub inputs: Inputs,
    /// The data directory: the embedded run history and its kept trigger inputs (with a
    /// PostgreSQL history, which keeps them in the database, this instance's copies).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL for a run history shared by several instances.
    pub database_url: Option<String>,
    /// Where to listen.
    pub listen: SocketAddr,
    /// This instance's id; default: `<host>-<pid>-<random>`.
    pub instance: Option<String>,
    /// How long shutdown waits for runs, twice: before asking them to stop at their next
    /// step, and after.
    pub grace: Duration,
    /// Fire schedules (off: triggers and the API only).
    pub schedules: bool,
    /// Watch the flow directory and reload on change.
    pub watch: bool,
    /// How long a flow lease lasts unrenewed (a crashed instance's flows are free again
    /// after it).
    pub lease_ttl: Duration,
    /// How often this instance heartbeats (default 5 s); an instance silent for
    /// [`STALE_HEARTBEATS`] heartbeats is taken for dead and its runs are marked interrupted.
    pub heartbeat: Duration,
    /// Runs older than this are purged every hour (none: kept until `ferry purge`).
    pub retention: Option<Duration>,
    /// Where runs spool.
    pub spool_dir: Option<PathBuf>,
    /// API users; empty: the API is open (allowed on loopback addresses only).
    pub users: Users,
    /// What a request, a connection and a flow file may cost; allowed hosts.
    pub limits: Limits,
    /// Largest flow, lookup or connections file, in bytes.
    pub max_file_bytes: u64,
}

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The flows do not compile.
    #[error("the flows do not load:\n{0}")]
    Invalid(String),
    /// The run history.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Open API on a public address.
    #[error(
        "no API users are configured (FERRY_OPERATOR_USER / FERRY_OPERATOR_PASSWORD): an open API is only served on a loopback address, not {0}"
    )]
    OpenApi(SocketAddr),
    /// A trigger whose credentials are not set.
    #[error("{0}")]
    TriggerCredentials(String),
    /// The watcher.
    #[error(transparent)]
    Watch(#[from] reload::WatchError),
    /// I/O on the data directory.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct Server {
    /// The app.
    pub app: Arc<App>,
    /// API users.
    pub users: Users,
    incoming: PathBuf,
}

impl Server {
    /// Where deliveries are spooled before they are kept with their run.
    pub fn incoming_dir(&self) -> &std::path::Path {
        &self.incoming
    }
}

/// The whole HTTP surface over `server`, with the default limits.
pub fn router(server: Arc<Server>) -> Router {
    router_with(
        server,
        Arc::new(limits::Guard::new(Limits::default(), None)),
    )
}

/// The whole HTTP surface over `server`: every request passes `guard` (allowed hosts,
/// cross-site requests, the request's time limit), then [`auth::throttle`] (wrong
/// credentials counted, an address that sent too many refused); request bodies that stay
/// silent time out; bodies are read only after
/// the credentials were checked, each route with its limit (the API's JSON bodies
/// `max_json_bytes`, a REST trigger its flow's `max_body_mib`, streamed to disk).
pub fn router_with(server: Arc<Server>, guard: Arc<limits::Guard>) -> Router {
    let idle = guard.limits.body_idle_timeout;
    let json = guard.limits.max_json_bytes;
    api::routes()
        .merge(ui::routes())
        .layer(DefaultBodyLimit::max(json))
        // a trigger reads its body with its flow's own limit (api::deliver)
        .fallback_service(
            axum::routing::any(api::trigger)
                .layer(DefaultBodyLimit::disable())
                .with_state(server.clone()),
        )
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            auth::throttle,
        ))
        .layer(axum::middleware::from_fn_with_state(guard, limits::guard))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(idle))
        .with_state(server)
}

/// A default instance id: host, process id and a random suffix.
pub fn default_instance_id() -> String {
    let host = host_name();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{}-{suffix}", std::process::id())
}

use crate::history::host_name;

/// An instance whose heartbeat is this many intervals old is taken for dead (30 s at the
/// default 5 s interval); one on the same machine as soon as its process is gone.
pub use crate::history::STALE_HEARTBEATS;

/// Serves until `shutdown` resolves, then shuts down gracefully. `ready` is told the bound
/// address once the server listens.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr) + Send,
) -> Result<(), ServeError> {
    if opts.users.is_empty() && !opts.listen.ip().is_loopback() {
        return Err(ServeError::OpenApi(opts.listen));
    }
    // before the load: a change made from here on is one the watcher reloads
    let loaded = opts.watch.then(|| reload::baseline(&opts.inputs));
    let (project, diags) = load_limited(&opts.inputs, opts.max_file_bytes);
    let Some(project) = project else {
        // the loader hid what outside files hold
        let text: Vec<String> = diags.iter().map(crate::diag::Diagnostic::render).collect();
        return Err(ServeError::Invalid(text.join("")));
    };
    let unset = reload::unset_trigger_credentials(&project);
    if !unset.is_empty() {
        return Err(ServeError::TriggerCredentials(unset.join("\n")));
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| ServeError::Io {
        path: opts.data_dir.clone(),
        source,
    })?;
    let store = match &opts.database_url {
        Some(url) => Store::open_postgres(url, &opts.data_dir).await?,
        None => Store::open_sqlite(&opts.data_dir).await?,
    };
    let instance = opts.instance.clone().unwrap_or_else(default_instance_id);
    // a new incarnation of the instance: the runs of an earlier one are interrupted now
    let store = store.register(&instance, opts.heartbeat).await?;
    if opts.database_url.is_none() {
        // runs begun by a ferry that recorded no owner
        let n = store.mark_ownerless_runs().await?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                "runs left running by an earlier ferry are recorded as interrupted"
            );
        }
    }
    if let Err(e) = store.sweep_spool().await {
        tracing::warn!(error = %e, "cannot sweep the spool");
    }
    // this process's copies of inputs kept in the database: made again when needed
    if let Err(e) = store.sweep_input_copies().await {
        tracing::warn!(error = %e, "cannot sweep the copies of kept inputs");
    }
    // the kept files of deliveries a killed ferry never recorded (idle as long as the
    // staging folders swept below)
    if let Err(e) = store
        .sweep_orphan_inputs(crate::connectors::sweep::DEFAULT_TEMP_MAX_AGE)
        .await
    {
        tracing::warn!(error = %e, "cannot sweep the kept inputs of unrecorded runs");
    }
    let incoming = opts.data_dir.join("incoming");
    std::fs::create_dir_all(&incoming).map_err(|source| ServeError::Io {
        path: incoming.clone(),
        source,
    })?;
    sweep_incoming(&incoming);
    let app = App::new(
        Arc::new(project),
        store.clone(),
        AppSettings {
            instance: instance.clone(),
            lease_ttl: opts.lease_ttl,
            spool_dir: Some(opts.spool_dir.clone().unwrap_or_else(|| store.spool_dir())),
        },
    );
    let server = Arc::new(Server {
        app: app.clone(),
        users: opts.users.clone(),
        incoming,
    });
    if opts.users.is_empty() {
        tracing::warn!(
            "no API users configured: the API and triggers without their own credentials are open (loopback only)"
        );
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: opts.listen,
        source,
    })?;
    tracing::info!(%addr, %instance, flows = app.project().flows.len(), "ferry serve listening");
    ready(addr);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(heartbeat(app.clone(), opts.heartbeat, opts.retention));
    if opts.schedules {
        tasks.spawn(scheduler::run(app.clone()));
    }
    if let Some(loaded) = loaded {
        let (app, inputs, max) = (app.clone(), opts.inputs.clone(), opts.max_file_bytes);
        tasks.spawn(async move {
            if let Err(e) = reload::watch(app, inputs, max, loaded).await {
                tracing::error!(error = %e, "hot reload is off");
            }
        });
    }
    let stopping = app.stopping().clone();
    let signal_app = app.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new runs; waiting for runs under way");
        signal_app.stopping().cancel();
    });
    let guard = Arc::new(limits::Guard::new(opts.limits.clone(), Some(addr)));
    if opts.limits.allowed_hosts.is_empty() && addr.ip().is_unspecified() {
        tracing::warn!(
            %addr,
            "listening on every address with the default allowed hosts (localhost): name the hosts clients use with --allowed-hosts"
        );
    }
    tasks.spawn(auth::report_failures(
        guard.failures.clone(),
        stopping.clone(),
    ));
    http::serve(
        listener,
        router_with(server, guard),
        &opts.limits,
        stopping,
        opts.grace,
    )
    .await;
    let interrupted = app.shut_down(opts.grace).await;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "runs were interrupted by the shutdown; resubmit them"
        );
    }
    tasks.shutdown().await;
    if let Err(e) = store.deregister().await {
        tracing::warn!(error = %e, "cannot deregister the instance");
    }
    store.close().await;
    tracing::info!("ferry serve stopped");
    Ok(())
}

/// Deletes delivery staging folders (`ferry-delivery-*`) that a killed ferry never cleaned
/// up: those idle for longer than an hour. Best effort: a failure is a warning.
fn sweep_incoming(incoming: &std::path::Path) {
    let age = crate::connectors::sweep::DEFAULT_TEMP_MAX_AGE;
    match crate::connectors::sweep::stale_dirs(incoming, "ferry-delivery-", age) {
        Ok(0) => {}
        Ok(n) => tracing::info!(folders = n, dir = %incoming.display(),
            "deleted delivery staging folders an earlier ferry left behind"),
        Err(e) => tracing::warn!(dir = %incoming.display(), error = %e,
            "could not sweep the delivery staging folders"),
    }
}

/// Heartbeats, marks runs of dead processes interrupted, and purges by retention.
async fn heartbeat(app: Arc<App>, every: Duration, retention: Option<Duration>) {
    let mut last_purge = std::time::Instant::now();
    loop {
        tokio::select! {
            () = app.stopping().cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = app.store().heartbeat().await {
            tracing::warn!(error = %e, "heartbeat failed");
            continue;
        }
        match app.store().sweep_dead_owners().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "runs of a ferry instance that stopped answering are recorded as interrupted"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot look for runs of dead instances"),
        }
        if let Some(age) = retention
            && last_purge.elapsed() >= Duration::from_secs(3600)
        {
            last_purge = std::time::Instant::now();
            let before = chrono::Utc::now()
                - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::days(30));
            match app.store().purge(before).await {
                Ok(n) => tracing::info!(runs = ?n, "retention purge"),
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
            if let Err(e) = app.store().purge_ticks(before).await {
                tracing::warn!(error = %e, "tick purge failed");
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
