//! Is this person in that organisation or team?
//!
//! ```text
//! # from a local dump
//! cargo run -p directory --example check_member -- --file crates/directory/tests/fixtures/comprehensive_index_dump.json \
//!     U01JDOE jdoe@example.com "Hybrid Platforms"
//! # from the environment the GCP document uses (ORG_DATA_BUCKET, ORG_DATA_OBJECT_PATH, ORG_DATA_FILE,
//! # ORG_DATA_URL), with a bearer token for GCS in GCS_ACCESS_TOKEN (e.g. `gcloud auth print-access-token`)
//! ORG_DATA_BUCKET=my-org-data-bucket GCS_ACCESS_TOKEN=$(gcloud auth print-access-token) \
//!     cargo run -p directory --example check_member -- U01JDOE jdoe@example.com "Hybrid Platforms"
//! ```
//!
//! Prints who the index thinks the person is, every group they belong to, and the answer the
//! `org = "…"` eligibility rule would give. Exit status 0 for a member, 1 otherwise, 2 on errors.

use std::process::ExitCode;
use std::sync::Arc;

use directory::{DirectoryConfig, OrgData, OrgDataSource};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let file = match args.iter().position(|a| a == "--file") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            Some(path)
        }
        _ => None,
    };
    let [slack_id, email, group] = match <[String; 3]>::try_from(args) {
        Ok(a) => a,
        Err(_) => {
            eprintln!(
                "usage: check_member [--file DUMP.json] SLACK_ID EMAIL ORG_OR_TEAM   (EMAIL may be '-')"
            );
            return ExitCode::from(2);
        }
    };
    let email = (email != "-").then_some(email);

    let org = match file {
        Some(path) => Arc::new(OrgData::new(OrgDataSource::File(path.into()))),
        None => {
            let config = match DirectoryConfig::from_env_with(|k| std::env::var(k).ok()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let token = std::env::var("GCS_ACCESS_TOKEN").ok().map(|t| {
                Arc::new(gcp_auth::StaticToken(t)) as Arc<dyn gcp_auth::AccessTokenSource>
            });
            let dir = match config.build(token) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            match dir.org_data() {
                Some(o) => Arc::clone(o),
                None => {
                    eprintln!(
                        "no org data source: pass --file or set ORG_DATA_BUCKET / ORG_DATA_FILE / ORG_DATA_URL"
                    );
                    return ExitCode::from(2);
                }
            }
        }
    };

    if let Err(e) = org.reload().await {
        eprintln!("could not load the org data: {e}");
        return ExitCode::from(2);
    }
    let Some(index) = org.current() else {
        return ExitCode::from(2);
    };

    let by_slack = index.person_by_slack_id(&slack_id);
    let by_email = email.as_deref().and_then(|e| index.person_by_email(e));
    for (how, person) in [("Slack id", by_slack), ("e-mail", by_email)] {
        match person {
            Some(p) => {
                let mut groups: Vec<&str> = index.groups_of(p).collect();
                groups.sort_unstable();
                println!(
                    "by {how}: {} ({}) — {}",
                    p.uid,
                    p.full_name.as_deref().unwrap_or("?"),
                    groups.join(", ")
                );
            }
            None => println!("by {how}: not in the index"),
        }
    }
    if !index.has_group(&group) {
        println!("note: the index has no team, org, pillar or team group named {group:?}");
    }
    if index.is_member(&slack_id, email.as_deref(), &group) {
        println!("member of {group:?}: yes");
        ExitCode::SUCCESS
    } else {
        println!("member of {group:?}: no");
        println!(
            "You are not a member of the '{group}' organization. Access can only be granted to {group} members."
        );
        ExitCode::from(1)
    }
}
