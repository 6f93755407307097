//! The views Gatehouse opens or publishes: the request form (modal) and the App Home tab.

use chrono::{DateTime, Utc};
use slack_morphism::prelude::{
    SlackBlockChoiceItem, SlackBlockPlainTextInputElement, SlackBlockStaticSelectElement,
    SlackHomeView, SlackInputBlock, SlackInputBlockElement, SlackModalView, SlackView,
};

use access_core::Resource;
use access_core::grant::{Grant, format_remaining};
use access_core::request::AccessRequest;

use super::kit::{self, Style, plain};
use super::{
    Action, MODAL_CALLBACK_ID, actions, button, context, escape, modal_block, section, slack_date,
};

/// The request modal (`views.open`).
pub fn request_modal(resources: &[Resource], preselect: Option<&str>) -> SlackView {
    let options: Vec<SlackBlockChoiceItem<_>> = resources
        .iter()
        .take(100)
        .map(|r| {
            let label = if r.description.is_empty() {
                r.id.to_string()
            } else {
                format!("{} — {}", r.id, r.description)
            };
            SlackBlockChoiceItem::new(plain(&truncate(&label, 75)), r.id.to_string())
        })
        .collect();
    let mut select = SlackBlockStaticSelectElement::new();
    select.action_id = Some(modal_block::VALUE.to_string().into());
    select.placeholder = Some(plain("Choose a resource"));
    select.initial_option = preselect.and_then(|p| options.iter().find(|o| o.value == p).cloned());
    select.options = Some(options);
    let text_input = |placeholder: &str| {
        let mut input = SlackBlockPlainTextInputElement::new();
        input.action_id = Some(modal_block::VALUE.to_string().into());
        input.placeholder = Some(plain(placeholder));
        input
    };
    let mut justification = text_input("Running database migration");
    justification.multiline = Some(true);
    justification.max_length = Some(500);
    let input = |block: &str, label: &str, element| {
        SlackInputBlock::new(plain(label), element).with_block_id(block.to_string().into())
    };
    let blocks = vec![
        input(
            modal_block::RESOURCE,
            "Resource",
            SlackInputBlockElement::StaticSelect(select),
        )
        .into(),
        input(
            modal_block::DURATION,
            "Duration",
            SlackInputBlockElement::PlainTextInput(text_input("4h")),
        )
        .with_optional(true)
        .with_hint(plain(
            "Like 30m, 4h or 2d; a bare number means hours. Empty: the resource's default.",
        ))
        .into(),
        input(
            modal_block::JUSTIFICATION,
            "Why do you need access?",
            SlackInputBlockElement::PlainTextInput(justification),
        )
        .into(),
    ];
    SlackView::Modal(
        SlackModalView::new(plain("Request access"), blocks)
            .with_callback_id(MODAL_CALLBACK_ID.to_string().into())
            .with_submit(plain("Request"))
            .with_close(plain("Cancel")),
    )
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The App Home tab.
pub fn home_view(
    grants: &[Grant],
    pending: &[AccessRequest],
    extendable: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> SlackView {
    let mut blocks = vec![
        kit::header("Gatehouse: temporary access"),
        actions(
            "gatehouse_home_top",
            vec![button(
                "Request access",
                Action::OpenModal,
                "home",
                Some(Style::Primary),
            )],
        ),
        kit::divider(),
        section("*Your access*"),
    ];
    if grants.is_empty() {
        blocks.push(context("You have no active access."));
    }
    for g in grants.iter().take(40) {
        blocks.push(section(&format!(
            "*{}*: until {} ({} left){}",
            g.resource,
            slack_date(g.expires_at),
            format_remaining(g.remaining(now)),
            match g.status {
                access_core::GrantStatus::Provisioning => " · being set up",
                access_core::GrantStatus::Revoking => " · being revoked",
                _ => "",
            }
        )));
        let mut buttons = vec![button(
            "Revoke",
            Action::Revoke,
            &g.id.to_string(),
            Some(Style::Danger),
        )];
        if extendable(g.resource.as_str()) {
            buttons.push(button("Extend", Action::Extend, g.resource.as_str(), None));
        }
        blocks.push(actions(&format!("grant_{}", g.id), buttons));
    }
    blocks.push(kit::divider());
    blocks.push(section("*Pending requests*"));
    if pending.is_empty() {
        blocks.push(context("No pending requests."));
    }
    for r in pending.iter().take(40) {
        let text = format!(
            "*{}* for {}, asked {}\n_{}_",
            r.resource,
            r.duration.human(),
            slack_date(r.created_at),
            escape(r.justification.as_str())
        );
        blocks.push(kit::section_with_button(
            &text,
            button("Cancel", Action::Cancel, &r.id.to_string(), None),
        ));
    }
    SlackView::Home(SlackHomeView::new(blocks))
}
