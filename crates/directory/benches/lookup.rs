//! Lookup and load time with a generated 100,000-person index.
//!
//! `cargo bench -p directory` (release). Targets: a lookup under 1 µs, a load under 1 s.
//! Plain `main`, timed with `Instant`, medians over many batches: no benchmark framework to build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use directory::{OrgData, OrgDirectory, OrgIndex};

const PEOPLE: usize = 100_000;
const ORGS: usize = 24;
const PILLARS: usize = 60;
const TEAM_GROUPS: usize = 300;
const TEAMS: usize = 3_000;

/// A dump shaped like the real one: nested orgs, pillars, team groups, teams; people in one to
/// three teams, a few directly in an org; 90 % with a Slack id; the usual unread extras.
fn generate() -> Vec<u8> {
    let mut rng = fastrand_lite(42);
    let mut orgs = serde_json::Map::new();
    for o in 0..ORGS {
        let mut e = serde_json::json!({"uid": format!("org{o}"), "name": format!("Org {o}"), "type": "organization",
            "group": {"type": {"name": "org"}, "resolved_people_uid_list": []}});
        if o >= 4 {
            e["parent"] = serde_json::json!({"name": format!("Org {}", o % 4), "type": "org"});
        }
        orgs.insert(format!("Org {o}"), e);
    }
    let mut pillars = serde_json::Map::new();
    for p in 0..PILLARS {
        pillars.insert(
            format!("Pillar {p}"),
            serde_json::json!({"name": format!("Pillar {p}"), "type": "pillar", "parent": {"name": format!("Org {}", p % ORGS), "type": "org"}}),
        );
    }
    let mut team_groups = serde_json::Map::new();
    for g in 0..TEAM_GROUPS {
        team_groups.insert(
            format!("Group {g}"),
            serde_json::json!({"name": format!("Group {g}"), "type": "team_group", "parent": {"name": format!("Pillar {}", g % PILLARS), "type": "pillar"}}),
        );
    }
    let mut teams = serde_json::Map::new();
    for t in 0..TEAMS {
        teams.insert(
            format!("Team {t}"),
            serde_json::json!({"uid": format!("team{t}"), "name": format!("Team {t}"), "type": "team",
                "parent": {"name": format!("Group {}", t % TEAM_GROUPS), "type": "team_group"},
                "group": {"type": {"name": "team"}, "resolved_people_uid_list": [],
                          "slack": {"channels": [{"channel": format!("#team-{t}")}]}, "keywords": ["k"]}}),
        );
    }
    let mut employees = serde_json::Map::new();
    let mut membership = serde_json::Map::new();
    let mut slack_map = serde_json::Map::new();
    for i in 0..PEOPLE {
        let uid = format!("user{i}");
        let mut e = serde_json::json!({"uid": uid, "full_name": format!("Person {i}"), "email": format!("user{i}@example.com"),
            "job_title": "Software Engineer", "github_id": format!("gh{i}"), "cost_center": 700 + (i % 50), "manager_uid": format!("user{}", i / 10)});
        if i % 10 != 0 {
            let slack = format!("U{i:09}");
            e["slack_uid"] = serde_json::json!(slack);
            slack_map.insert(slack, serde_json::json!(uid));
        }
        employees.insert(uid.clone(), e);
        let n = 1 + rng() % 3;
        let mut m: Vec<serde_json::Value> =
            (0..n).map(|_| serde_json::json!({"name": format!("Team {}", rng() % TEAMS as u64), "type": "team"})).collect();
        if i % 97 == 0 {
            m.push(
                serde_json::json!({"name": format!("Org {}", rng() % ORGS as u64), "type": "org"}),
            );
        }
        membership.insert(uid, serde_json::Value::Array(m));
    }
    serde_json::to_vec(&serde_json::json!({
        "metadata": {"generated_at": "2026-11-20T06:00:00Z", "data_version": "bench", "total_employees": PEOPLE},
        "lookups": {"employees": employees, "teams": teams, "orgs": orgs, "pillars": pillars, "team_groups": team_groups},
        "indexes": {"membership": {"membership_index": membership}, "slack_id_mappings": {"slack_uid_to_uid": slack_map}}
    }))
    .unwrap()
}

