//! Who is signed in: console identities, signed session cookies, CSRF tokens.
//!
//! A session is a cookie `v1.<fingerprint>.<expiry>.<nonce>.<mac>`: the MAC (HMAC-SHA256 under
//! the server's session key *and* the signing-in token) covers everything before it, so a cookie
//! cannot be forged or extended, and changing or removing a token ends every session it opened.
//! Nothing is stored server-side, so every replica accepts every session (they share the key).
//! The CSRF token of a session is an HMAC of its nonce: it cannot be computed without the key and
//! is different for every session.

use std::fmt;
use std::sync::Arc;

use access_core::Actor;
use access_core::subject::SubjectKey;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The cookie holding the session.
pub const SESSION_COOKIE: &str = "gatehouse_console";
/// The cookie holding the sign-in form's CSRF nonce (before there is a session).
pub const LOGIN_COOKIE: &str = "gatehouse_console_login";

/// What a signed-in user may see and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every workspace (the admin token).
    All,
    /// One Slack team (or Enterprise Grid organisation): its people's requests and grants, its
    /// installation.
    Workspace(String),
}

impl Scope {
    pub fn team(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Workspace(t) => Some(t),
        }
    }

    /// Whether something belonging to `team_id` is visible in this scope.
    pub fn covers(&self, team_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Workspace(t) => t == team_id,
        }
    }
}

/// A token that opens the console, and who it speaks for.
#[derive(Clone)]
pub struct ConsoleIdentity {
    token: Arc<str>,
    /// Recorded as approver, denier, revoker: never typed into a form.
    pub actor: Actor,
    pub scope: Scope,
}

impl fmt::Debug for ConsoleIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleIdentity")
            .field("token", &"<redacted>")
            .field("actor", &self.actor)
            .field("scope", &self.scope)
            .finish()
    }
}

impl ConsoleIdentity {
    pub fn new(token: impl Into<Arc<str>>, actor: Actor, scope: Scope) -> Self {
        Self {
            token: token.into(),
            actor,
            scope,
        }
    }

    /// Short public name of the token (first 16 hex digits of its SHA-256): which identity a
    /// cookie belongs to, without the cookie holding anything secret.
    fn fingerprint(&self) -> String {
        let d = Sha256::digest(self.token.as_bytes());
        hex::encode(&d[..8])
    }

    pub fn display(&self) -> String {
        match &self.actor {
            Actor::Admin { name } => format!("admin {name}"),
            Actor::User {
                team_id, user_id, ..
            } => SubjectKey::new(team_id, user_id).to_string(),
            Actor::System => "system".into(),
        }
    }
}

