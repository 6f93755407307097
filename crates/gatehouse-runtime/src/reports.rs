//! Compliance exports and the monthly access report, computed from the audit trail alone (so a
//! report can be rebuilt from a BigQuery export too).

use std::collections::BTreeMap;
use std::io::Write;

use access_core::audit::{AuditEvent, AuditKind};
use access_core::request::Actor;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

/// A calendar month, `2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl std::str::FromStr for Month {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a month; use YYYY-MM, like 2026-11");
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        Ok(Month { year, month })
    }
}

impl Month {
    pub fn start(&self) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .unwrap_or_default()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
    }

    pub fn end(&self) -> DateTime<Utc> {
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        Month { year: y, month: m }.start()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(format!("unknown format '{other}'; use csv or jsonl")),
        }
    }
}

pub const CSV_HEADER: &str =
    "seq,id,at,kind,actor,subject,resource,request_id,grant_id,details,prev_hash,hash";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes events as CSV (with a header when `header`) or JSON lines.
pub fn write_events(
    out: &mut dyn Write,
    events: &[AuditEvent],
    format: ExportFormat,
    header: bool,
) -> std::io::Result<()> {
    match format {
        ExportFormat::Csv => {
            if header {
                writeln!(out, "{CSV_HEADER}")?;
            }
            for e in events {
                let row = e.csv_cells();
                writeln!(
                    out,
                    "{}",
                    row.iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
            }
        }
        ExportFormat::Jsonl => {
            for e in events {
                serde_json::to_writer(&mut *out, e)?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    pub grants: u64,
    pub extensions: u64,
    /// Sum of granted durations, in seconds.
    pub granted_seconds: i64,
}

/// The monthly access report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MonthlyReport {
    pub month: String,
    pub requests: u64,
    pub grants: u64,
    pub denied: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub revoked: u64,
    pub self_revocations: u64,
    pub failures: u64,
    pub by_resource: BTreeMap<String, Tally>,
    pub by_person: BTreeMap<String, Tally>,
    /// Approvals per approver (`slack:T/U`, `admin:name`, `system` for auto-approval).
    pub approvers: BTreeMap<String, u64>,
    /// Provisioning failures with their reasons.
    pub failure_reasons: Vec<String>,
    /// Break-glass grants taken this month.
    #[serde(default)]
    pub emergency_grants: u64,
    /// This month's break-glass grants that no approver has reviewed, oldest first (reviews
    /// after the month count once given to [`MonthlyReport::note_reviews`]).
    #[serde(default)]
    pub emergency_unreviewed: Vec<UnreviewedEmergency>,
}

/// A break-glass grant nobody has reviewed yet.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnreviewedEmergency {
    pub request_id: String,
    pub at: DateTime<Utc>,
    pub person: String,
    pub resource: String,
    pub justification: String,
}

impl MonthlyReport {
    /// Builds the report from the month's events (oldest first).
    pub fn from_events(month: Month, events: &[AuditEvent]) -> Self {
        let mut r = MonthlyReport {
            month: month.to_string(),
            ..Default::default()
        };
        for e in events {
            let rec = &e.record;
            let resource = rec
                .resource
                .as_ref()
                .map(|x| x.to_string())
                .unwrap_or_default();
            let person = rec.subject.clone().unwrap_or_default();
            match rec.kind {
                AuditKind::AccessRequested => r.requests += 1,
                AuditKind::AccessApproved => {
                    for a in rec.details["approvers"].as_array().into_iter().flatten() {
                        if let Some(a) = a.as_str() {
                            *r.approvers.entry(a.to_string()).or_default() += 1;
                        }
                    }
                }
                AuditKind::AccessGranted | AuditKind::AccessExtended => {
                    let seconds = rec.details["expires_at"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| (t.with_timezone(&Utc) - rec.at).num_seconds().max(0))
                        .unwrap_or(0);
                    for tally in [
                        r.by_resource.entry(resource.clone()).or_default(),
                        r.by_person.entry(person.clone()).or_default(),
                    ] {
                        if rec.kind == AuditKind::AccessGranted {
                            tally.grants += 1;
                        } else {
                            tally.extensions += 1;
                        }
                        tally.granted_seconds += seconds;
                    }
                    if rec.kind == AuditKind::AccessGranted {
                        r.grants += 1;
                    }
                }
                AuditKind::AccessDenied => r.denied += 1,
                AuditKind::RequestTimedOut => r.timed_out += 1,
                AuditKind::RequestCancelled => r.cancelled += 1,
                AuditKind::AccessExpired => r.expired += 1,
                AuditKind::AccessRevoked => {
                    r.revoked += 1;
                    if let Actor::User {
                        team_id, user_id, ..
                    } = &rec.actor
                    {
                        if rec.subject.as_deref() == Some(format!("{team_id}/{user_id}").as_str()) {
                            r.self_revocations += 1;
                        }
                    }
                }
                AuditKind::EmergencyGranted => {
                    r.emergency_grants += 1;
                    r.emergency_unreviewed.push(UnreviewedEmergency {
                        request_id: rec.request_id.map(|x| x.to_string()).unwrap_or_default(),
                        at: rec.at,
                        person: person.clone(),
                        resource: resource.clone(),
                        justification: rec.details["justification"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
                AuditKind::EmergencyReviewed => {
                    let id = rec.request_id.map(|x| x.to_string()).unwrap_or_default();
                    r.emergency_unreviewed.retain(|u| u.request_id != id);
                }
                AuditKind::GrantFailed => {
                    r.failures += 1;
                    let reason = rec.details["reason"].as_str().unwrap_or("unknown");
                    r.failure_reasons.push(format!(
                        "{} {} {}: {}",
                        rec.at.format("%Y-%m-%d"),
                        person,
                        resource,
                        reason
                    ));
                }
                _ => {}
            }
        }
        r
    }

    /// Counts the reviews that came after the month (`emergency_reviewed` events from its end
    /// to now): a grant reviewed since is no longer listed as unreviewed.
    pub fn note_reviews(&mut self, later: &[AuditEvent]) {
        for e in later
            .iter()
            .filter(|e| e.record.kind == AuditKind::EmergencyReviewed)
        {
            let id = e
                .record
                .request_id
                .map(|x| x.to_string())
                .unwrap_or_default();
            self.emergency_unreviewed.retain(|u| u.request_id != id);
        }
    }

    /// A plain-text rendering for people.
    pub fn to_text(&self) -> String {
        let mut s = format!("Gatehouse access report for {}\n\n", self.month);
        s += &format!(
            "requests {}  grants {}  denied {}  timed out {}  cancelled {}\nexpired {}  revoked {} (self-revoked {})  failures {}\n",
            self.requests,
            self.grants,
            self.denied,
            self.timed_out,
            self.cancelled,
            self.expired,
            self.revoked,
            self.self_revocations,
            self.failures
        );
        let hours = |secs: i64| secs as f64 / 3600.0;
        s += "\nBy resource:\n";
        for (k, t) in &self.by_resource {
            s += &format!(
                "  {k:<24} grants {:>4}  extensions {:>3}  hours {:>8.1}\n",
                t.grants,
                t.extensions,
                hours(t.granted_seconds)
            );
        }
        s += "\nBy person:\n";
        for (k, t) in &self.by_person {
            s += &format!(
                "  {k:<24} grants {:>4}  extensions {:>3}  hours {:>8.1}\n",
                t.grants,
                t.extensions,
                hours(t.granted_seconds)
            );
        }
        s += "\nApprovals by approver:\n";
        for (k, n) in &self.approvers {
            s += &format!("  {k:<32} {n}\n");
        }
        if !self.failure_reasons.is_empty() {
            s += "\nFailures:\n";
            for f in &self.failure_reasons {
                s += &format!("  {f}\n");
            }
        }
        if self.emergency_grants > 0 {
            s += &format!(
                "\nBreak-glass grants: {} ({} unreviewed)\n",
                self.emergency_grants,
                self.emergency_unreviewed.len()
            );
            for u in &self.emergency_unreviewed {
                s += &format!(
                    "  UNREVIEWED {} {} {} (request {}): {}\n",
                    u.at.format("%Y-%m-%d %H:%M"),
                    u.person,
                    u.resource,
                    u.request_id,
                    u.justification
                );
            }
        }
        s
    }
}

/// Month containing `t`.
pub fn month_of(t: DateTime<Utc>) -> Month {
    Month {
        year: t.year(),
        month: t.month(),
    }
}
