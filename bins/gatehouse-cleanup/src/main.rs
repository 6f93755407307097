//! `gatehouse-cleanup`: the server's due work, once, for cron.
//!
//! Runs every due job (revocations past due, pending time-outs, notifications, audit export) until
//! none is left, prints a summary with counts per kind, and exits 0 when everything due was
//! handled, 1 when something failed (it will be retried), 2 on a configuration or database error.
//! Safe to run while servers run: each job is claimed by exactly one process.

use std::path::PathBuf;
use std::process::ExitCode;

use access_core::AuditEvent;
use access_core::engine::ChainWalk;
use access_core::ports::AuditFilter;
use clap::{Parser, Subcommand};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::{Env, redact_url};
use gatehouse_runtime::reports::{ExportFormat, Month, MonthlyReport, write_events};
use gatehouse_runtime::{App, Config};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (the same one the server uses).
    #[arg(long, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run all due work once and exit (the default).
    Run {
        /// Stop after this many rounds of 100 jobs even if more are due.
        #[arg(long, default_value_t = 1000)]
        max_rounds: usize,
    },
    /// BigQuery set-up.
    Bigquery {
        #[command(subcommand)]
        command: BigqueryCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Re-encrypt stored Slack tokens under the first key of GATEHOUSE_ENCRYPTION_KEY (run after
    /// putting a new key first; drop the old key once this reports 0).
    RotateKeys,
}

#[derive(Debug, Subcommand)]
enum BigqueryCommand {
    /// Create the `access_grants` and `access_events` tables if missing (and the dataset, when a
    /// location is given); report columns an existing table lacks.
    Init {
        /// Create the dataset in this location (e.g. `US`, `EU`) if it does not exist.
        #[arg(long)]
        location: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first bad row (and the kind of tampering).
    Verify {
        /// Also compare the local chain with the BigQuery export (events and signed
        /// checkpoints) and report the first divergence.
        #[arg(long)]
        against_export: bool,
    },
    /// Write audit events for compliance (all of them, oldest first).
    Export {
        /// Start (RFC 3339 time or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// End, exclusive (RFC 3339 time or YYYY-MM-DD).
        #[arg(long)]
        until: Option<String>,
        /// csv or jsonl.
        #[arg(long, default_value = "jsonl")]
        format: ExportFormat,
        /// File to write (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// The monthly access report: grants per resource and person, durations, approvers,
    /// self-revocations, failures, break-glass grants still unreviewed.
    Report {
        /// YYYY-MM.
        #[arg(long)]
        month: Month,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let env = Env::from_process();
    gatehouse_runtime::telemetry::init(&env);
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    tracing::debug!(database = %redact_url(&env.database_url), "connecting");
    // Due jobs, reconciliation and the audit tools never ask the directory (eligibility and
    // approver checks happen when people act): skip downloading the org-data index at every run.
    let overrides = Overrides {
        directory: Some(std::sync::Arc::new(access_core::ports::NoDirectory)),
        ..Overrides::default()
    };
    let app = match App::build(config, env, overrides).await {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    match cli.command.unwrap_or(Command::Run { max_rounds: 1000 }) {
        Command::Run { max_rounds } => run_due(&app, max_rounds).await,
        Command::Audit {
            command: AuditCommand::Verify { against_export },
        } => {
            let local = verify(&app).await;
            if !against_export {
                return local;
            }
            let export = verify_export(&app).await;
            if local != ExitCode::SUCCESS {
                local
            } else {
                export
            }
        }
        Command::Bigquery {
            command: BigqueryCommand::Init { location },
        } => bigquery_init(&app, location).await,
        Command::Audit {
            command:
                AuditCommand::Export {
                    since,
                    until,
                    format,
                    output,
                },
        } => export(&app, since, until, format, output).await,
        Command::Audit {
            command: AuditCommand::Report { month, format },
        } => report(&app, month, &format).await,
        Command::RotateKeys => rotate_keys(&app).await,
    }
}

async fn rotate_keys(app: &App) -> ExitCode {
    let ins = match gatehouse_runtime::slack_installations::installations_from_env(
        app.store.clone(),
        app.env.lookup(),
    ) {
        Ok(Some(i)) => i,
        Ok(None) => return fail(&"GATEHOUSE_ENCRYPTION_KEY is not set"),
        Err(e) => return fail(&e),
    };
    match ins.rotate_keys().await {
        Ok(n) => {
            println!("{n} Slack installation(s) re-encrypted under the first key");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("gatehouse-cleanup: {e}");
    ExitCode::from(2)
}

async fn run_due(app: &App, max_rounds: usize) -> ExitCode {
    let summary = match app.engine.drain(max_rounds).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let fmt = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    println!("gatehouse-cleanup: {} due job(s) handled", summary.claimed);
    println!("  done:    {}", fmt(&summary.done));
    println!("  retried: {}", fmt(&summary.retried));
    println!("  dead:    {}", fmt(&summary.dead));
    if let Some(max) = summary.revocation_lag_secs.iter().cloned().reduce(f64::max) {
        println!(
            "  revocations past due: {} (latest {max:.1}s after expiry)",
            summary.revocation_lag_secs.len()
        );
    }
    let purge_failed = match gatehouse_runtime::maintenance::purge_finished_jobs(app).await {
        Ok(n) => {
            println!("  purged:  {n} finished job(s) past their retention");
            false
        }
        Err(e) => {
            eprintln!("gatehouse-cleanup: could not purge finished jobs: {e}");
            true
        }
    };
    let reconcile = gatehouse_runtime::maintenance::reconcile(app).await;
    if reconcile.resources > 0 {
        println!(
            "  reconciled {} resource(s): {} repair(s)",
            reconcile.resources, reconcile.repairs
        );
        for e in &reconcile.errors {
            println!("  reconcile problem: {e}");
        }
    }
    if summary.failures() == 0 && reconcile.is_clean() && !purge_failed {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "gatehouse-cleanup: {} job(s) failed and will be retried; {} reconciliation problem(s)",
            summary.failures(),
            reconcile.errors.len()
        );
        ExitCode::from(1)
    }
}

async fn bigquery_init(app: &App, location: Option<String>) -> ExitCode {
    let Some(sink) = &app.adapters.bigquery else {
        return fail(&"BigQuery is not configured: set BIGQUERY_PROJECT (and credentials)");
    };
    if let Some(loc) = location {
        match sink.ensure_dataset(&loc).await {
            Ok(c) => println!("dataset {}: {c:?}", sink.config().dataset),
            Err(e) => return fail(&e),
        }
    }
    match sink.create_tables().await {
        Ok(tables) => {
            let mut incomplete = false;
            for t in tables {
                println!("table {}: {:?}", t.table, t.outcome);
                if !t.missing_columns.is_empty() {
                    incomplete = true;
                    println!("  missing columns: {}", t.missing_columns.join(", "));
                }
            }
            if incomplete {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}

async fn verify(app: &App) -> ExitCode {
    match app.engine.verify_audit_chain(ChainWalk::Full).await {
        Ok(v) if v.ok => {
            println!(
                "audit chain intact: {} events verified ({})",
                v.events_checked,
                if v.keyed {
                    "keyed"
                } else {
                    "UNKEYED: set GATEHOUSE_AUDIT_KEY"
                }
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            let bad = v.first_bad.as_ref();
            println!(
                "audit chain BROKEN at event {} ({}): {}",
                bad.map(|b| b.seq).unwrap_or_default(),
                bad.map(|b| b.kind.as_str()).unwrap_or("unknown"),
                bad.map(|b| b.reason.as_str()).unwrap_or("unknown")
            );
            ExitCode::from(1)
        }
        Err(e) => fail(&e),
    }
}

async fn verify_export(app: &App) -> ExitCode {
    let Some(sink) = app.adapters.bigquery.as_ref() else {
        return fail(&"--against-export needs the BigQuery export (BIGQUERY_PROJECT)");
    };
    match gatehouse_runtime::audit_verify::verify_against_export(&app.store, sink).await {
        Ok(c) if c.ok => {
            println!(
                "local chain matches the export: {} local events, {} exported, {} checkpoints",
                c.local_events, c.exported_events, c.checkpoints
            );
            ExitCode::SUCCESS
        }
        Ok(c) => {
            let d = c.first_divergence.as_ref();
            println!(
                "local chain DIVERGES from the export at event {} ({}): {}",
                d.map(|b| b.seq).unwrap_or_default(),
                d.map(|b| b.kind.as_str()).unwrap_or("unknown"),
                d.map(|b| b.reason.as_str()).unwrap_or("unknown")
            );
            ExitCode::from(1)
        }
        Err(e) => fail(&e),
    }
}

fn parse_time(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            raw.parse::<chrono::NaiveDate>()
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| format!("'{raw}' is not an RFC 3339 time or a YYYY-MM-DD date"))
}

/// Every event matching the time range, paging through the store.
async fn events_between(
    app: &App,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<AuditEvent>, access_core::ports::StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = app
            .engine
            .audit_events(&AuditFilter {
                after_seq: after,
                since,
                until,
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        let n = page.len();
        after = page.last().map(|e| e.seq);
        out.extend(page);
        if n < 1000 {
            return Ok(out);
        }
    }
}

async fn export(
    app: &App,
    since: Option<String>,
    until: Option<String>,
    format: ExportFormat,
    output: Option<PathBuf>,
) -> ExitCode {
    let (since, until) = match (
        since.as_deref().map(parse_time).transpose(),
        until.as_deref().map(parse_time).transpose(),
    ) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let events = match events_between(app, since, until).await {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let result = match &output {
        Some(path) => std::fs::File::create(path).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            write_events(&mut w, &events, format, true)?;
            std::io::Write::flush(&mut w)
        }),
        None => write_events(&mut std::io::stdout().lock(), &events, format, true),
    };
    match result {
        Ok(()) => {
            eprintln!("exported {} audit event(s)", events.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn report(app: &App, month: Month, format: &str) -> ExitCode {
    let events = match events_between(app, Some(month.start()), Some(month.end())).await {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let mut report = MonthlyReport::from_events(month, &events);
    // Break-glass grants reviewed after the month are not listed as unreviewed.
    let mut after = None;
    while !report.emergency_unreviewed.is_empty() {
        let page = app
            .engine
            .audit_events(&access_core::ports::AuditFilter {
                after_seq: after,
                since: Some(month.end()),
                kind: Some(access_core::audit::AuditKind::EmergencyReviewed),
                limit: Some(1000),
                ..Default::default()
            })
            .await;
        match page {
            Ok(page) => {
                report.note_reviews(&page);
                after = page.last().map(|e| e.seq);
                if page.len() < 1000 {
                    break;
                }
            }
            Err(e) => return fail(&e),
        }
    }
    match format {
        "json" => match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => return fail(&e),
        },
        "text" => print!("{}", report.to_text()),
        other => return fail(&format!("unknown format '{other}'; use text or json")),
    }
    ExitCode::SUCCESS
}
