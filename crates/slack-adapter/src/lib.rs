//! slack-adapter (work in progress)