/// A tiny xorshift so the bench needs no extra crate.
fn fastrand_lite(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median per-lookup time over `batches` batches of `keys.len()` lookups.
fn time_lookups<K>(keys: &[K], batches: usize, mut f: impl FnMut(&K) -> bool) -> (Duration, usize) {
    let mut samples = Vec::with_capacity(batches);
    let mut hits = 0;
    for _ in 0..batches {
        let t = Instant::now();
        for k in keys {
            if black_box(f(black_box(k))) {
                hits += 1;
            }
        }
        samples.push(t.elapsed() / keys.len() as u32);
    }
    (median(samples), hits / batches)
}

fn main() {
    let t = Instant::now();
    let dump = generate();
    println!(
        "generated {} people, {:.1} MiB of JSON in {:?}",
        PEOPLE,
        dump.len() as f64 / 1048576.0,
        t.elapsed()
    );

    // Load: parse + build, as a reload does (without the fetch).
    let mut loads = Vec::new();
    let mut index = None;
    for _ in 0..5 {
        let t = Instant::now();
        let idx = OrgIndex::from_json(&dump).unwrap();
        loads.push(t.elapsed());
        index = Some(idx);
    }
    let index = index.unwrap();
    let load = median(loads.clone());
    println!(
        "load (parse + index), median of 5: {load:?}  (min {:?}, max {:?})",
        loads.iter().min().unwrap(),
        loads.iter().max().unwrap()
    );
    println!("  {:?}", index.stats());

    let mut rng = fastrand_lite(7);
    let n = 1000;
    let slack_ids: Vec<String> = (0..n)
        .map(|_| {
            let i = 1 + (rng() % (PEOPLE as u64 - 1));
            let i = if i % 10 == 0 { i + 1 } else { i };
            format!("U{i:09}")
        })
        .collect();
    let emails: Vec<String> = (0..n)
        .map(|_| format!("user{}@example.com", rng() % PEOPLE as u64))
        .collect();
    let orgs: Vec<String> = (0..n).map(|_| format!("Org {}", rng() % 4)).collect();
    let teams: Vec<String> = (0..n)
        .map(|_| format!("Team {}", rng() % TEAMS as u64))
        .collect();

    let batches = 500;
    let (by_slack_org, hits1) = time_lookups(&(0..n).collect::<Vec<_>>(), batches, |&i| {
        index.is_member(&slack_ids[i], None, &orgs[i])
    });
    let (by_slack_team, hits2) = time_lookups(&(0..n).collect::<Vec<_>>(), batches, |&i| {
        index.is_member(&slack_ids[i], None, &teams[i])
    });
    let (by_email, hits3) = time_lookups(&(0..n).collect::<Vec<_>>(), batches, |&i| {
        index.is_member("U_NOT_IN_INDEX", Some(&emails[i]), &orgs[i])
    });
    let (miss, hits4) = time_lookups(&(0..n).collect::<Vec<_>>(), batches, |&i| {
        index.is_member("U_NOT_IN_INDEX", Some("nobody@example.org"), &orgs[i])
    });

    let org = Arc::new(OrgData::from_index(index));
    let dir = OrgDirectory::new().with_org_data(Arc::clone(&org));
    let (through_directory, hits5) = time_lookups(&(0..n).collect::<Vec<_>>(), batches, |&i| {
        dir.is_member(&slack_ids[i], Some(&emails[i]), &orgs[i])
            .unwrap()
    });

    println!("lookups, median per lookup over {batches} batches of {n}:");
    println!("  slack id → org (via hierarchy)   {by_slack_org:>10?}   ({hits1}/{n} members)");
    println!("  slack id → team                  {by_slack_team:>10?}   ({hits2}/{n} members)");
    println!("  e-mail fallback → org            {by_email:>10?}   ({hits3}/{n} members)");
    println!("  unknown person                   {miss:>10?}   ({hits4}/{n} members)");
    println!("  OrgDirectory::is_member (swap)   {through_directory:>10?}   ({hits5}/{n} members)");

    let worst = [
        by_slack_org,
        by_slack_team,
        by_email,
        miss,
        through_directory,
    ]
    .into_iter()
    .max()
    .unwrap();
    println!(
        "targets: lookup < 1 µs: {} (worst {worst:?}); load < 1 s: {} ({load:?})",
        if worst < Duration::from_micros(1) {
            "met"
        } else {
            "MISSED"
        },
        if load < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        },
    );
}
