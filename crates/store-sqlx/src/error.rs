//! sqlx errors as [`StoreError`]s: the domain meaning of unique violations and aborted
//! transactions, and a short description of everything else. Messages say what failed, never a
//! bound value or a connection string; the driver's error stays attached as the `source`.

use access_core::ports::StoreError;

/// What kind of failure a sqlx error is, in words that carry no data from the statement.
pub(crate) fn describe(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "the connection settings are invalid",
        sqlx::Error::Database(_) => "the database rejected a statement",
        sqlx::Error::Io(_) => "database connection I/O failed",
        sqlx::Error::Tls(_) => "database TLS failed",
        sqlx::Error::Protocol(_) => "database protocol error",
        sqlx::Error::RowNotFound => "a row the statement needs is missing",
        sqlx::Error::TypeNotFound { .. } => "a database type is missing",
        sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => "a result column did not decode",
        sqlx::Error::Encode(_) => "a value did not encode",
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection",
        sqlx::Error::PoolClosed => "the connection pool is closed",
        sqlx::Error::WorkerCrashed => "the database worker crashed",
        sqlx::Error::Migrate(_) => "migrations failed",
        _ => "database error",
    }
}

/// A failed statement (or transaction step) with nothing more specific to say.
pub(crate) fn plain(e: sqlx::Error) -> StoreError {
    StoreError::database(describe(&e), e)
}

/// A failure while doing `what` (`"read installations"`), for `map_err`.
pub(crate) fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::database(format!("{what}: {}", describe(&e)), e)
}

/// A database error, with unique violations and PostgreSQL's retryable aborts given their
/// domain meaning ([`StoreError::Duplicate`], [`StoreError::Conflict`]: the engine acts on
/// them). `what` names the thing that would be duplicated.
pub(crate) fn db_err(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Duplicate(what());
        }
        // serialization_failure, deadlock_detected: someone else won; the caller re-reads.
        if matches!(d.code().as_deref(), Some("40001") | Some("40P01")) {
            return StoreError::Conflict(what());
        }
    }
    plain(e)
}

/// An error and its sources on one line, for text that is stored or shown whole (a job set
/// aside, a broken audit row).
pub(crate) fn with_sources(e: &StoreError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_error_is_the_source_not_the_message() {
        let e = plain(sqlx::Error::Protocol("secret-ish detail".into()));
        assert_eq!(e.code(), "database");
        assert!(!e.to_string().contains("secret-ish"));
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert!(source.is_some_and(|s| s.contains("secret-ish detail")));
    }
}
