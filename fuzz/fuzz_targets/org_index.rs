//! The org-data index loader (cyborg-data's `comprehensive_index_dump.json`).
//!
//! Checks: no panic (nor endless hierarchy walk) on any document; a loaded index agrees with
//! itself: its figures match what it answers, every employee key and membership-index uid is a
//! person found by that uid, every person's Slack id finds a person, an e-mail lookup finds a
//! person with that e-mail, and every group a person is in is a known group that
//! `person_in_group` and `is_member` confirm, including each direct membership of the document.
#![no_main]

use directory::index::OrgIndex;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = OrgIndex::from_json(data) else {
        return;
    };
    let stats = index.stats();
    assert_eq!(stats.people, index.len());
    assert!(!index.is_empty(), "an index without people loaded");
    assert!(stats.people_with_email <= stats.people);
    // The document read generically: which uids and memberships it names.
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut uids: Vec<&str> = Vec::new();
    if let Some(m) = doc.pointer("/lookups/employees").and_then(Value::as_object) {
        uids.extend(m.keys().map(String::as_str));
    }
    let memberships = doc
        .pointer("/indexes/membership/membership_index")
        .and_then(Value::as_object);
    if let Some(m) = memberships {
        uids.extend(m.keys().map(String::as_str));
    }
    for uid in uids {
        let p = index
            .person_by_uid(uid)
            .unwrap_or_else(|| panic!("uid {uid:?} lost"));
        assert_eq!(p.uid, uid);
        if let Some(s) = &p.slack_uid {
            assert!(
                index.person_by_slack_id(s).is_some(),
                "slack id {s:?} of {uid:?} finds nobody"
            );
        }
        if let Some(e) = &p.email {
            assert_eq!(e, &e.to_ascii_lowercase());
            if let Some(q) = index.person_by_email(&e.to_ascii_uppercase()) {
                assert_eq!(q.email.as_deref(), Some(e.as_str()));
            }
        }
        for g in index.groups_of(p) {
            assert!(index.has_group(g), "{g:?}");
            assert!(index.person_in_group(p, g), "{uid:?} in {g:?}");
            if let Some(s) = &p.slack_uid
                && index.person_by_slack_id(s).is_some_and(|q| q.uid == p.uid)
            {
                assert!(index.is_member(s, None, g), "{uid:?} via {s:?} in {g:?}");
            }
        }
    }
    // Every direct membership the document names (for a uid written twice, the last list counts,
    // in the index as in a generic read).
    if let Some(m) = memberships {
        for (uid, entries) in m {
            let Some(p) = index.person_by_uid(uid) else {
                continue;
            };
            let Some(entries) = entries.as_array() else {
                continue;
            };
            for name in entries.iter().filter_map(|e| e.get("name")?.as_str()) {
                let name = name.trim();
                if !name.is_empty() {
                    assert!(index.person_in_group(p, name), "{uid:?} not in {name:?}");
                }
            }
        }
    }
});
