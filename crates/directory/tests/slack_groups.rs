//! Slack user group membership through a fake `usergroups.users.list`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{BOT_TOKEN, FakeSlack};
use directory::{SlackGroupError, SlackGroupsSettings, SlackUserGroups};

fn client(slack: &FakeSlack, ttl: Duration) -> SlackUserGroups {
    let mut s = SlackGroupsSettings::new(BOT_TOKEN);
    s.api_url = slack.base_url.clone();
    s.cache_ttl = ttl;
    s.max_stale = Duration::from_secs(600);
    s.max_retry_wait = Duration::from_secs(2);
    SlackUserGroups::new(s)
}

#[tokio::test]
async fn membership_is_fetched_once_and_cached() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0SRE", &["U1", "U2"]);
    let groups = client(&slack, Duration::from_secs(60));
    assert!(groups.is_member("S0SRE", "U1").await.unwrap());
    assert!(groups.is_member("S0SRE", "U2").await.unwrap());
    assert!(!groups.is_member("S0SRE", "U3").await.unwrap());
    assert_eq!(slack.requests(), 1, "one call for three questions");

    // A change in Slack is seen after invalidation (or the TTL).
    slack.set_group("S0SRE", &["U3"]);
    assert!(
        !groups.is_member("S0SRE", "U3").await.unwrap(),
        "still cached"
    );
    groups.invalidate("S0SRE");
    assert!(groups.is_member("S0SRE", "U3").await.unwrap());
    assert_eq!(slack.requests(), 2);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0SRE", &["U1"]);
    let groups = client(&slack, Duration::from_millis(150));
    assert!(groups.is_member("S0SRE", "U1").await.unwrap());
    slack.set_group("S0SRE", &[]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!groups.is_member("S0SRE", "U1").await.unwrap());
    assert_eq!(slack.requests(), 2);
}

#[tokio::test]
async fn concurrent_misses_share_one_call() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0BIG", &["U1"]);
    let groups = std::sync::Arc::new(client(&slack, Duration::from_secs(60)));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let g = std::sync::Arc::clone(&groups);
        tasks.push(tokio::spawn(
            async move { g.is_member("S0BIG", "U1").await },
        ));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap());
    }
    assert_eq!(slack.requests(), 1);
}

#[tokio::test]
async fn slack_errors_are_reported() {
    let slack = FakeSlack::start().await;
    let groups = client(&slack, Duration::from_secs(60));
    let e = groups.is_member("S0NOPE", "U1").await.unwrap_err();
    assert_eq!(
        e,
        SlackGroupError::Api {
            group: "S0NOPE".into(),
            error: "no_such_subteam".into()
        }
    );

    let mut s = SlackGroupsSettings::new("xoxb-wrong");
    s.api_url = slack.base_url.clone();
    let wrong = SlackUserGroups::new(s);
    slack.set_group("S0SRE", &["U1"]);
    let e = wrong.is_member("S0SRE", "U1").await.unwrap_err();
    assert!(
        matches!(&e, SlackGroupError::Api { error, .. } if error == "invalid_auth"),
        "{e:?}"
    );
    assert!(
        !format!("{wrong:?}").contains("xoxb-wrong"),
        "the token is redacted"
    );

    let e = groups
        .is_member("not-a-group&usergroup=S0SRE", "U1")
        .await
        .unwrap_err();
    assert!(matches!(e, SlackGroupError::InvalidGroupId(_)));
}

#[tokio::test]
async fn a_short_retry_after_is_waited_for() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0SRE", &["U1"]);
    slack.rate_limit(1, 1);
    let groups = client(&slack, Duration::from_secs(60));
    let t = Instant::now();
    assert!(groups.is_member("S0SRE", "U1").await.unwrap());
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        t.elapsed()
    );
    assert_eq!(slack.requests(), 2);
}

#[tokio::test]
async fn a_long_retry_after_fails_fast_or_serves_a_stale_list() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0SRE", &["U1"]);
    slack.rate_limit(1, 30);
    let groups = client(&slack, Duration::from_millis(100));
    let t = Instant::now();
    let e = groups.is_member("S0SRE", "U1").await.unwrap_err();
    assert_eq!(
        e,
        SlackGroupError::RateLimited {
            group: "S0SRE".into(),
            retry_after: Duration::from_secs(30)
        }
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // With a list fetched before, an expired entry is used while Slack rate-limits or is down.
    assert!(groups.is_member("S0SRE", "U1").await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    slack.rate_limit(1, 30);
    assert!(
        groups.is_member("S0SRE", "U1").await.unwrap(),
        "stale list while rate limited"
    );
    slack.set_outage(true);
    assert!(
        groups.is_member("S0SRE", "U1").await.unwrap(),
        "stale list during an outage"
    );
    // …but a definite answer from Slack replaces it.
    slack.set_outage(false);
    slack.state.groups.lock().unwrap().remove("S0SRE");
    assert!(matches!(
        groups.is_member("S0SRE", "U1").await.unwrap_err(),
        SlackGroupError::Api { .. }
    ));
}

#[tokio::test]
async fn an_outage_without_a_cached_list_is_an_error() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0SRE", &["U1"]);
    slack.set_outage(true);
    let groups = client(&slack, Duration::from_secs(60));
    let e = groups.is_member("S0SRE", "U1").await.unwrap_err();
    assert!(
        matches!(&e, SlackGroupError::Transport { message, .. } if message.contains("503")),
        "{e:?}"
    );
}
