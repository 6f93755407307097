//! A small client for the handful of IAM v1 and Cloud Resource Manager v1 endpoints Gatehouse
//! uses (`external-apis.md` B.2, B.3). Unknown policy fields (`auditConfigs`, a condition's
//! `location`, whatever Google adds next) are kept verbatim so a read-modify-write never drops
//! them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use gcp_auth::{AccessTokenSource, AuthError};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::GcpError;
use crate::retry;

pub const DEFAULT_IAM_URL: &str = "https://iam.googleapis.com";
pub const DEFAULT_CRM_URL: &str = "https://cloudresourcemanager.googleapis.com";

/// A project IAM policy (Resource Manager v1 `Policy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// `auditConfigs` and any other field: round-tripped untouched.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An IAM condition (`google.type.Expr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expr {
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub expression: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceAccount {
    pub name: String,
    pub project_id: String,
    pub unique_id: String,
    pub email: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
}

/// A key as listings show it (never with private material).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyInfo {
    pub name: String,
    pub valid_after_time: Option<String>,
    pub key_type: Option<String>,
}

impl KeyInfo {
    /// The key id (last path segment of `name`).
    pub fn id(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// A freshly created key: the only time Google hands out the private part.
pub struct CreatedKey {
    pub name: String,
    /// The key file JSON (decoded `privateKeyData`).
    pub key_file: Vec<u8>,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("name", &self.name)
            .field(
                "key_file",
                &format_args!("<{} bytes redacted>", self.key_file.len()),
            )
            .finish()
    }
}

/// The IAM + Resource Manager client.
#[derive(Clone)]
pub struct GcpClient {
    http: reqwest::Client,
    iam: Url,
    crm: Url,
    tokens: Arc<dyn AccessTokenSource>,
}

impl fmt::Debug for GcpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpClient")
            .field("iam", &self.iam.as_str())
            .field("crm", &self.crm.as_str())
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl GcpClient {
    pub fn new(
        tokens: Arc<dyn AccessTokenSource>,
        iam_url: &str,
        crm_url: &str,
    ) -> Result<Self, GcpError> {
        let parse = |u: &str| {
            Url::parse(u.trim_end_matches('/'))
                .map_err(|e| GcpError::InvalidArgument(format!("bad base URL {u:?}: {e}")))
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!(
                "gatehouse-provider-gcp-iam/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| GcpError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            iam: parse(iam_url)?,
            crm: parse(crm_url)?,
            tokens,
        })
    }

    fn url(base: &Url, segments: &[&str]) -> Url {
        let mut u = base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        u
    }

    fn sa_url(&self, project: &str, sa: &str, rest: &[&str]) -> Url {
        let mut segs = vec!["v1", "projects", project, "serviceAccounts", sa];
        segs.extend_from_slice(rest);
        Self::url(&self.iam, &segs)
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value, GcpError> {
        let attempts = if idempotent {
            retry::API_CALL.max_attempts
        } else {
            1
        };
        let mut n = 0;
        loop {
            n += 1;
            match self.call_once(method.clone(), url.clone(), body).await {
                Err(e)
                    if e.is_transient() && !matches!(e, GcpError::Aborted(_)) && n < attempts =>
                {
                    let wait = retry::API_CALL.jittered(n);
                    tracing::debug!(%url, error = %e, attempt = n, "retrying Google API call");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, GcpError> {
        let token = self.tokens.token().await.map_err(|e| match e {
            AuthError::Token(m) => GcpError::Unavailable(format!("token endpoint: {m}")),
            other => GcpError::Unauthenticated(other.to_string()),
        })?;
        let mut req = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| GcpError::Unavailable(format!("request failed: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GcpError::Unavailable(format!("reading response: {e}")))?;
        if !status.is_success() {
            return Err(GcpError::from_response(status.as_u16(), &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(&bytes).map_err(|e| GcpError::Other {
            code: status.as_u16(),
            status: "UNDECODABLE".into(),
            message: format!("response is not JSON: {e}"),
        })
    }

    fn decode<T: for<'de> Deserialize<'de>>(v: Value, what: &str) -> Result<T, GcpError> {
        serde_json::from_value(v).map_err(|e| GcpError::Other {
            code: 200,
            status: "UNDECODABLE".into(),
            message: format!("unexpected {what}: {e}"),
        })
    }

    // --- IAM: service accounts ------------------------------------------------------------

    pub async fn create_service_account(
        &self,
        project: &str,
        account_id: &str,
        display_name: &str,
        description: &str,
    ) -> Result<ServiceAccount, GcpError> {
        let url = Self::url(&self.iam, &["v1", "projects", project, "serviceAccounts"]);
        let body = json!({"accountId": account_id, "serviceAccount": {"displayName": display_name, "description": description}});
        let v = self.call(Method::POST, url, Some(&body), false).await?;
        Self::decode(v, "service account")
    }

    pub async fn get_service_account(
        &self,
        project: &str,
        email: &str,
    ) -> Result<ServiceAccount, GcpError> {
        let v = self
            .call(Method::GET, self.sa_url(project, email, &[]), None, true)
            .await?;
        Self::decode(v, "service account")
    }

    pub async fn delete_service_account(&self, project: &str, email: &str) -> Result<(), GcpError> {
        self.call(Method::DELETE, self.sa_url(project, email, &[]), None, true)
            .await
            .map(|_| ())
    }

    /// Every service account of the project (all pages).
    pub async fn list_service_accounts(
        &self,
        project: &str,
    ) -> Result<Vec<ServiceAccount>, GcpError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            accounts: Vec<ServiceAccount>,
            next_page_token: Option<String>,
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = Self::url(&self.iam, &["v1", "projects", project, "serviceAccounts"]);
            url.query_pairs_mut().append_pair("pageSize", "100");
            if let Some(t) = &token {
                url.query_pairs_mut().append_pair("pageToken", t);
            }
            let page: Page = Self::decode(
                self.call(Method::GET, url, None, true).await?,
                "service account page",
            )?;
            out.extend(page.accounts);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    // --- IAM: keys ------------------------------------------------------------------------

    pub async fn create_key(&self, project: &str, email: &str) -> Result<CreatedKey, GcpError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            name: String,
            private_key_data: String,
        }
        let body = json!({"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyAlgorithm": "KEY_ALG_RSA_2048"});
        let v = self
            .call(
                Method::POST,
                self.sa_url(project, email, &["keys"]),
                Some(&body),
                false,
            )
            .await?;
        let c: Created = Self::decode(v, "created key")?;
        use base64::Engine as _;
        let key_file = base64::engine::general_purpose::STANDARD
            .decode(c.private_key_data.trim())
            .map_err(|_| GcpError::Other {
                code: 200,
                status: "UNDECODABLE".into(),
                message: "privateKeyData is not base64".into(),
            })?;
        Ok(CreatedKey {
            name: c.name,
            key_file,
        })
    }

    /// User-managed keys of an account.
    pub async fn list_user_keys(
        &self,
        project: &str,
        email: &str,
    ) -> Result<Vec<KeyInfo>, GcpError> {
        #[derive(Deserialize)]
        struct Keys {
            #[serde(default)]
            keys: Vec<KeyInfo>,
        }
        let mut url = self.sa_url(project, email, &["keys"]);
        url.query_pairs_mut()
            .append_pair("keyTypes", "USER_MANAGED");
        let k: Keys = Self::decode(self.call(Method::GET, url, None, true).await?, "key list")?;
        // Filter again: the system-managed key must never be a deletion candidate.
        Ok(k.keys
            .into_iter()
            .filter(|k| k.key_type.as_deref().is_none_or(|t| t == "USER_MANAGED"))
            .collect())
    }

    pub async fn delete_key(
        &self,
        project: &str,
        email: &str,
        key_id: &str,
    ) -> Result<(), GcpError> {
        self.call(
            Method::DELETE,
            self.sa_url(project, email, &["keys", key_id]),
            None,
            true,
        )
        .await
        .map(|_| ())
    }

    // --- Resource Manager: project policy -------------------------------------------------

    /// Always asks for version 3: anything less hides conditional bindings behind `_withcond_`
    /// roles, and writing that back loses them.
    pub async fn get_iam_policy(&self, project: &str) -> Result<Policy, GcpError> {
        let url = Self::url(
            &self.crm,
            &["v1", "projects", &format!("{project}:getIamPolicy")],
        );
        let v = self
            .call(
                Method::POST,
                url,
                Some(&json!({"options": {"requestedPolicyVersion": 3}})),
                true,
            )
            .await?;
        Self::decode(v, "policy")
    }

    /// Writes `policy` as read (its etag) with `version: 3`. A stale etag is
    /// [`GcpError::Aborted`]: redo the whole read-modify-write. No update mask: the default
    /// (`bindings,etag`) leaves `auditConfigs` alone.
    pub async fn set_iam_policy(&self, project: &str, policy: &Policy) -> Result<Policy, GcpError> {
        let url = Self::url(
            &self.crm,
            &["v1", "projects", &format!("{project}:setIamPolicy")],
        );
        let mut p = policy.clone();
        p.version = Some(3);
        let body = json!({ "policy": p });
        let v = self.call(Method::POST, url, Some(&body), false).await?;
        Self::decode(v, "policy")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_keep_colons_and_at_signs_literal() {
        let base = Url::parse("https://cloudresourcemanager.googleapis.com").unwrap();
        let u = GcpClient::url(&base, &["v1", "projects", "my-project-123:getIamPolicy"]);
        assert_eq!(
            u.as_str(),
            "https://cloudresourcemanager.googleapis.com/v1/projects/my-project-123:getIamPolicy"
        );
        let iam = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        let u = GcpClient::url(
            &iam,
            &[
                "v1",
                "projects",
                "p",
                "serviceAccounts",
                "a-1@p.iam.gserviceaccount.com",
                "keys",
            ],
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/prefix/v1/projects/p/serviceAccounts/a-1@p.iam.gserviceaccount.com/keys"
        );
    }
}
