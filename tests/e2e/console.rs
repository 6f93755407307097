//! The web console over HTTP: every action is refused without a session or with a missing or
//! wrong CSRF token, with no side effect; decisions are the signed-in token's, checked by the
//! same policy as Slack.

use serde_json::Value;
use testkit::db::backends;

use crate::console_helpers::*;
use crate::helpers::*;

const CONSOLE_USERS: &str = "T1/U1=requester-console-token,T1/UAPPROVER=approver-console-token";

async fn state(api: &Api) -> (Vec<Value>, Vec<Value>, usize) {
    let (_, requests) = api.get("/api/requests?limit=1000").await;
    let (_, grants) = api.get("/api/grants?limit=1000").await;
    let (_, audit) = api.get("/api/audit?limit=1000").await;
    (
        requests.as_array().unwrap().clone(),
        grants.as_array().unwrap().clone(),
        audit["events"].as_array().unwrap().len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_need_a_session_and_the_form_token() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), DRY_RUN_CONFIG);
        let opts = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![("GATEHOUSE_CONSOLE_USERS", CONSOLE_USERS.into())],
        };
        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));

        // A pending request (needs UAPPROVER) and a live grant.
        let (s, pending) = api
            .post("/api/requests", Some(request_body("U1", "guarded", "1h")))
            .await;
        assert_eq!(s, 201, "{pending}");
        let request_id = pending["id"].as_str().unwrap().to_string();
        let (s, auto) = api
            .post("/api/requests", Some(request_body("U2", "crashy", "1h")))
            .await;
        assert_eq!(s, 201, "{auto}");
        let (grants, _) = api
            .wait_for(
                "/api/grants?status=active",
                std::time::Duration::from_secs(60),
                |b| b.as_array().is_some_and(|a| a.len() == 1),
            )
            .await;
        let grant_id = grants[0]["id"].as_str().unwrap().to_string();
        let before = state(&api).await;

        let actions: Vec<(String, Vec<(&str, &str)>)> = vec![
            (format!("/console/requests/{request_id}/approve"), vec![]),
            (
                format!("/console/requests/{request_id}/deny"),
                vec![("reason", "no")],
            ),
            (format!("/console/grants/{grant_id}/revoke"), vec![]),
            (
                format!("/console/grants/{grant_id}/extend"),
                vec![("duration", "1h")],
            ),
            ("/console/audit/verify".into(), vec![]),
            (
                "/console/jobs/00000000-0000-4000-8000-000000000000/retry".into(),
                vec![],
            ),
            ("/console/slack/install".into(), vec![]),
            ("/console/slack/T1/uninstall".into(), vec![]),
            ("/console/logout".into(), vec![]),
        ];

        // No session: pages redirect to the sign-in page, actions are 401.
        let mut anon = Browserless::new(&server);
        for page in [
            "/console/pending",
            "/console/grants",
            "/console/audit",
            "/console/health",
        ] {
            let r = anon.get(page).await;
            assert_eq!(r.status, 303, "{page}");
            assert_eq!(r.location.as_deref(), Some("/console/login"), "{page}");
        }
        for (path, form) in &actions {
            let mut f = form.clone();
            f.push(("csrf", "0123456789abcdef"));
            let r = anon.post(path, &f).await;
            assert_eq!(r.status, 401, "{}: {path} without a session", db.kind);
        }
        // A forged session cookie is no session.
        anon.cookies
            .push(("gatehouse_console".into(), "v1.00.9999999999.aa.bb".into()));
        let r = anon
            .post(&actions[0].0, &[("csrf", "0123456789abcdef")])
            .await;
        assert_eq!(r.status, 401);

        // The sign-in form itself needs its token, and a wrong admin token opens nothing.
        let mut c = Browserless::new(&server);
        let r = c
            .post("/console/login", &[("csrf", "x"), ("token", ADMIN_TOKEN)])
            .await;
        assert_eq!(r.status, 403, "sign-in without the form's token");
        let r = c.sign_in("not-the-token").await;
        assert_eq!(r.location.as_deref(), Some("/console/login?error=token"));
        assert!(!c.cookies.iter().any(|(k, _)| k == "gatehouse_console"));

        // Signed in: the cookie is HttpOnly and SameSite=Strict, scoped to /console.
        let r = c.sign_in(ADMIN_TOKEN).await;
        assert_eq!(r.status, 303);
        let set: Vec<&str> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let session = set
            .iter()
            .find(|c| c.starts_with("gatehouse_console="))
            .expect("a session cookie");
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Strict"),
            "{session}"
        );
        assert!(!session.contains("Secure"), "plain HTTP here: {session}");
        let csrf = c.csrf().await;

        // Signed in, but the form token is missing or wrong: 403 for every action.
        for (path, form) in &actions {
            let r = c.post(path, form).await;
            assert_eq!(r.status, 403, "{}: {path} without a CSRF token", db.kind);
            let mut f = form.clone();
            // The token with its last hex digit changed (a fixed '0' was the token itself one
            // time in sixteen, and the test then failed on a correct refusal's absence).
            let last = if csrf.ends_with('0') { '1' } else { '0' };
            let wrong = format!("{}{last}", &csrf[..csrf.len() - 1]);
            f.push(("csrf", &wrong));
            let r = c.post(path, &f).await;
            assert_eq!(r.status, 403, "{}: {path} with a wrong CSRF token", db.kind);
        }
        // Another session's token is wrong too.
        let mut other = Browserless::new(&server);
        other.sign_in(ADMIN_TOKEN).await;
        let other_csrf = other.csrf().await;
        assert_ne!(other_csrf, csrf);
        let r = c
            .post(&actions[0].0, &[("csrf", other_csrf.as_str())])
            .await;
        assert_eq!(r.status, 403);

        // Nothing changed: same requests, grants and audit trail.
        assert_eq!(
            state(&api).await,
            before,
            "{}: refused actions changed state",
            db.kind
        );

        // Headers: a strict CSP without inline code, no framing, no caching.
        let page = c.get("/console/pending").await;
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert!(
            page.body.contains(&request_id),
            "the pending request is listed"
        );
        assert!(!page.body.contains(ADMIN_TOKEN), "no token in pages");

        // Policy as in Slack: the requester cannot approve their own request from the console…
        let mut requester = Browserless::new(&server);
        requester.sign_in("requester-console-token").await;
        let t = requester.csrf().await;
        let r = requester
            .post(
                &format!("/console/requests/{request_id}/approve"),
                &[("csrf", &t)],
            )
            .await;
        assert_eq!(r.status, 403, "self-approval: {}", r.body);
        // …and a workspace-scoped person cannot revoke someone else's grant.
        let r = requester
            .post(
                &format!("/console/grants/{grant_id}/revoke"),
                &[("csrf", &t)],
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(
            state(&api).await,
            before,
            "{}: policy refusals changed state",
            db.kind
        );

        // The approver's token approves, recorded as that Slack person (not a typed name).
        let mut approver = Browserless::new(&server);
        approver.sign_in("approver-console-token").await;
        let t = approver.csrf().await;
        let r = approver
            .post(
                &format!("/console/requests/{request_id}/approve"),
                &[("csrf", &t), ("approver", "someone-else")],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let (_, req) = api.get(&format!("/api/requests/{request_id}")).await;
        assert_ne!(req["request"]["status"], "pending", "{req}");
        let decided = req["request"]["decided_by"].to_string();
        assert!(decided.contains("UAPPROVER"), "{decided}");
        assert!(!decided.contains("someone-else"), "{decided}");

        // The admin's revoke goes through, recorded as admin:console.
        let r = c
            .post(
                &format!("/console/grants/{grant_id}/revoke"),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let (_, g) = api.get(&format!("/api/grants/{grant_id}")).await;
        assert!(g["revoked_by"].to_string().contains("console"), "{g}");

        // Signing out ends the cookie in the browser.
        let r = c.post("/console/logout", &[("csrf", &csrf)]).await;
        assert_eq!(r.status, 303);
        assert_eq!(c.get("/console/pending").await.status, 303);
        drop(server);
    }
}
