//! Loading the index from a file, a URL and GCS (through testkit's fake GCS), reloading it, and
//! keeping the last good index when a reload breaks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestRecorder, fixture_bytes};
use directory::org::{METRIC_PEOPLE, METRIC_RELOAD_FAILURES, METRIC_RELOADS};
use directory::{GcsObject, LoadError, OrgData, OrgDataSource};
use gcp_auth::StaticToken;
use testkit::gcs::{FakeGcs, GcsMode};

const TOKEN: &str = "ya29.test-access-token";
const BUCKET: &str = "my-org-data-bucket";
const OBJECT: &str = "orgdata/comprehensive_index_dump.json";

fn gcs_source(gcs: &FakeGcs, token: &str) -> OrgDataSource {
    OrgDataSource::Gcs(GcsObject {
        base_url: gcs.base_url(),
        bucket: BUCKET.into(),
        object: OBJECT.into(),
        tokens: Arc::new(StaticToken(token.into())),
    })
}

/// The fixture with one more person in Hybrid Platforms' Test Platform team.
fn fixture_plus_newcomer() -> Vec<u8> {
    let mut doc: serde_json::Value = serde_json::from_slice(&fixture_bytes()).unwrap();
    doc["lookups"]["employees"]["newbie"] = serde_json::json!({"uid": "newbie", "full_name": "New Bie", "email": "newbie@example.com", "slack_uid": "U77NEWBIE"});
    doc["indexes"]["membership"]["membership_index"]["newbie"] =
        serde_json::json!([{"name": "Test Platform", "type": "team"}]);
    serde_json::to_vec(&doc).unwrap()
}

#[tokio::test]
async fn loads_from_gcs_with_a_bearer_token() {
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let org = OrgData::new(gcs_source(&gcs, TOKEN));
    assert!(org.current().is_none(), "nothing before the first load");

    let out = org.reload().await.unwrap();
    assert_eq!(out.stats.people, 13);
    assert_eq!(out.bytes, fixture_bytes().len());
    assert_eq!(gcs.media_downloads(), 1);
    let idx = org.current().unwrap();
    assert!(idx.is_member("U01JDOE", None, "Hybrid Platforms"));
    let st = org.status();
    assert!(st.loaded);
    assert_eq!(st.people, 13);
    assert_eq!(
        st.source,
        "gs://my-org-data-bucket/orgdata/comprehensive_index_dump.json"
    );
}

