//! `gatehouse-server`: serves Slack and the admin API and runs the job scheduler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::{Env, redact_url};
use gatehouse_runtime::{App, Config, JobScheduler};
use tokio_util::sync::CancellationToken;

/// Just-in-time access broker: HTTP server and job scheduler.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (resources and policies).
    #[arg(long, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
    config: PathBuf,
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    gatehouse_runtime::telemetry::init(&env);
    let cli = Cli::parse();
    match run(cli, env).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gatehouse-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, env: Env) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(&cli.config)?;
    tracing::info!(database = %redact_url(&env.database_url), config = %cli.config.display(), "starting");
    let app = App::build(config, env, Overrides::default()).await?;

    let shutdown = CancellationToken::new();
    let scheduler = JobScheduler::new(app.engine.clone(), app.waker.clone()).max_idle(app.max_idle);
    let scheduler_task = tokio::spawn(scheduler.run(shutdown.clone()));
    let reconcile_every = Duration::from_secs(
        app.config
            .server
            .reconcile_interval_secs
            .unwrap_or(3600)
            .max(60),
    );
    tokio::spawn(reconcile_loop(
        app.clone(),
        reconcile_every,
        shutdown.clone(),
    ));
    tokio::spawn(purge_loop(app.clone(), shutdown.clone()));
    // Installed Slack workspaces: rotating tokens refreshed before expiry, stale states deleted.
    if let Some(flow) = app.adapters.slack_install.clone() {
        tokio::spawn(gatehouse_runtime::slack_installations::maintain(
            flow,
            Duration::from_secs(600),
            shutdown.clone(),
        ));
    }
    // Socket Mode (SLACK_APP_TOKEN): the same Slack handlers over a WebSocket, no public URL.
    let socket_mode = match (
        app.env.adapter_settings().socket_mode(),
        app.adapters.slack.clone(),
    ) {
        (Some(sm), Some(cfg)) => {
            let max_body = cfg.max_body_bytes;
            let ins = app
                .adapters
                .slack_install
                .as_ref()
                .map(|f| f.installations().clone());
            let mut handlers =
                slack_adapter::router::socket_mode_router(app.engine.clone(), cfg, ins);
            if let Some(flow) = app.adapters.slack_install.clone() {
                handlers = slack_adapter::oauth::lifecycle_layer(handlers, flow, max_body);
            }
            tracing::info!("Slack Socket Mode enabled");
            Some(slack_adapter::socket_mode::SocketMode::new(sm, handlers).spawn())
        }
        _ => None,
    };
    // The org-data index reloads on a schedule and on SIGHUP; the handle stops it when dropped.
    let _reloader = app.adapters.directory.as_ref().and_then(|(dir, every)| {
        let org = dir.org_data()?.clone();
        tokio::spawn(reload_on_sighup(org.clone()));
        Some(org.spawn_reloader(*every))
    });

    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // Tests and scripts read this line to learn the port when --listen asks for port 0.
    println!("gatehouse-server listening on http://{addr}");

    let router = gatehouse_server::app(app);
    let signal = shutdown_signal(shutdown.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(signal)
        .await?;

    // Let the scheduler finish the batch it is running; jobs not yet claimed stay due.
    shutdown.cancel();
    if let Some(task) = socket_mode {
        task.abort();
    }
    if tokio::time::timeout(Duration::from_secs(30), scheduler_task)
        .await
        .is_err()
    {
        tracing::warn!(
            "scheduler did not stop within 30s; its claimed jobs will be retried after their lease"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Deletes finished jobs past their retention every hour, the first time a few minutes after
/// start (a restart storm should not add a purge to every start).
async fn purge_loop(app: App, shutdown: CancellationToken) {
    let mut wait = Duration::from_secs(300);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        match gatehouse_runtime::maintenance::purge_finished_jobs(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "finished jobs past their retention deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "could not purge finished jobs; trying again in an hour")
            }
        }
        wait = Duration::from_secs(3600);
    }
}

/// Reconciles with the providers now and then (only resources whose provider supports it).
async fn reconcile_loop(app: App, every: Duration, shutdown: CancellationToken) {
    let reconcilable = app
        .engine
        .resources()
        .iter()
        .any(|r| r.provider == "gcp-iam" || r.provider == "cloudconnexa");
    if !reconcilable {
        return;
    }
    // This process's name on the reconcile lease (unique per start: a restarted replica does not
    // inherit its previous run's lease).
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let holder = format!("pid-{}-{started}", std::process::id());
    // The first pass a minute after start: a restart storm should not hammer the providers.
    let mut wait = Duration::from_secs(60).min(every);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        // One replica per period: the others find the lease taken and wait for the next one.
        if let Some(report) =
            gatehouse_runtime::maintenance::reconcile_under_lease(&app, &holder, every).await
        {
            tracing::info!(
                repairs = report.repairs,
                errors = report.errors.len(),
                "reconciliation done"
            );
        }
        wait = every;
    }
}

#[cfg(unix)]
async fn reload_on_sighup(org: std::sync::Arc<directory::OrgData>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match org.reload().await {
            Ok(_) => tracing::info!("org data reloaded (SIGHUP)"),
            Err(e) => {
                tracing::error!(error = %e, "org data reload failed; keeping the previous index")
            }
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_org: std::sync::Arc<directory::OrgData>) {}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
        _ = token.cancelled() => {}
    }
    tracing::info!("shutting down: finishing in-flight work");
    token.cancel();
}
