//! Logging: `RUST_LOG` filters (default `info,sqlx=warn`), `GATEHOUSE_LOG_FORMAT=json` for
//! structured logs; both read from the one [`Env`].

use tracing_subscriber::EnvFilter;

use crate::env::Env;

/// Installs the process's log subscriber as `env` describes.
pub fn init(env: &Env) {
    let filter = env
        .log_filter()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling it twice) is harmless: keep the first subscriber.
    let _ = if env.log_json() {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
