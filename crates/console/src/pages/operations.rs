//! Running Gatehouse: Slack installations, health (queue, dead jobs, providers) and charts.

use super::*;

pub(super) async fn slack(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let configured = s.hooks.slack_install_configured();
    let (rows, error) = if configured {
        match s.hooks.installations(&session.identity.scope).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e)),
        }
    } else {
        (Vec::new(), None)
    };
    let ctx = merge(
        page_ctx(&session, "slack", notice_for(q.ok.as_deref()), error),
        minijinja::context! { configured => configured, rows => ser(rows) },
    );
    render(&s, "slack.html", ctx)
}

pub(super) async fn slack_install(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    match s.hooks.install_link(&session.identity.scope).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => refusal(
            &s,
            &session,
            StatusCode::SERVICE_UNAVAILABLE,
            e,
            "/console/slack",
        ),
    }
}

pub(super) async fn slack_uninstall(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if !session.identity.scope.covers(&id) {
        return refusal(
            &s,
            &session,
            StatusCode::FORBIDDEN,
            "That workspace is outside this token's scope.".into(),
            "/console/slack",
        );
    }
    match s.hooks.uninstall(&id).await {
        Ok(true) => Redirect::to("/console/slack?ok=uninstalled").into_response(),
        Ok(false) => refusal(
            &s,
            &session,
            StatusCode::NOT_FOUND,
            format!("Nothing is installed for {id}."),
            "/console/slack",
        ),
        Err(e) => refusal(
            &s,
            &session,
            StatusCode::INTERNAL_SERVER_ERROR,
            e,
            "/console/slack",
        ),
    }
}

fn secs(v: Option<i64>) -> String {
    match v {
        None => "none".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h", s / 3600),
    }
}

pub(super) async fn health(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let stats = match s.engine.job_stats(None).await {
        Ok(v) => v,
        Err(e) => return store_failure(&s, &session, e),
    };
    // Revocation lag: how long the oldest due take-back has waited.
    let mut lag: Option<i64> = None;
    for kind in ["expire", "revoke"] {
        match s.engine.job_stats(Some(kind)).await {
            Ok(k) => lag = lag.max(k.oldest_due_secs),
            Err(e) => return store_failure(&s, &session, e),
        }
    }
    let dead = match s
        .engine
        .jobs(&JobFilter {
            status: Some(JobStatus::Dead),
            kind: None,
            limit: Some(100),
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return store_failure(&s, &session, e),
    };
    let mut lines = Vec::new();
    for r in s.engine.resources() {
        let reason = s.engine.unavailable_reason(&r).await;
        lines.push(crate::StatusLine {
            name: format!("resource {} ({})", r.id, r.provider),
            ok: reason.is_none(),
            detail: reason.unwrap_or_default(),
        });
    }
    lines.extend(s.hooks.status_lines().await);
    let ctx = merge(
        page_ctx(&session, "health", notice_for(q.ok.as_deref()), None),
        minijinja::context! {
            stats => ser(&stats),
            oldest_due => secs(stats.oldest_due_secs),
            revocation_lag => secs(lag),
            dead => dead.iter().map(|j| minijinja::context! {
                id => j.id.to_string(),
                kind => j.kind.name(),
                attempts => j.attempts,
                last_error => j.last_error.clone().unwrap_or_default(),
                created_at => short(j.created_at),
            }).collect::<Vec<_>>(),
            lines => ser(lines),
        },
    );
    render(&s, "health.html", ctx)
}

pub(super) async fn retry_job(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    // Jobs are not per workspace: only an all-workspace identity retries them.
    if session.identity.scope != Scope::All {
        return refusal(
            &s,
            &session,
            StatusCode::FORBIDDEN,
            "Retrying jobs needs the admin token.".into(),
            "/console/health",
        );
    }
    let Ok(id) = id.parse::<JobId>() else {
        return refusal(
            &s,
            &session,
            StatusCode::NOT_FOUND,
            "No such job.".into(),
            "/console/health",
        );
    };
    match s.engine.revive_job(id).await {
        Ok(true) => {
            tracing::info!(job = %id, actor = %session.identity.actor.id(), "dead job retried from the console");
            Redirect::to("/console/health?ok=retried").into_response()
        }
        Ok(false) => refusal(
            &s,
            &session,
            StatusCode::CONFLICT,
            "That job is not dead (already retried?).".into(),
            "/console/health",
        ),
        Err(e) => store_failure(&s, &session, e),
    }
}

pub(super) async fn charts_page(
    State(s): State<ConsoleState>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    const DAYS: u32 = 30;
    let stats = match s
        .engine
        .daily_stats(DAYS, session.identity.scope.team())
        .await
    {
        Ok(v) => v,
        Err(e) => return store_failure(&s, &session, e),
    };
    let days: Vec<NaiveDate> = stats.active_at_end_of_day.iter().map(|(d, _)| *d).collect();
    let approve: Vec<(NaiveDate, f64)> = stats
        .approve_secs
        .iter()
        .map(|(d, _, mean)| (*d, (mean / 60.0 * 10.0).round() / 10.0))
        .collect();
    let active: Vec<(NaiveDate, f64)> = stats
        .active_at_end_of_day
        .iter()
        .map(|(d, n)| (*d, *n as f64))
        .collect();
    let ctx = merge(
        page_ctx(&session, "charts", None, None),
        minijinja::context! {
            days => DAYS,
            grants_svg => Value::from_safe_string(charts::stacked_bars(&days, &stats.grants_per_day)),
            approve_svg => Value::from_safe_string(charts::bars("mean minutes to approve", &days, &approve, "#d0652f")),
            active_svg => Value::from_safe_string(charts::bars("active grants", &days, &active, "#1f7a3a")),
        },
    );
    render(&s, "charts.html", ctx)
}
