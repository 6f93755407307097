//! provider-gcp-iam (work in progress)