#[tokio::test]
async fn wrong_token_is_refused_and_reported() {
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let org = OrgData::new(gcs_source(&gcs, "ya29.someone-elses-token"));
    let err = org.reload().await.unwrap_err();
    match &err {
        LoadError::Http {
            status, message, ..
        } => {
            assert_eq!(*status, 401);
            assert_eq!(message, "Invalid Credentials");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    assert!(
        !err.to_string().contains("someone-elses"),
        "the token never appears in errors: {err}"
    );
    assert!(org.current().is_none());
    assert_eq!(gcs.request_count(), 1);
    assert_eq!(gcs.media_downloads(), 0);
}

#[tokio::test]
async fn missing_object_and_bucket_are_404s_with_googles_message() {
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.create_bucket(BUCKET);
    let org = OrgData::new(gcs_source(&gcs, TOKEN));
    let err = org.reload().await.unwrap_err();
    assert!(
        matches!(&err, LoadError::Http { status: 404, message, .. } if message == "No such object: my-org-data-bucket/orgdata/comprehensive_index_dump.json"),
        "{err:?}"
    );

    let other = OrgData::new(OrgDataSource::Gcs(GcsObject {
        base_url: gcs.base_url(),
        bucket: "no-such-bucket".into(),
        object: OBJECT.into(),
        tokens: Arc::new(StaticToken(TOKEN.into())),
    }));
    let err = other.reload().await.unwrap_err();
    assert!(
        matches!(&err, LoadError::Http { status: 404, message, .. } if message.contains("bucket does not exist")),
        "{err:?}"
    );
}

#[tokio::test]
async fn broken_reload_keeps_the_previous_index_and_counts_the_failure() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let org = OrgData::new(gcs_source(&gcs, TOKEN));
    org.reload().await.unwrap();
    let first = org.current().unwrap();
    assert_eq!(recorder.value(METRIC_RELOADS), 1.0);
    assert_eq!(recorder.gauge(METRIC_PEOPLE), Some(13.0));
    assert_eq!(recorder.value(METRIC_RELOAD_FAILURES), 0.0);

    // Garbage bytes with a 200: a parse failure.
    gcs.set_mode(GcsMode::Garbage);
    let err = org.reload().await.unwrap_err();
    assert!(matches!(err, LoadError::Parse { .. }), "{err:?}");
    assert!(
        Arc::ptr_eq(&first, &org.current().unwrap()),
        "the old index stays in use"
    );
    assert!(
        org.current()
            .unwrap()
            .is_member("U01JDOE", None, "Hybrid Platforms")
    );
    assert_eq!(recorder.value(METRIC_RELOAD_FAILURES), 1.0);

    // An outage: 503.
    gcs.set_mode(GcsMode::Unavailable);
    let err = org.reload().await.unwrap_err();
    assert!(
        matches!(err, LoadError::Http { status: 503, .. }),
        "{err:?}"
    );
    assert!(Arc::ptr_eq(&first, &org.current().unwrap()));
    assert_eq!(recorder.value(METRIC_RELOAD_FAILURES), 2.0);
    let st = org.status();
    assert_eq!(st.failures, 2);
    assert!(st.last_error.as_deref().unwrap().contains("503"), "{st:?}");
    assert_eq!(
        recorder.gauge(METRIC_PEOPLE),
        Some(13.0),
        "the gauge still describes the index in use"
    );

    // Valid JSON that is not an index (an emptied object) is refused too.
    gcs.set_mode(GcsMode::Normal);
    gcs.put_object(BUCKET, OBJECT, b"{}".to_vec());
    assert!(org.reload().await.is_err());
    assert_eq!(recorder.value(METRIC_RELOAD_FAILURES), 3.0);

    // Recovery: a new dump replaces the index; readers holding the old one keep it intact.
    gcs.put_object(BUCKET, OBJECT, fixture_plus_newcomer());
    let out = org.reload().await.unwrap();
    assert_eq!(out.stats.people, 14);
    assert!(
        org.current()
            .unwrap()
            .is_member("U77NEWBIE", None, "Hybrid Platforms")
    );
    assert!(!first.is_member("U77NEWBIE", None, "Hybrid Platforms"));
    assert_eq!(recorder.gauge(METRIC_PEOPLE), Some(14.0));
    assert_eq!(org.status().last_error, None);
}

#[tokio::test]
async fn loads_from_a_file_and_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dump.json");
    std::fs::write(&path, fixture_bytes()).unwrap();
    let org = OrgData::new(OrgDataSource::File(path.clone()));
    assert_eq!(org.reload().await.unwrap().stats.people, 13);
    std::fs::write(&path, fixture_plus_newcomer()).unwrap();
    assert_eq!(org.reload().await.unwrap().stats.people, 14);
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        org.reload().await.unwrap_err(),
        LoadError::Io { .. }
    ));
    assert_eq!(org.current().unwrap().len(), 14);

    // A plain URL: here the fake GCS media link, with its token in a query the way a signed URL
    // carries credentials; the fake wants a header, so this is refused, and the query is not echoed.
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let url = format!(
        "{}/storage/v1/b/{BUCKET}/o/orgdata%2Fcomprehensive_index_dump.json?alt=media&X-Goog-Signature=secret",
        gcs.base_url()
    );
    let org = OrgData::new(OrgDataSource::Url(url));
    let err = org.reload().await.unwrap_err();
    assert!(matches!(err, LoadError::Http { status: 401, .. }));
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(!org.status().source.contains("secret"));

    // A URL that serves the dump.
    let server = serve_static(fixture_bytes()).await;
    let org = OrgData::new(OrgDataSource::Url(format!(
        "{server}/comprehensive_index_dump.json"
    )));
    assert_eq!(org.reload().await.unwrap().stats.people, 13);
}

