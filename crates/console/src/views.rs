//! The embedded templates. Names end in `.html`, so minijinja escapes every value for HTML
//! unless it was marked safe in Rust (only the server-built SVG charts are).

use minijinja::Environment;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("pending.html", include_str!("../templates/pending.html")),
    ("grants.html", include_str!("../templates/grants.html")),
    ("history.html", include_str!("../templates/history.html")),
    ("audit.html", include_str!("../templates/audit.html")),
    ("slack.html", include_str!("../templates/slack.html")),
    ("health.html", include_str!("../templates/health.html")),
    ("charts.html", include_str!("../templates/charts.html")),
    ("message.html", include_str!("../templates/message.html")),
];

pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // The templates are part of the binary; a syntax error is a build defect, caught by the
        // tests that render every page.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env
}

pub(crate) const CSS: &str = include_str!("../static/console.css");
pub(crate) const JS: &str = include_str!("../static/console.js");
pub(crate) const FAVICON: &str = include_str!("../static/favicon.svg");
