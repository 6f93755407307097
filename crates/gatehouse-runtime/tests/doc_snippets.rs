//! Every TOML snippet of the documentation, and the example configuration with its commented-out
//! resources switched on, goes through the real configuration parser and its validation: a reader
//! who copies one gets a file that starts.
//!
//! A snippet that is deliberately partial starts with a `# fragment` line; it must still be valid
//! TOML, and what it holds must fit the configuration's shape (it is merged into a minimal file).
//! Keep such exceptions rare.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use gatehouse_runtime::Config;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let root = repo_root();
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out
}

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```toml") => current = Some((n + 1, String::new())),
            Some(_) if fence.starts_with("```") => out.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unclosed ```toml block");
    out
}

/// Parses and validates a snippet as a whole configuration file (or, for a `# fragment`, as part
/// of one).
fn check(snippet: &str) -> Result<(), String> {
    let text = if snippet.trim_start().starts_with("# fragment") {
        // A fragment: valid TOML whose tables fit the configuration once merged into a file with
        // one valid resource.
        let mut base: toml::Table = toml::from_str(
            "[[resources]]\nid = \"base\"\nprovider = \"dry-run\"\napproval = { mode = \"auto\" }\n",
        )
        .unwrap();
        let part: toml::Table = toml::from_str(snippet).map_err(|e| e.to_string())?;
        for (k, v) in part {
            base.insert(k, v);
        }
        toml::to_string(&base).map_err(|e| e.to_string())?
    } else {
        snippet.to_string()
    };
    let config = Config::from_toml(&text, "snippet").map_err(|e| e.to_string())?;
    config.resources().map_err(|e| e.to_string())?;
    config.server.admin_set().map_err(|e| e.to_string())?;
    config
        .server
        .rate_limits
        .request_limits()
        .map_err(|e| e.to_string())?;
    check_webhooks(&config)
}

/// `[[webhooks]]` entries are checked as at start, with every variable they name set.
fn check_webhooks(config: &Config) -> Result<(), String> {
    let mut env = gatehouse_runtime::config::Env::default();
    for w in &config.webhooks {
        for name in std::iter::once(&w.secret_env).chain(&w.token_env) {
            env.vars.insert(name.clone(), "doc-snippet-value".into());
        }
    }
    config.webhooks(&env).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn every_toml_snippet_in_the_docs_is_a_valid_configuration() {
    let mut failures = Vec::new();
    let mut seen = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, block) in toml_blocks(&text) {
            seen += 1;
            let origin = format!("{}:{line}", file.display());
            if let Err(e) = check(&block) {
                failures.push(format!("{origin}: {e}"));
            }
        }
    }
    assert!(seen >= 3, "expected the docs' TOML examples, found {seen}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The example file as shipped (what `make run` starts with), and with its commented-out
/// resources switched on. Commented-out configuration is written `#key = …` / `#[[resources]]`
/// (no space after `#`); prose comments are `# …`.
#[test]
fn the_example_configuration_and_its_commented_resources_are_valid() {
    let text = std::fs::read_to_string(repo_root().join("gatehouse.example.toml")).unwrap();
    check(&text).unwrap();

    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml(&uncommented, "gatehouse.example.toml (uncommented)").unwrap();
    check_webhooks(&config).unwrap();
    assert!(!config.webhooks.is_empty(), "a commented webhook example");
    let resources = config.resources().unwrap();
    let vpn = resources
        .iter()
        .find(|r| r.provider == "cloudconnexa")
        .expect("a commented Cloud Connexa resource");
    // The source documents: VPN access for at most 24 hours, GCP access for 7 days.
    assert_eq!(vpn.durations.max.secs(), 24 * 3600);
    let gcp = resources
        .iter()
        .find(|r| r.provider == "gcp-iam")
        .expect("a commented GCP resource");
    assert_eq!(gcp.durations.max.secs(), 7 * 24 * 3600);
    assert_eq!(gcp.durations.default.secs(), 7 * 24 * 3600);
    assert!(!gcp.extendable, "the GCP document: no extension");
}
