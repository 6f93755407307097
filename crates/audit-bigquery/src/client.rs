//! A small BigQuery v2 REST client: the five calls the sink needs, nothing else.

use std::fmt;
use std::sync::Arc;

use gcp_auth::AccessTokenSource;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::config::BigQueryConfig;
use crate::error::{ApiError, BigQueryError};

/// Row-level errors of one `insertAll` answer (HTTP 200).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InsertAllResponse {
    #[serde(default, rename = "insertErrors", deserialize_with = "null_as_default")]
    pub insert_errors: Vec<RowErrors>,
}

/// The errors of the row at `index` in the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RowErrors {
    #[serde(default)]
    pub index: usize,
    #[serde(default, deserialize_with = "null_as_default")]
    pub errors: Vec<ErrorProto>,
}

/// Google's `ErrorProto`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorProto {
    #[serde(default, deserialize_with = "null_as_default")]
    pub reason: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub location: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

impl fmt::Display for ErrorProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.location.is_empty(), self.message.is_empty()) {
            (true, true) => write!(f, "{}", self.reason),
            (true, false) => write!(f, "{}: {}", self.reason, self.message),
            (false, _) => write!(f, "{} at {}: {}", self.reason, self.location, self.message),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Whether `tables.insert` / `datasets.insert` made something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyExisted,
}

/// The REST client. Cheap to clone.
#[derive(Clone)]
pub struct BigQueryClient {
    http: reqwest::Client,
    root: String,
    token: Arc<dyn AccessTokenSource>,
}

impl fmt::Debug for BigQueryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BigQueryClient")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl BigQueryClient {
    pub fn new(
        config: &BigQueryConfig,
        token: Arc<dyn AccessTokenSource>,
    ) -> Result<Self, BigQueryError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!(
                "gatehouse-audit-bigquery/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| BigQueryError::Config(format!("http client: {e}")))?;
        Ok(Self {
            http,
            root: config.api_root(),
            token,
        })
    }

    fn table_url(&self, project: &str, dataset: &str, table: &str) -> String {
        format!(
            "{}/projects/{project}/datasets/{dataset}/tables/{table}",
            self.root
        )
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Vec<u8>, BigQueryError> {
        let token = self.token.token().await.map_err(BigQueryError::Auth)?;
        let resp = rb.bearer_auth(token).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(body.to_vec());
        }
        Err(BigQueryError::Api(api_error(status, &body)))
    }

    /// `tabledata.insertAll` with a body already serialised (the sink builds it row by row to
    /// respect the size limit without serialising twice).
    pub async fn insert_all_raw(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        body: String,
    ) -> Result<InsertAllResponse, BigQueryError> {
        let url = format!("{}/insertAll", self.table_url(project, dataset, table));
        let rb = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        let body = self.send(rb).await?;
        serde_json::from_slice(&body).map_err(|e| BigQueryError::decode("insertAll response", e))
    }

    /// `tabledata.list`: every row of a table in storage order, each as its cells in schema
    /// order (BigQuery sends scalars as strings), following `pageToken` until the end.
    pub async fn list_rows(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
    ) -> Result<Vec<Vec<Option<String>>>, BigQueryError> {
        #[derive(serde::Deserialize)]
        struct Cell {
            v: Option<serde_json::Value>,
        }
        #[derive(serde::Deserialize)]
        struct Row {
            f: Vec<Cell>,
        }
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            rows: Option<Vec<Row>>,
            #[serde(rename = "pageToken")]
            page_token: Option<String>,
        }
        let url = format!("{}/data", self.table_url(project, dataset, table));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = vec![("maxResults", "10000".to_string())];
            if let Some(t) = &token {
                q.push(("pageToken", t.clone()));
            }
            let body = self.send(self.http.get(&url).query(&q)).await?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| BigQueryError::decode("tabledata.list response", e))?;
            for r in page.rows.unwrap_or_default() {
                out.push(
                    r.f.into_iter()
                        .map(|c| match c.v {
                            None | Some(serde_json::Value::Null) => None,
                            Some(serde_json::Value::String(s)) => Some(s),
                            Some(other) => Some(other.to_string()),
                        })
                        .collect(),
                );
            }
            match page.page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// `tables.get`; `None` for 404.
    pub async fn get_table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
    ) -> Result<Option<Value>, BigQueryError> {
        match self
            .send(self.http.get(self.table_url(project, dataset, table)))
            .await
        {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| BigQueryError::decode("table", e)),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `tables.insert`; an existing table (409) is not an error.
    pub async fn insert_table(
        &self,
        project: &str,
        dataset: &str,
        resource: &Value,
    ) -> Result<Created, BigQueryError> {
        let url = format!("{}/projects/{project}/datasets/{dataset}/tables", self.root);
        match self.send(self.http.post(url).json(resource)).await {
            Ok(_) => Ok(Created::Created),
            Err(e) if e.is_status(409) => Ok(Created::AlreadyExisted),
            Err(e) => Err(e),
        }
    }

    /// `datasets.get`; `None` for 404.
    pub async fn get_dataset(
        &self,
        project: &str,
        dataset: &str,
    ) -> Result<Option<Value>, BigQueryError> {
        let url = format!("{}/projects/{project}/datasets/{dataset}", self.root);
        match self.send(self.http.get(url)).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| BigQueryError::decode("dataset", e)),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `datasets.insert` in `location` (`US`, `EU`, `europe-west1`, …); 409 is not an error.
    pub async fn insert_dataset(
        &self,
        project: &str,
        dataset: &str,
        location: &str,
    ) -> Result<Created, BigQueryError> {
        let url = format!("{}/projects/{project}/datasets", self.root);
        let body = serde_json::json!({
            "datasetReference": {"projectId": project, "datasetId": dataset},
            "location": location,
        });
        match self.send(self.http.post(url).json(&body)).await {
            Ok(_) => Ok(Created::Created),
            Err(e) if e.is_status(409) => Ok(Created::AlreadyExisted),
            Err(e) => Err(e),
        }
    }
}

