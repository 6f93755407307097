//! audit-bigquery (work in progress)
