//! The `mpc-server` binary: configuration from flags and `MPC_*`
//! variables, logging, the two listeners, graceful shutdown on SIGTERM or
//! Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use mpc_server::config::{Cli, LogFormat, ProcessEnv, SecretSource, ServerConfig};
use mpc_server::{dev, listener, Server};
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_openapi {
        println!("{}", mpc_server::rest::keys::openapi_json());
        return ExitCode::SUCCESS;
    }
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("mpc-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("MPC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let env = ProcessEnv;
    let dev_source;
    let source: &dyn SecretSource = if cli.dev {
        dev::check_allowed(
            cli.ws_addr,
            cli.rest_addr,
            cli.jwt_public_keys.as_deref(),
            &env,
        )?;
        dev_source = dev::source(&cli.data_dir, &env)?;
        &dev_source
    } else {
        &env
    };
    let config = ServerConfig::from_cli(&cli, source)?;
    if !config.database_url.starts_with("postgres") {
        std::fs::create_dir_all(&cli.data_dir).map_err(|e| {
            format!(
                "cannot create data directory {}: {e}",
                cli.data_dir.display()
            )
        })?;
    }
    info!(config = %config.redacted(), "starting");
    // Distributions often set a low soft limit (1024) under a high hard one.
    let wanted = listener::wanted_descriptors(config.connections.max_connections, 2);
    listener::raise_open_file_limit(wanted);
    let server = Server::new(config.clone())
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let ws = TcpListener::bind(config.ws_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (WebSocket): {e}", config.ws_addr))?;
    let rest = TcpListener::bind(config.rest_addr)
        .await
        .map_err(|e| format!("cannot listen on {} (REST): {e}", config.rest_addr))?;
    let ws_addr = ws.local_addr().map_err(|e| e.to_string())?;
    let rest_addr = rest.local_addr().map_err(|e| e.to_string())?;
    if cli.dev {
        let token = dev::demo_token(source, &config.auth.audience, config.auth.issuer.as_deref())?;
        warn!(
            "DEVELOPMENT MODE: generated secrets are stored unencrypted in {}",
            cli.data_dir.display()
        );
        // The token goes to stdout for the developer, never to the log.
        println!(
            "\n  *** DEVELOPMENT MODE — NOT FOR PRODUCTION ***\n  \
             secrets: {}/dev-secrets.json (unencrypted)\n  \
             token for user \"{}\" (valid {} h):\n\n{}\n\n  \
             try: cargo run --release --example client -- --server ws://{ws_addr} --token <TOKEN> --state ./client-state keygen\n",
            cli.data_dir.display(),
            dev::DEMO_USER,
            dev::DEMO_TOKEN_SECONDS / 3600,
            token.as_str(),
        );
    }
    info!(%ws_addr, %rest_addr, "listening");
    server
        .run(ws, rest, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
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
}
