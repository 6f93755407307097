//! Requests: the pending list with its approve and deny actions, and the history.

use super::*;

fn request_row(r: &AccessRequest, now: DateTime<Utc>) -> Value {
    minijinja::context! {
        id => r.id.to_string(),
        created_at => r.created_at.to_rfc3339(),
        created_at_short => short(r.created_at),
        person => person(&r.subject),
        resource => r.resource.to_string(),
        kind => match r.kind { RequestKind::New => "new", RequestKind::Extend => "extend" },
        duration => r.duration.to_string(),
        justification => r.justification.to_string(),
        pending_until => r.pending_until.map(|t| t.to_rfc3339()),
        pending_left => r.pending_until.map(|t| left(t, now)),
        status => r.status.as_str(),
        decided_by => actor_name(&r.decided_by),
    }
}

pub(super) async fn pending(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let query = PageQuery {
        status: Some(RequestStatus::Pending),
        team_id: session.identity.scope.team().map(str::to_string),
        before: parse_cursor(q.before.as_deref()),
        limit: PAGE,
        ..PageQuery::default()
    };
    let rows = match s.engine.requests_page(&query).await {
        Ok(r) => r,
        Err(e) => return store_failure(&s, &session, e),
    };
    let now = s.engine.now();
    let next = next_cursor(&rows, |r| (r.created_at, r.id.to_string()))
        .map(|c| format!("/console/pending?before={c}"));
    let ctx = merge(
        page_ctx(&session, "pending", notice_for(q.ok.as_deref()), None),
        minijinja::context! {
            rows => rows.iter().map(|r| request_row(r, now)).collect::<Vec<_>>(),
            next => next,
            actor => session.identity.actor.id(),
        },
    );
    render(&s, "pending.html", ctx)
}

/// The request, if the session's scope covers it (a request outside it does not exist here).
async fn scoped_request(
    s: &ConsoleState,
    session: &Session,
    raw: &str,
) -> Result<RequestId, Response> {
    let back = "/console/pending";
    let Ok(id) = raw.parse::<RequestId>() else {
        return Err(refusal(
            s,
            session,
            StatusCode::NOT_FOUND,
            format!("'{raw}' is not a request id."),
            back,
        ));
    };
    match s.engine.request(id).await {
        Ok(Some(r)) if session.identity.scope.covers(&r.subject.team_id) => Ok(id),
        Ok(_) => Err(engine_refusal(
            s,
            session,
            EngineError::RequestNotFound(id),
            back,
        )),
        Err(e) => Err(store_failure(s, session, e)),
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct DenyForm {
    #[serde(default)]
    reason: String,
}

pub(super) async fn approve(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let back = "/console/pending";
    let id = match scoped_request(&s, &session, &id).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    match s.engine.approve(id, session.identity.actor.clone()).await {
        Ok(r) if r.status == RequestStatus::Pending => {
            Redirect::to("/console/pending?ok=approval-recorded").into_response()
        }
        Ok(_) => Redirect::to("/console/pending?ok=approved").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

pub(super) async fn deny(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<DenyForm>,
) -> Response {
    let back = "/console/pending";
    let id = match scoped_request(&s, &session, &id).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let reason =
        Some(f.reason.trim().chars().take(500).collect::<String>()).filter(|r| !r.is_empty());
    match s
        .engine
        .deny(id, session.identity.actor.clone(), reason)
        .await
    {
        Ok(_) => Redirect::to("/console/pending?ok=denied").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

#[derive(Debug, Deserialize, Default, serde::Serialize)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    person: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: Option<String>,
}

pub(super) async fn history(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let bad = |m: String| Some(m);
    let mut error = None;
    let status = if q.status.is_empty() {
        None
    } else {
        match RequestStatus::from_str(&q.status) {
            Ok(s) => Some(s),
            Err(e) => {
                error = bad(e);
                None
            }
        }
    };
    let resource = if q.resource.is_empty() {
        None
    } else {
        match ResourceId::parse(&q.resource) {
            Ok(r) => Some(r),
            Err(e) => {
                error = bad(e.to_string());
                None
            }
        }
    };
    let mut day = |raw: &str, what: &str| -> Option<DateTime<Utc>> {
        if raw.is_empty() {
            return None;
        }
        let d = parse_day(raw);
        if d.is_none() {
            error = Some(format!("{what} must be a date (YYYY-MM-DD), got '{raw}'"));
        }
        d
    };
    let since = day(&q.since, "From");
    // "To" is inclusive: up to the end of that day.
    let until = day(&q.until, "To").map(|t| t + chrono::Duration::days(1));
    let rows = if error.is_some() {
        Vec::new()
    } else {
        let query = PageQuery {
            status,
            resource,
            team_id: session.identity.scope.team().map(str::to_string),
            person: Some(q.person.trim().to_string()).filter(|p| !p.is_empty()),
            since,
            until,
            before: parse_cursor(q.before.as_deref()),
            limit: PAGE,
            ..PageQuery::default()
        };
        match s.engine.requests_page(&query).await {
            Ok(r) => r,
            Err(e) => return store_failure(&s, &session, e),
        }
    };
    let now = s.engine.now();
    let next = next_cursor(&rows, |r| (r.created_at, r.id.to_string())).map(|c| {
        format!(
            "/console/history{}",
            query_string(&[
                ("person", &q.person),
                ("resource", &q.resource),
                ("status", &q.status),
                ("since", &q.since),
                ("until", &q.until),
                ("before", &c),
            ])
        )
    });
    let ctx = merge(
        page_ctx(&session, "history", None, error),
        minijinja::context! {
            rows => rows.iter().map(|r| request_row(r, now)).collect::<Vec<_>>(),
            next => next,
            f => ser(&q),
            resources => s.engine.resources().iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
            statuses => RequestStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    );
    render(&s, "history.html", ctx)
}
