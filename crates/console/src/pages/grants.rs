//! Active grants and what can be done to one (revoke, extend).

use super::*;

fn grant_row(g: &Grant, now: DateTime<Utc>) -> Value {
    minijinja::context! {
        id => g.id.to_string(),
        person => person(&g.subject),
        resource => g.resource.to_string(),
        status => g.status.as_str(),
        granted_at_short => g.granted_at.map(short).unwrap_or_default(),
        expires_at => g.expires_at.to_rfc3339(),
        time_left => left(g.expires_at, now),
    }
}

pub(super) async fn grants(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let query = PageQuery {
        live_only: true,
        team_id: session.identity.scope.team().map(str::to_string),
        before: parse_cursor(q.before.as_deref()),
        limit: PAGE,
        ..PageQuery::<GrantStatus>::default()
    };
    let rows = match s.engine.grants_page(&query).await {
        Ok(r) => r,
        Err(e) => return store_failure(&s, &session, e),
    };
    let now = s.engine.now();
    let next = next_cursor(&rows, |g| (g.created_at, g.id.to_string()))
        .map(|c| format!("/console/grants?before={c}"));
    let ctx = merge(
        page_ctx(&session, "grants", notice_for(q.ok.as_deref()), None),
        minijinja::context! {
            rows => rows.iter().map(|g| grant_row(g, now)).collect::<Vec<_>>(),
            next => next,
        },
    );
    render(&s, "grants.html", ctx)
}

async fn scoped_grant(s: &ConsoleState, session: &Session, raw: &str) -> Result<Grant, Response> {
    let back = "/console/grants";
    let Ok(id) = raw.parse::<GrantId>() else {
        return Err(refusal(
            s,
            session,
            StatusCode::NOT_FOUND,
            format!("'{raw}' is not a grant id."),
            back,
        ));
    };
    match s.engine.grant(id).await {
        Ok(Some(g)) if session.identity.scope.covers(&g.subject.team_id) => Ok(g),
        Ok(_) => Err(engine_refusal(
            s,
            session,
            EngineError::GrantNotFound(id),
            back,
        )),
        Err(e) => Err(store_failure(s, session, e)),
    }
}

pub(super) async fn revoke(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let back = "/console/grants";
    let g = match scoped_grant(&s, &session, &id).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match s
        .engine
        .revoke_grant(g.id, session.identity.actor.clone())
        .await
    {
        Ok(_) => Redirect::to("/console/grants?ok=revoked").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct ExtendForm {
    #[serde(default)]
    duration: String,
}

/// An extension is a request of kind `extend` for the holder, like `/access request … extend`
/// in Slack: the resource's approval policy decides (an auto-approved resource extends at once,
/// another waits on the pending page). The justification names who asked, from the session.
pub(super) async fn extend(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ExtendForm>,
) -> Response {
    let back = "/console/grants";
    let g = match scoped_grant(&s, &session, &id).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let raw = RawSubmission::new(
        g.resource.to_string(),
        Some(f.duration),
        format!(
            "Extension asked for in the web console by {}",
            session.identity.actor.id()
        ),
    )
    .extension();
    match s.engine.submit_raw(g.subject.clone(), &raw).await {
        Ok(_) => Redirect::to("/console/grants?ok=extended").into_response(),
        Err(e) => engine_refusal(&s, &session, e, back),
    }
}
