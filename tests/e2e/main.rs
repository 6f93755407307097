//! End-to-end tests: the real `gatehouse-server` and `gatehouse-cleanup` binaries, started as
//! processes, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL. One test binary on purpose:
//! each extra one costs a link on the 2-core CI machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_api;
mod break_glass_story;
mod console;
mod console_browser;
mod console_helpers;
mod delegation_story;
mod directory_story;
mod helpers;
mod install_story;
mod lifecycle;
mod provider_stories;
mod slack_helpers;
mod slack_story;
mod story_helpers;
mod webhook_story;