/// The console's identities and session key.
#[derive(Clone)]
pub struct Auth {
    identities: Arc<Vec<ConsoleIdentity>>,
    key: Arc<[u8; 32]>,
    pub session_ttl: chrono::Duration,
    /// `Secure` on every cookie, whatever the request looked like (set behind TLS terminators that
    /// do not send `X-Forwarded-Proto`).
    pub force_secure: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("identities", &self.identities)
            .field("key", &"<redacted>")
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

/// A valid session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: ConsoleIdentity,
    pub expires_at: DateTime<Utc>,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl Auth {
    /// `key_material`: `GATEHOUSE_CONSOLE_SESSION_KEY` when set; otherwise the tokens themselves
    /// (so replicas configured alike agree without another secret).
    pub fn new(
        identities: Vec<ConsoleIdentity>,
        key_material: Option<&str>,
        session_ttl: chrono::Duration,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(b"gatehouse-console-session-key-v1\0");
        match key_material {
            Some(k) => h.update(k.as_bytes()),
            None => {
                for i in &identities {
                    h.update(i.token.as_bytes());
                    h.update(b"\0");
                }
            }
        }
        Self {
            identities: Arc::new(identities),
            key: Arc::new(h.finalize().into()),
            session_ttl,
            force_secure: false,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.identities.is_empty()
    }

    /// The identity whose token is `given`; every token is compared (in constant time), so the
    /// time taken does not say which one matched or how much of it.
    pub fn identify(&self, given: &str) -> Option<ConsoleIdentity> {
        let mut found = None;
        for i in self.identities.iter() {
            let eq: bool = given.as_bytes().ct_eq(i.token.as_bytes()).into();
            if eq && !given.is_empty() && found.is_none() {
                found = Some(i.clone());
            }
        }
        found
    }

    fn mac(&self, identity: &ConsoleIdentity, parts: &[&str]) -> Option<String> {
        let mut m = HmacSha256::new_from_slice(self.key.as_slice()).ok()?;
        m.update(identity.token.as_bytes());
        m.update(b"\0");
        for p in parts {
            m.update(p.as_bytes());
            m.update(b".");
        }
        Some(hex::encode(m.finalize().into_bytes()))
    }

    fn csrf_for(&self, nonce: &str) -> Option<String> {
        let mut m = HmacSha256::new_from_slice(self.key.as_slice()).ok()?;
        m.update(b"csrf\0");
        m.update(nonce.as_bytes());
        Some(hex::encode(m.finalize().into_bytes()))
    }

    /// A new session cookie value for `identity`, valid until `now + ttl`.
    pub fn issue(&self, identity: &ConsoleIdentity, now: DateTime<Utc>) -> Option<String> {
        let expires = (now + self.session_ttl).timestamp().to_string();
        let nonce = random_hex();
        let fp = identity.fingerprint();
        let mac = self.mac(identity, &["v1", &fp, &expires, &nonce])?;
        Some(format!("v1.{fp}.{expires}.{nonce}.{mac}"))
    }

    /// The session a cookie value stands for, if it is genuine and unexpired.
    pub fn session(&self, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut parts = cookie.split('.');
        let (v, fp, expires, nonce, mac) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if v != "v1" || parts.next().is_some() {
            return None;
        }
        let identity = self
            .identities
            .iter()
            .find(|i| i.fingerprint() == fp)?
            .clone();
        let expected = self.mac(&identity, &[v, fp, expires, nonce])?;
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let expires_at = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        if expires_at <= now {
            return None;
        }
        Some(Session {
            csrf: self.csrf_for(nonce)?,
            identity,
            expires_at,
        })
    }

    /// A sign-in form's nonce and the CSRF token that goes with it.
    pub fn login_challenge(&self) -> Option<(String, String)> {
        let nonce = random_hex();
        let token = self.csrf_for(&format!("login:{nonce}"))?;
        Some((nonce, token))
    }

    pub fn login_csrf_ok(&self, nonce: &str, given: &str) -> bool {
        match self.csrf_for(&format!("login:{nonce}")) {
            Some(t) => !nonce.is_empty() && bool::from(t.as_bytes().ct_eq(given.as_bytes())),
            None => false,
        }
    }
}

/// Constant-time check of a form's CSRF token against the session's.
pub fn csrf_matches(session: &Session, given: &str) -> bool {
    !given.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(given.as_bytes()))
}

/// 256 random bits (two v4 UUIDs: the operating system's CSPRNG), hex.
fn random_hex() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            vec![
                ConsoleIdentity::new(
                    "admin-token",
                    Actor::Admin { name: "ops".into() },
                    Scope::All,
                ),
                ConsoleIdentity::new(
                    "ws-token",
                    Actor::Admin { name: "ws".into() },
                    Scope::Workspace("T1".into()),
                ),
            ],
            None,
            chrono::Duration::hours(1),
        )
    }

    #[test]
    fn a_session_is_accepted_until_it_expires() {
        let a = auth();
        let now = Utc::now();
        let id = a.identify("ws-token").expect("known token");
        let cookie = a.issue(&id, now).expect("issued");
        let s = a.session(&cookie, now).expect("valid");
        assert_eq!(s.identity.scope, Scope::Workspace("T1".into()));
        assert!(
            a.session(&cookie, now + chrono::Duration::minutes(61))
                .is_none()
        );
    }

    #[test]
    fn tampered_cookies_and_unknown_tokens_are_refused() {
        let a = auth();
        let now = Utc::now();
        assert!(a.identify("wrong").is_none());
        assert!(a.identify("").is_none());
        let id = a.identify("admin-token").expect("known token");
        let cookie = a.issue(&id, now).expect("issued");
        // Pushing the expiry forward breaks the MAC.
        let mut parts: Vec<String> = cookie.split('.').map(str::to_string).collect();
        parts[2] = (now + chrono::Duration::days(365)).timestamp().to_string();
        assert!(a.session(&parts.join("."), now).is_none());
        // Another deployment's key (other tokens) does not accept it.
        let other = Auth::new(
            vec![ConsoleIdentity::new(
                "admin-token",
                Actor::Admin { name: "ops".into() },
                Scope::All,
            )],
            Some("another key"),
            chrono::Duration::hours(1),
        );
        assert!(other.session(&cookie, now).is_none());
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_login_tokens_bind_their_nonce() {
        let a = auth();
        let now = Utc::now();
        let id = a.identify("admin-token").expect("known token");
        let s1 = a
            .session(&a.issue(&id, now).expect("issued"), now)
            .expect("valid");
        let s2 = a
            .session(&a.issue(&id, now).expect("issued"), now)
            .expect("valid");
        assert_ne!(s1.csrf, s2.csrf);
        assert!(csrf_matches(&s1, &s1.csrf.clone()));
        assert!(!csrf_matches(&s1, &s2.csrf));
        assert!(!csrf_matches(&s1, ""));
        let (nonce, token) = a.login_challenge().expect("challenge");
        assert!(a.login_csrf_ok(&nonce, &token));
        let (other_nonce, _) = a.login_challenge().expect("challenge");
        assert!(!a.login_csrf_ok(&other_nonce, &token));
    }
}
