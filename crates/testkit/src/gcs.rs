//! A fake Google Cloud Storage JSON API, enough for object reads:
//! `GET /storage/v1/b/{bucket}/o/{object}` with `alt=media` (the bytes) or without (the object's
//! metadata resource), as the real service answers it:
//!
//! - the object name is one path segment, percent-encoded (`orgdata%2Fdump.json`); an unencoded
//!   `/` does not reach the object and answers 404, as on GCS;
//! - `Authorization: Bearer <token>` is required: no header → 401 `required` ("Anonymous caller
//!   does not have storage.objects.get access…"), another token → 401 `authError`
//!   ("Invalid Credentials");
//! - a missing bucket or object → 404 with Google's error envelope (`notFound`);
//! - `x-goog-generation` / `ETag` headers on media downloads; each `put_object` bumps the
//!   generation;
//! - switches to answer 503 `backendError` or to serve garbage bytes (for broken-reload tests),
//!   and a request count.
//!
//! ```no_run
//! # async fn demo() {
//! let gcs = testkit::gcs::FakeGcs::start("test-token").await;
//! gcs.put_object("bucket", "orgdata/comprehensive_index_dump.json", b"{}".to_vec());
//! let url = format!("{}/storage/v1/b/bucket/o/orgdata%2Fcomprehensive_index_dump.json?alt=media", gcs.base_url());
//! # let _ = url; }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// How the fake answers object reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GcsMode {
    #[default]
    Normal,
    /// 503 with Google's `backendError` envelope.
    Unavailable,
    /// 200 with bytes that are not the stored object (a truncated or corrupted upload).
    Garbage,
}

#[derive(Debug, Clone)]
struct StoredObject {
    data: Arc<Vec<u8>>,
    generation: u64,
    content_type: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// bucket → object name → object. A bucket exists once created or written to.
    buckets: HashMap<String, HashMap<String, StoredObject>>,
    mode: GcsMode,
    next_generation: u64,
}

#[derive(Debug)]
struct Shared {
    token: Mutex<String>,
    inner: Mutex<Inner>,
    requests: AtomicU64,
    media_requests: AtomicU64,
}

/// The running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeGcs {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _task: crate::http::ServerTask,
}

