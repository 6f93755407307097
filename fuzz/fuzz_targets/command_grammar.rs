//! The command grammar shared by `/access`, `/vpn-access` and direct messages.
//!
//! Checks: no panic on any text on any surface; parsing is deterministic; a parsed command's
//! resource or target is one non-empty word; a request's justification is non-blank and trimmed,
//! and `Justification::parse` (what the engine does next) never calls it empty; a duration the
//! grammar split off is one the duration parser accepts, or a number with or without a unit word
//! (which the engine then refuses with a message of its own); every refusal has a message, and an unknown word is echoed at most
//! 40 characters long. A request re-typed from its parts (`request <resource> <duration>
//! <justification>`) parses to the same command.
#![no_main]

use access_core::{AccessDuration, Justification, resource::JustificationError};
use libfuzzer_sys::fuzz_target;
use slack_adapter::grammar::{self, Command, ParseErrorKind, Surface};

fn one_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// A duration the grammar split off: one the parser accepts, or a word that starts with a
/// number (`0`, `0h`, `400d`), plainly meant as one, which the engine then refuses with a message
/// of its own (zero, too long, out of bounds).
fn duration_ok(d: &str) -> bool {
    d.parse::<AccessDuration>().is_ok()
        || (d.starts_with(|c: char| c.is_ascii_digit()) && !d.chars().any(char::is_whitespace))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let surface = match sel % 3 {
        0 => Surface::Access,
        1 => Surface::VpnAccess,
        _ => Surface::DirectMessage,
    };
    let parsed = grammar::parse(text, surface);
    assert_eq!(parsed, grammar::parse(text, surface), "not deterministic");
    match parsed {
        Ok(Command::Request {
            resource,
            duration,
            justification,
        }) => {
            assert!(one_word(&resource), "{resource:?}");
            assert_eq!(justification.trim(), justification);
            assert!(!justification.is_empty());
            assert!(
                !matches!(
                    Justification::parse(&justification),
                    Err(JustificationError::Empty)
                ),
                "grammar accepted a justification the engine calls empty: {justification:?}"
            );
            if let Some(d) = &duration {
                assert!(duration_ok(d), "{d:?}");
            }
            // Re-typed from its parts. Slack's escapes (`&amp;`) would be undone twice, and a
            // justification that itself starts like a duration is read as one: leave those out.
            if let Some(d) = &duration
                && !text.contains('&')
                && !justification.contains('&')
            {
                let again = format!("request {resource} {d} {justification}");
                assert_eq!(
                    grammar::parse(&again, surface),
                    Ok(Command::Request {
                        resource: resource.clone(),
                        duration: duration.clone(),
                        justification: justification.clone(),
                    }),
                    "{again:?}"
                );
            }
        }
        Ok(Command::Extend {
            resource,
            duration,
            justification,
        }) => {
            assert!(one_word(&resource), "{resource:?}");
            if let Some(d) = &duration {
                assert!(duration_ok(d), "{d:?}");
            }
            if let Some(j) = &justification {
                assert!(!j.trim().is_empty());
            }
        }
        Ok(Command::Revoke { resource }) => assert!(one_word(&resource), "{resource:?}"),
        Ok(Command::Cancel { target }) => assert!(one_word(&target), "{target:?}"),
        Ok(Command::Help { topic }) => assert!(!grammar::help_text(surface, topic).is_empty()),
        Ok(Command::Status | Command::List | Command::OpenModal) => {}
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let ParseErrorKind::UnknownCommand { word } = &e.kind {
                assert!(word.chars().count() <= 40, "{word:?}");
            }
        }
    }
});