#[tokio::test]
async fn oversized_dumps_are_refused() {
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let org = OrgData::with_limits(gcs_source(&gcs, TOKEN), Duration::from_secs(5), 1024);
    assert!(matches!(
        org.reload().await.unwrap_err(),
        LoadError::TooLarge { limit: 1024, .. }
    ));
}

#[tokio::test]
async fn the_reloader_loads_at_once_then_on_schedule_and_stops_with_its_handle() {
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let org = Arc::new(OrgData::new(gcs_source(&gcs, TOKEN)));
    let handle = org.spawn_reloader(Duration::from_secs(1));
    wait_until(|| org.current().is_some()).await;
    assert_eq!(gcs.media_downloads(), 1, "the first load runs immediately");

    gcs.put_object(BUCKET, OBJECT, fixture_plus_newcomer());
    wait_until(|| org.current().is_some_and(|i| i.len() == 14)).await;
    assert!(handle.is_running());

    // A broken object during scheduled reloads: the index stays.
    gcs.set_mode(GcsMode::Garbage);
    wait_until(|| org.status().failures >= 1).await;
    assert_eq!(org.current().unwrap().len(), 14);

    handle.stop();
    gcs.set_mode(GcsMode::Normal);
    let before = gcs.request_count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gcs.request_count(), before, "no reloads after stop");
}

#[tokio::test]
async fn lookups_do_not_wait_for_a_reload() {
    // A reload is parsing a large dump while lookups keep answering from the old index.
    let gcs = FakeGcs::start(TOKEN).await;
    gcs.put_object(BUCKET, OBJECT, fixture_bytes());
    let org = Arc::new(OrgData::new(gcs_source(&gcs, TOKEN)));
    org.reload().await.unwrap();
    gcs.put_object(BUCKET, OBJECT, big_dump(60_000));
    let reloading = tokio::spawn({
        let org = Arc::clone(&org);
        async move { org.reload().await.map(|o| o.stats.people) }
    });
    let mut answered = 0u64;
    let started = std::time::Instant::now();
    while !reloading.is_finished() {
        let t = std::time::Instant::now();
        assert_eq!(
            org.with_index(|i| i.is_member("U01JDOE", None, "Hybrid Platforms")),
            Some(true)
        );
        // Generous: a lookup that waited for the reload would wait for the whole parse; on a
        // loaded 2-core machine a descheduled task alone can take 100 ms.
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a lookup waited {:?}",
            t.elapsed()
        );
        answered += 1;
        tokio::task::yield_now().await;
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    assert_eq!(reloading.await.unwrap().unwrap(), 60_000);
    assert!(answered > 0);
}

fn big_dump(n: usize) -> Vec<u8> {
    let mut employees = serde_json::Map::new();
    let mut membership = serde_json::Map::new();
    for i in 0..n {
        let uid = format!("u{i}");
        employees.insert(uid.clone(), serde_json::json!({"uid": uid, "email": format!("{uid}@example.com"), "slack_uid": format!("U{i:08}")}));
        membership.insert(uid, serde_json::json!([{"name": "t", "type": "team"}]));
    }
    serde_json::to_vec(&serde_json::json!({
        "lookups": {"employees": employees, "teams": {"t": {"parent": {"name": "o", "type": "org"}}}, "orgs": {"o": {}}},
        "indexes": {"membership": {"membership_index": membership}}
    }))
    .unwrap()
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny static file server for the URL source.
async fn serve_static(body: Vec<u8>) -> String {
    let body = Arc::new(body);
    let app = axum::Router::new().route(
        "/comprehensive_index_dump.json",
        axum::routing::get(move || {
            let body = Arc::clone(&body);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body.as_ref().clone(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}
