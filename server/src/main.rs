//! `linli-server`: wires the command line, the store and HTTP together.

use std::io::Write;

use clap::Parser;
use linli_server::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// See `Cargo.toml`: glibc's allocator was a sixth of the server's CPU under sync load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("linli-server: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        admin => {
            let mut out = std::io::stdout().lock();
            match linli_server::admin::cli::run(admin, &mut out).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    // Only the error's public text: never SQL or internal detail.
                    let status = e.status();
                    let message = if status.is_server_error() {
                        format!("internal error ({e})")
                    } else {
                        e.to_string()
                    };
                    eprintln!("linli-server: {message}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(args: linli_server::config::ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.config();
    let demo = config.demo;
    let scheme = match &config.tls {
        Some((cert, key)) => {
            // A clear error at start-up when the files do not load.
            linli_server::tls::server_config(cert, key)?;
            "https"
        }
        None => "http",
    };
    let state = linli_server::open(config).await?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let addr = listener.local_addr()?;
    if scheme == "http" && !linli_server::tls::is_loopback(&addr) {
        eprintln!("{}", linli_server::tls::PLAIN_HTTP_WARNING);
        tracing::warn!(%addr, "serving plain HTTP on a non-loopback address");
    }
    let mut out = std::io::stdout().lock();
    if demo {
        write!(out, "{}", linli_server::demo::describe())?;
    }
    writeln!(out, "listening on {scheme}://{addr}")?;
    out.flush()?;
    drop(out);
    linli_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
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
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
