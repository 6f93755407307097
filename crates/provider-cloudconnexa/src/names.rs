//! Names for the Cloud Connexa users a grant creates, from the person's e-mail.

use access_core::Email;

/// First name, last name and username for a user created from an e-mail. The document names
/// users after their e-mail's local part; `jane.doe+vpn@x` becomes Jane / Doe / `jane.doe`.
pub fn names_from_email(email: &Email, display_name: &str) -> (String, String, String) {
    let local = email.local_part();
    let username = local.to_string();
    let base = local.split('+').next().unwrap_or(local);
    let tokens: Vec<&str> = base
        .split(['.', '_', '-'])
        .filter(|t| !t.is_empty())
        .collect();
    let cap = |t: &str| {
        let mut c = t.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    match tokens.as_slice() {
        [first, rest @ ..] if !rest.is_empty() => (
            cap(first),
            rest.iter().map(|t| cap(t)).collect::<Vec<_>>().join(" "),
            username,
        ),
        _ => {
            // One token (`jdoe@`): the Slack display name is the better source when it has two words.
            let words: Vec<&str> = display_name.split_whitespace().collect();
            if words.len() >= 2 {
                (words[0].to_string(), words[1..].join(" "), username)
            } else {
                let one = cap(tokens.first().copied().unwrap_or(base));
                (one.clone(), one, username)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_sensibly() {
        let e = Email::parse("jane.doe+vpn@example.com").unwrap();
        assert_eq!(
            names_from_email(&e, ""),
            ("Jane".into(), "Doe".into(), "jane.doe+vpn".into())
        );
        let e = Email::parse("mary_ann-smith@example.com").unwrap();
        assert_eq!(names_from_email(&e, "").1, "Ann Smith");
        let e = Email::parse("jdoe@example.com").unwrap();
        assert_eq!(
            names_from_email(&e, "John Doe"),
            ("John".into(), "Doe".into(), "jdoe".into())
        );
        assert_eq!(
            names_from_email(&e, "jd"),
            ("Jdoe".into(), "Jdoe".into(), "jdoe".into())
        );
    }
}
