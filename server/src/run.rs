//! Opening, serving and stopping: used by `main.rs`, and by tests that want a real server on a
//! temporary data directory ([`RunningServer`] inside a tokio runtime, [`BackgroundServer`] from
//! blocking code).

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::Store;

/// Opens a server's state: creates the data directory, opens and migrates `linli.db` (or the
/// PostgreSQL database of `config.database_url`), loads the
/// signing keys from it (importing a legacy `jwt-keys.json`, or making the first key), and seeds
/// the demo data when `config.demo` is set (and demo records when `config.demo_records` is).
pub async fn open(config: Config) -> Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::Internal(format!("{}: {e}", config.data_dir.display())))?;
    let store = match &config.database_url {
        Some(url) => Store::open_postgres(url).await?,
        None => Store::open_sqlite(&config.database_path()).await?,
    };
    let keys = JwtKeys::open(store.clone(), &config.legacy_keys_path()).await?;
    if config.demo || config.demo_records {
        crate::demo::seed(&store).await?;
    }
    let seed_records = config.demo_records;
    let state = AppState::new(store, keys, config);
    if let Store::Postgres(pg) = &state.store {
        // Other processes on the database announce their commits through it: relay them to this
        // process's live streams.
        pg.forward_changes(state.live.clone()).await?;
    }
    if seed_records {
        let n = crate::demo_records::seed_records(&state).await?;
        if n > 0 {
            tracing::info!(records = n, "demo records seeded");
        }
    }
    Ok(state)
}

/// Serves the application on `listener` until `shutdown` resolves, then finishes in-flight
/// requests and closes the database. HTTPS when the state's configuration has TLS files, with the
/// certificate reloaded when they change. Handlers see the client's address
/// (`ConnectInfo<SocketAddr>`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let tls = state.config.tls.clone();
    let app = crate::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some((cert, key)) => {
            let config = crate::tls::server_config(&cert, &key)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
            });
            axum_server::from_tcp_rustls(
                listener.into_std()?,
                axum_server::tls_rustls::RustlsConfig::from_config(config),
            )?
            .handle(handle)
            .serve(app)
            .await
        }
    };
    store.close().await;
    result
}

/// A server running in the current tokio runtime on `127.0.0.1` and a free port.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Opens `config` and serves it on `127.0.0.1:0`.
    pub async fn start(config: Config) -> Result<RunningServer> {
        let state = open(config).await?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::internal)?;
        let addr = listener.local_addr().map_err(Error::internal)?;
        let scheme = if let Some((cert, key)) = &state.config.tls {
            // Fail here, not in the serving task, when the files do not load.
            crate::tls::server_config(cert, key)?;
            "https"
        } else {
            "http"
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Ok(RunningServer {
            addr,
            url: format!("{scheme}://{addr}"),
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://` with TLS), without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's state (its store, for assertions).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops gracefully and waits until the database is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A server on its own thread and runtime, for blocking tests (e.g. with `ureq`). Stops when
/// dropped.
#[derive(Debug)]
pub struct BackgroundServer {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    /// Opens `config` and serves it on `127.0.0.1:0` from a background thread.
    pub fn start(config: Config) -> Result<BackgroundServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("linli-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::internal(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match RunningServer::start(config).await {
                        Ok(server) => {
                            let _ = ready_tx.send(Ok(server.url().to_string()));
                            let _ = stopped.await;
                            server.stop().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(Error::internal)?;
        let url = ready_rx
            .recv()
            .map_err(|_| Error::Internal("the server thread died".into()))??;
        Ok(BackgroundServer {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
