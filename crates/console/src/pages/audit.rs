//! The audit trail: the filtered list, the chain verification and the CSV export.

use super::*;

#[derive(Debug, Deserialize, Default, serde::Serialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    format: String,
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, String> {
        let kind = match self.kind.as_str() {
            "" => None,
            k => Some(AuditKind::parse(k).ok_or_else(|| format!("unknown kind '{k}'"))?),
        };
        let resource = match self.resource.as_str() {
            "" => None,
            r => Some(ResourceId::parse(r).map_err(|e| e.to_string())?),
        };
        let day = |raw: &str, what: &str| -> Result<Option<DateTime<Utc>>, String> {
            if raw.is_empty() {
                return Ok(None);
            }
            parse_day(raw)
                .map(Some)
                .ok_or_else(|| format!("{what} must be a date (YYYY-MM-DD), got '{raw}'"))
        };
        Ok(AuditFilter {
            after_seq: self.after,
            since: day(&self.since, "From")?,
            until: day(&self.until, "To")?.map(|t| t + chrono::Duration::days(1)),
            kind,
            resource,
            subject: Some(self.subject.trim().to_string()).filter(|s| !s.is_empty()),
            request_id: None,
            limit: Some(PAGE),
        })
    }

    fn url(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("kind", self.kind.as_str()),
            ("resource", self.resource.as_str()),
            ("subject", self.subject.as_str()),
            ("since", self.since.as_str()),
            ("until", self.until.as_str()),
        ];
        pairs.extend_from_slice(extra);
        format!("{path}{}", query_string(&pairs))
    }
}

fn audit_row(e: &AuditEvent) -> Value {
    minijinja::context! {
        seq => e.seq,
        at => e.record.at.format("%Y-%m-%d %H:%M:%S").to_string(),
        kind => e.record.kind.as_str(),
        actor => e.record.actor.id(),
        subject => e.record.subject.clone().unwrap_or_default(),
        resource => e.record.resource.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        details => e.record.details.to_string(),
    }
}

/// The audit trail spans every workspace: only an all-workspace identity reads it.
fn audit_refusal(s: &ConsoleState, session: &Session) -> Option<Response> {
    if session.identity.scope == Scope::All {
        None
    } else {
        Some(refusal(
            s,
            session,
            StatusCode::FORBIDDEN,
            "The audit trail covers every workspace: sign in with the admin token to read it."
                .into(),
            "/console/pending",
        ))
    }
}

pub(super) async fn audit(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> Response {
    audit_page(&s, &session, q, None).await
}

async fn audit_page(
    s: &ConsoleState,
    session: &Session,
    q: AuditQuery,
    verification: Option<access_core::audit::ChainVerification>,
) -> Response {
    if let Some(r) = audit_refusal(s, session) {
        return r;
    }
    let (rows, error) = match q.filter() {
        Ok(f) => match s.engine.audit_events(&f).await {
            Ok(r) => (r, None),
            Err(e) => return store_failure(s, session, e),
        },
        Err(e) => (Vec::new(), Some(e)),
    };
    let next = (rows.len() as u32 == PAGE)
        .then(|| rows.last())
        .flatten()
        .map(|e| q.url("/console/audit", &[("after", &e.seq.to_string())]));
    let ctx = merge(
        page_ctx(session, "audit", None, error),
        minijinja::context! {
            rows => rows.iter().map(audit_row).collect::<Vec<_>>(),
            next => next,
            f => ser(&q),
            kinds => AuditKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            resources => s.engine.resources().iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
            csv_url => q.url("/console/audit/export", &[("format", "csv")]),
            jsonl_url => q.url("/console/audit/export", &[("format", "jsonl")]),
            verification => verification.map(|v| ser(&v)),
        },
    );
    render(s, "audit.html", ctx)
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct VerifyForm {
    #[serde(default)]
    full: Option<String>,
}

pub(super) async fn verify(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    axum::Form(f): axum::Form<VerifyForm>,
) -> Response {
    if let Some(r) = audit_refusal(&s, &session) {
        return r;
    }
    let walk = if f.full.as_deref() == Some("true") {
        ChainWalk::Full
    } else {
        ChainWalk::FromCheckpoint
    };
    match s.engine.verify_audit_chain(walk).await {
        Ok(v) => audit_page(&s, &session, AuditQuery::default(), Some(v)).await,
        Err(e) => store_failure(&s, &session, e),
    }
}

/// A CSV cell: quoted, quotes doubled; a cell a spreadsheet would run as a formula gets a
/// leading apostrophe (the JSONL download is the exact record).
fn csv_cell(out: &mut String, v: &str) {
    out.push('"');
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    out.push_str(&v.replace('"', "\"\""));
    out.push('"');
}

/// Every matching event (not one page), read 1,000 at a time by sequence number.
pub(super) async fn audit_export(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Some(r) = audit_refusal(&s, &session) {
        return r;
    }
    let csv = match q.format.as_str() {
        "csv" => true,
        "jsonl" => false,
        other => {
            return refusal(
                &s,
                &session,
                StatusCode::BAD_REQUEST,
                format!("format must be csv or jsonl, got '{other}'"),
                "/console/audit",
            );
        }
    };
    let mut filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return refusal(&s, &session, StatusCode::BAD_REQUEST, e, "/console/audit"),
    };
    filter.limit = Some(1000);
    let mut out = String::new();
    if csv {
        out.push_str(
            "seq,id,at,kind,actor,subject,resource,request_id,grant_id,details,prev_hash,hash\n",
        );
    }
    loop {
        let page = match s.engine.audit_events(&filter).await {
            Ok(p) => p,
            Err(e) => return store_failure(&s, &session, e),
        };
        for e in &page {
            if csv {
                let cells = e.csv_cells();
                for (i, c) in cells.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    csv_cell(&mut out, c);
                }
                out.push('\n');
            } else {
                match serde_json::to_string(e) {
                    Ok(line) => {
                        out.push_str(&line);
                        out.push('\n');
                    }
                    Err(err) => return store_failure(&s, &session, err),
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    let (kind, name) = if csv {
        ("text/csv; charset=utf-8", "gatehouse-audit.csv")
    } else {
        ("application/x-ndjson", "gatehouse-audit.jsonl")
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out,
    )
        .into_response()
}
