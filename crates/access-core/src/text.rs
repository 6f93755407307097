//! Small text helpers shared by the adapters that render HTML (the web console's charts, the
//! Slack install pages), kept here so neither needs the other.

/// `s` with the five characters HTML gives meaning to (`& < > " '`) replaced by entities, safe
/// inside element text and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_html;

    #[test]
    fn escapes_every_character_html_gives_meaning_to() {
        assert_eq!(
            escape_html(r#"<a href="x" title='y'>Tom & Jerry</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;Tom &amp; Jerry&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain é"), "plain é");
        // Escaping twice escapes the ampersands of the first pass (no silent "already escaped").
        assert_eq!(escape_html("&lt;"), "&amp;lt;");
    }
}
