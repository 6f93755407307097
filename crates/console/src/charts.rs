//! Server-side SVG charts. Attributes only (no `style`), so the page's CSP needs no
//! `unsafe-inline`; every label is escaped here because the SVG is marked safe for the template.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::NaiveDate;

const W: f64 = 900.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
const PALETTE: [&str; 8] = [
    "#2f5fd0", "#d0652f", "#1f7a3a", "#9b2fd0", "#b42318", "#0f8b8d", "#8d6e0f", "#555",
];

/// HTML escaping: the one implementation, shared with the Slack install pages.
pub use access_core::text::escape_html as escape;

fn frame(out: &mut String, label: &str, days: &[NaiveDate], max: f64) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{}">"##,
        escape(label)
    );
    let base = H - BOTTOM;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{base}" x2="{W}" y2="{base}" stroke="#999"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#999"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555">0</text>"##,
        LEFT - 4.0,
        TOP + 8.0,
        fmt_num(max),
        LEFT - 4.0,
        base
    );
    let step = (days.len() / 6).max(1);
    for (i, d) in days.iter().enumerate() {
        if i % step == 0 {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#555">{}</text>"##,
                x_of(i, days.len()) + bar_w(days.len()) / 2.0,
                H - 8.0,
                d.format("%m-%d")
            );
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn bar_w(n: usize) -> f64 {
    (W - LEFT - 4.0) / n.max(1) as f64
}

fn x_of(i: usize, n: usize) -> f64 {
    LEFT + 2.0 + i as f64 * bar_w(n)
}

fn y_of(v: f64, max: f64) -> f64 {
    let base = H - BOTTOM;
    if max <= 0.0 {
        base
    } else {
        base - (v / max) * (base - TOP)
    }
}

/// Stacked bars: grants per day, one colour per resource, with a legend.
pub fn stacked_bars(days: &[NaiveDate], rows: &[(NaiveDate, String, u64)]) -> String {
    let mut by_day: BTreeMap<NaiveDate, Vec<(&str, u64)>> = BTreeMap::new();
    let mut resources: Vec<&str> = Vec::new();
    for (d, r, n) in rows {
        by_day.entry(*d).or_default().push((r.as_str(), *n));
        if !resources.contains(&r.as_str()) {
            resources.push(r.as_str());
        }
    }
    let max = by_day
        .values()
        .map(|v| v.iter().map(|(_, n)| *n).sum::<u64>())
        .max()
        .unwrap_or(0) as f64;
    let mut out = String::new();
    frame(&mut out, "grants per day by resource", days, max);
    let w = bar_w(days.len());
    for (i, d) in days.iter().enumerate() {
        let mut acc = 0.0;
        for (r, n) in by_day.get(d).map(Vec::as_slice).unwrap_or_default() {
            let colour =
                PALETTE[resources.iter().position(|x| x == r).unwrap_or(0) % PALETTE.len()];
            let y1 = y_of(acc + *n as f64, max);
            let y0 = y_of(acc, max);
            let _ = write!(
                out,
                r##"<rect x="{:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {n}</title></rect>"##,
                x_of(i, days.len()),
                (w - 2.0).max(1.0),
                (y0 - y1).max(0.0),
                d,
                escape(r)
            );
            acc += *n as f64;
        }
    }
    for (i, r) in resources.iter().enumerate() {
        let x = LEFT + 10.0 + (i as f64) * 140.0;
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            r##"<rect x="{x}" y="2" width="10" height="10" fill="{colour}"/><text x="{}" y="11" font-size="11" fill="#333">{}</text>"##,
            x + 14.0,
            escape(r)
        );
    }
    out.push_str("</svg>");
    out
}

/// One bar per day from `(day, value)` points; days without a point are zero.
pub fn bars(label: &str, days: &[NaiveDate], points: &[(NaiveDate, f64)], colour: &str) -> String {
    let value = |d: &NaiveDate| {
        points
            .iter()
            .find(|(p, _)| p == d)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    let max = points.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let mut out = String::new();
    frame(&mut out, label, days, max);
    let w = bar_w(days.len());
    for (i, d) in days.iter().enumerate() {
        let v = value(d);
        let y = y_of(v, max);
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{d}: {}</title></rect>"##,
            x_of(i, days.len()),
            (w - 2.0).max(1.0),
            (H - BOTTOM - y).max(0.0),
            escape(colour),
            fmt_num(v)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_no_style_attribute_is_emitted() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        let svg = stacked_bars(&[d], &[(d, "<script>".into(), 3)]);
        assert!(svg.contains("&lt;script&gt;"));
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("style="));
    }
}