impl FakeGcs {
    /// Starts on 127.0.0.1 on a free port, accepting only `Bearer <expected_token>`.
    pub async fn start(expected_token: &str) -> Self {
        let shared = Arc::new(Shared {
            token: Mutex::new(expected_token.to_owned()),
            inner: Mutex::new(Inner {
                next_generation: 1_700_000_000_000_000,
                ..Default::default()
            }),
            requests: AtomicU64::new(0),
            media_requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/storage/v1/b/{bucket}/o/{object}", get(get_object))
            .fallback(not_found_fallback)
            .with_state(Arc::clone(&shared));
        let (addr, task) = crate::http::serve(app, "fake GCS").await;
        Self {
            addr,
            shared,
            _task: task,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for a client's GCS base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, bucket: &str) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .buckets
            .entry(bucket.to_owned())
            .or_default();
    }

    /// Writes (or replaces) an object, creating its bucket; returns the new generation.
    pub fn put_object(&self, bucket: &str, name: &str, data: Vec<u8>) -> u64 {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let obj = StoredObject {
            data: Arc::new(data),
            generation,
            content_type: "application/json".to_owned(),
        };
        inner
            .buckets
            .entry(bucket.to_owned())
            .or_default()
            .insert(name.to_owned(), obj);
        generation
    }

    pub fn delete_object(&self, bucket: &str, name: &str) -> bool {
        let mut inner = self.shared.inner.lock().unwrap();
        inner
            .buckets
            .get_mut(bucket)
            .is_some_and(|b| b.remove(name).is_some())
    }

    pub fn set_mode(&self, mode: GcsMode) {
        self.shared.inner.lock().unwrap().mode = mode;
    }

    /// Changes the accepted token (a rotated credential).
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = token.to_owned();
    }

    /// Every request that reached the object route, whatever its answer.
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Authorised `alt=media` downloads that returned 200.
    pub fn media_downloads(&self) -> u64 {
        self.shared.media_requests.load(Ordering::SeqCst)
    }
}

fn google_error(
    status: StatusCode,
    message: &str,
    reason: &str,
    extra: Option<(&str, &str)>,
) -> Response {
    let mut err = json!({"message": message, "domain": "global", "reason": reason});
    if let Some((location_type, location)) = extra {
        err["locationType"] = json!(location_type);
        err["location"] = json!(location);
    }
    let body = json!({"error": {"code": status.as_u16(), "message": message, "errors": [err]}});
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

async fn not_found_fallback() -> Response {
    google_error(StatusCode::NOT_FOUND, "Not Found", "notFound", None)
}

async fn get_object(
    State(shared): State<Arc<Shared>>,
    Path((bucket, object)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if let Err(refused) = authenticate(&shared, &headers) {
        return refused;
    }
    let (mode, obj) = match stored_object(&shared, &bucket, &object) {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    if query.get("alt").map(String::as_str) != Some("media") {
        return metadata(&bucket, &object, &obj);
    }
    shared.media_requests.fetch_add(1, Ordering::SeqCst);
    media(mode, &obj)
}

/// 401 unless the call carries `Bearer <the accepted token>`.
// A test fake answering one request at a time: the size of the error response does not matter.
#[allow(clippy::result_large_err)]
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let expected = shared.token.lock().unwrap().clone();
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        None => Err(google_error(
            StatusCode::UNAUTHORIZED,
            "Anonymous caller does not have storage.objects.get access to the Google Cloud Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist).",
            "required",
            Some(("header", "Authorization")),
        )),
        Some(v) if v.strip_prefix("Bearer ").is_none_or(|t| t != expected) => {
            let mut resp = google_error(
                StatusCode::UNAUTHORIZED,
                "Invalid Credentials",
                "authError",
                Some(("header", "Authorization")),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
            Err(resp)
        }
        Some(_) => Ok(()),
    }
}

/// The fake's mode and the object, or the 503 / 404 the call gets instead.
#[allow(clippy::result_large_err)]
fn stored_object(
    shared: &Shared,
    bucket: &str,
    object: &str,
) -> Result<(GcsMode, StoredObject), Response> {
    let (mode, found) = {
        let inner = shared.inner.lock().unwrap();
        let found = inner.buckets.get(bucket).map(|b| b.get(object).cloned());
        (inner.mode, found)
    };
    if mode == GcsMode::Unavailable {
        return Err(google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "We encountered an internal error. Please try again.",
            "backendError",
            None,
        ));
    }
    match found {
        None => Err(google_error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
            "notFound",
            None,
        )),
        Some(None) => Err(google_error(
            StatusCode::NOT_FOUND,
            &format!("No such object: {bucket}/{object}"),
            "notFound",
            None,
        )),
        Some(Some(o)) => Ok((mode, o)),
    }
}

/// The object resource (metadata), as `objects.get` without alt=media returns it.
fn metadata(bucket: &str, object: &str, obj: &StoredObject) -> Response {
    let body = json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{object}/{}", obj.generation),
        "selfLink": format!("https://www.googleapis.com/storage/v1/b/{bucket}/o/{}", object.replace('/', "%2F")),
        "name": object,
        "bucket": bucket,
        "generation": obj.generation.to_string(),
        "metageneration": "1",
        "contentType": obj.content_type,
        "storageClass": "STANDARD",
        "size": obj.data.len().to_string(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The object's bytes (or garbage in that mode) with GCS's download headers.
fn media(mode: GcsMode, obj: &StoredObject) -> Response {
    let data: Vec<u8> = match mode {
        GcsMode::Garbage => b"\x00\x1f<html><body>Garbage</b".to_vec(),
        _ => obj.data.as_ref().clone(),
    };
    let mut resp = (StatusCode::OK, data).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&obj.content_type).unwrap(),
    );
    h.insert("x-goog-generation", HeaderValue::from(obj.generation));
    h.insert("x-goog-metageneration", HeaderValue::from_static("1"));
    h.insert("x-goog-storage-class", HeaderValue::from_static("STANDARD"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{:x}\"", obj.generation)).unwrap(),
    );
    resp
}