fn transport(e: reqwest::Error) -> BigQueryError {
    // reqwest's message names the URL, never the headers, so the token cannot leak through it.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    BigQueryError::Transport { kind, source: e }
}

/// Reads Google's envelope `{"error": {"code", "message", "status", "errors": [{"reason"}]}}`;
/// anything else (an HTML page from a proxy) is kept as a short excerpt.
fn api_error(status: u16, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, deserialize_with = "null_as_default")]
        message: String,
        #[serde(default, deserialize_with = "null_as_default")]
        status: String,
        #[serde(default, deserialize_with = "null_as_default")]
        errors: Vec<ErrorProto>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => {
            let reason = env
                .error
                .errors
                .iter()
                .map(|e| e.reason.clone())
                .find(|r| !r.is_empty())
                .unwrap_or(env.error.status);
            ApiError {
                status,
                reason,
                message: env.error.message,
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            ApiError {
                status,
                reason: String::new(),
                message: excerpt,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelope_and_html_errors() {
        let e = api_error(
            403,
            br#"{"error":{"code":403,"message":"Exceeded rate limits","errors":[{"message":"x","domain":"global","reason":"rateLimitExceeded"}],"status":"PERMISSION_DENIED"}}"#,
        );
        assert_eq!(e.reason, "rateLimitExceeded");
        assert!(BigQueryError::Api(e).is_transient());

        let e = api_error(
            404,
            br#"{"error":{"code":404,"message":"Not found: Table p:d.t","status":"NOT_FOUND"}}"#,
        );
        assert_eq!(e.reason, "NOT_FOUND");
        assert!(!BigQueryError::Api(e).is_transient());

        let e = api_error(502, b"<html><body>Bad Gateway</body></html>");
        assert_eq!(e.reason, "");
        assert!(e.message.contains("Bad Gateway"));
        assert!(BigQueryError::Api(e).is_transient());
    }

    #[test]
    fn insert_all_response_tolerates_nulls() {
        let r: InsertAllResponse =
            serde_json::from_str(r#"{"kind":"bigquery#tableDataInsertAllResponse"}"#).unwrap();
        assert!(r.insert_errors.is_empty());
        let r: InsertAllResponse = serde_json::from_str(r#"{"insertErrors":null}"#).unwrap();
        assert!(r.insert_errors.is_empty());
        let r: InsertAllResponse = serde_json::from_str(
            r#"{"insertErrors":[{"index":3,"errors":[{"reason":"invalid","location":"ts","debugInfo":null,"message":"bad"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.insert_errors[0].index, 3);
        assert_eq!(
            r.insert_errors[0].errors[0].to_string(),
            "invalid at ts: bad"
        );
    }
}
