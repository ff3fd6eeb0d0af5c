//! The `eventfeed` binary: reads the configuration from the environment,
//! starts the feed on `NB_BACKEND_HOST:NB_BACKEND_PORT`, and shuts down
//! gracefully on SIGINT or SIGTERM; SIGHUP reloads the credentials.

use std::net::SocketAddr;
use std::process::ExitCode;

use eventfeed::app::App;
use eventfeed::config::{self, Config};
use eventfeed::engine::EngineConfig;
use eventfeed::feed::idempotency::KeyLimits;
use eventfeed::feed::{Credentials, FeedConfig, Store};
use eventfeed::http::Cors;
use eventfeed::server::{self, ServerConfig};
use eventfeed::sio::Adapter;
use eventfeed::sio::SioConfig;
use eventfeed::sio::admin::AdminConfig;
use eventfeed_protocol::engine::session;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{}", config::help());
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("--hash-password") {
        return hash_password();
    }
    if let Some(other) = std::env::args().nth(1) {
        eprintln!("eventfeed: unknown argument {other:?}; see eventfeed --help");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eventfeed: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let credentials = match Credentials::load(config.tokens_file.clone(), &config.jwt) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eventfeed: {e}");
            return ExitCode::from(2);
        }
    };
    let (runtime, scheduler) = runtime();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("eventfeed: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(scheduler, "runtime started");
    runtime.block_on(run(config, credentials))
}

/// `eventfeed --hash-password`: reads a password from stdin (one line) and
/// prints its bcrypt hash, for NB_BACKEND_ADMIN_PASSWORD_HASH.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        eprintln!("eventfeed: cannot read the password from stdin");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("eventfeed: give the password on stdin: echo -n 'PASSWORD' | eventfeed --hash-password");
        return ExitCode::from(2);
    }
    match bcrypt::hash(password, 10) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventfeed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tokio runtime for the cores this process may use (its CPU affinity
/// and cgroup quota, as `available_parallelism` reads them), and its name.
///
/// On one core, the single-threaded scheduler: a work-stealing pool of one
/// worker has no one to steal from, and pays for it anyway (cross-thread
/// wake-ups, a worker thread beside the main one, the worker's own malloc
/// arena growing a page at a time while connections accumulate).
/// Its I/O driver is polled every 256 task polls while tasks are runnable:
/// under load more frames queue per socket between polls, so fewer and
/// larger writes; an idle server polls it at once.
/// (What these choices measured: bench/README.md.)
fn runtime() -> (std::io::Result<tokio::runtime::Runtime>, &'static str) {
    if std::thread::available_parallelism().is_ok_and(|n| n.get() == 1) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().event_interval(256).build();
        (runtime, "current_thread")
    } else {
        (tokio::runtime::Builder::new_multi_thread().enable_all().build(), "multi_thread")
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    if config.log_json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn run(config: Config, credentials: Credentials) -> ExitCode {
    if credentials.is_demo() {
        tracing::warn!(
            "NO TOKENS FILE CONFIGURED: running with the public DEMO tokens (token_admin_a, token_admin_b, \
             token_reader_a). Anyone can read and write. Set NB_BACKEND_TOKENS_FILE or NB_BACKEND_JWT_SECRET / NB_BACKEND_JWT_JWKS for real use."
        );
    }
    let cors = Cors::new(config.allowed_origins.clone());
    let engine_config = EngineConfig {
        session: session::Config {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            ..session::Config::default()
        },
        max_payload: config.max_payload,
        max_queue: config.max_queue,
        cors: cors.clone(),
        ..EngineConfig::default()
    };
    let feed_config = FeedConfig {
        buffer_size: config.buffer_size,
        namespace: config.namespace.clone(),
        max_body: config.max_body,
        cors,
        rate_limit: config.rate_limit,
        tenant_rate_limit: config.tenant_rate_limit,
        max_tenant_connections: config.max_tenant_connections,
        recovery_window: config.recovery_window,
        idempotency: KeyLimits { window: config.idempotency_window, max_keys: config.idempotency_keys },
        ..FeedConfig::default()
    };
    let sio_config = SioConfig {
        admin: config.admin.clone().map(|a| AdminConfig {
            username: a.username,
            password_hash: a.password_hash,
            readonly: a.readonly,
            session_ttl: a.session_ttl,
            namespace: "/admin".into(),
            clustered: false,
        }),
        ..SioConfig::default()
    };
    if let Some(admin) = &config.admin {
        tracing::info!(readonly = admin.readonly, "Socket.IO Admin UI on, namespace /admin");
    }
    // The backend is chosen here, once.
    match config.redis.clone() {
        None => serve(config, App::new(feed_config, credentials, engine_config, sio_config)).await,
        Some(redis) => match App::redis(redis, feed_config, credentials, engine_config, sio_config) {
            Ok(app) => serve(config, app).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot use redis");
                ExitCode::from(2)
            }
        },
    }
}

/// Serves `app` until a signal, then drains.
async fn serve<S: Store, A: Adapter>(config: Config, app: App<S, A>) -> ExitCode {
    app.spawn_housekeeping(std::time::Duration::from_secs(60));
    let shutdown = app.shutdown_token();
    let app = std::sync::Arc::new(app);
    // Before anything waits: a SIGHUP must never find the default action
    // (which ends the process) in place.
    reload_on_sighup(app.clone(), shutdown.clone());
    if app.feed.credentials.accepts_jwts() {
        tracing::info!("JWTs accepted");
    }
    app.start().await;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, namespace = %config.namespace, "eventfeed listening");

    tokio::spawn(wait_for_signal(shutdown.clone()));
    let server_config = ServerConfig {
        max_connections: config.max_connections,
        metrics: Some(app.metrics.clone()),
        ..ServerConfig::default()
    };
    let drained = server::serve(listener, app.router(), server_config, shutdown).await;
    app.finish(std::time::Duration::from_secs(2)).await;
    tracing::info!(drained, "eventfeed stopped");
    ExitCode::SUCCESS
}

/// Reloads the credentials on every `SIGHUP` until shutdown.
fn reload_on_sighup<S: Store, A: Adapter>(app: std::sync::Arc<App<S, A>>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; credentials will not be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading credentials");
                        app.reload().await;
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (app, shutdown);
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received; draining");
    shutdown.cancel();
}

/// Connections the kernel may hold accepted-but-not-yet-taken. After a
/// deploy or a network blip every client reconnects within a second or two:
/// the 128 of `TcpListener::bind` overflows then (the dropped SYNs come back
/// a second later), so a larger queue. The kernel caps it at
/// `net.core.somaxconn` (4096 by default on current kernels).
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`,
/// as `TcpListener::bind` sets it, so a restart can listen at once).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
