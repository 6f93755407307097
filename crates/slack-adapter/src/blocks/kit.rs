//! The few Block Kit shapes Gatehouse uses, built from slack-morphism's typed blocks. The JSON
//! they serialise to is what Gatehouse has always sent (pinned by the tests in `blocks.rs`).

use serde_json::Value;
use slack_morphism::prelude::{
    SlackActionBlockElement, SlackActionsBlock, SlackBlock, SlackBlockButtonElement,
    SlackBlockButtonStyle, SlackBlockMarkDownText, SlackBlockPlainText, SlackBlockPlainTextOnly,
    SlackBlockText, SlackContextBlock, SlackContextBlockElement, SlackDividerBlock,
    SlackHeaderBlock, SlackSectionBlock,
};

use super::Action;

/// How a button looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Green.
    Primary,
    /// Red.
    Danger,
}

/// `{"type": "plain_text", "text": …}`.
pub fn plain(text: &str) -> SlackBlockPlainTextOnly {
    SlackBlockPlainText::new(text.to_string()).into()
}

/// A `mrkdwn` text object.
fn mrkdwn(text: &str) -> SlackBlockMarkDownText {
    SlackBlockMarkDownText::new(text.to_string())
}

/// A section of `mrkdwn` text.
pub fn section(text: &str) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(SlackBlockText::MarkDown(mrkdwn(text)))
        .into()
}

/// A section of `mrkdwn` text with a button on its right.
pub fn section_with_button(text: &str, button: SlackBlockButtonElement) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(SlackBlockText::MarkDown(mrkdwn(text)))
        .with_accessory(button.into())
        .into()
}

/// A context line of `mrkdwn` text.
pub fn context(text: &str) -> SlackBlock {
    SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(mrkdwn(text))]).into()
}

/// A header of plain text.
pub fn header(text: &str) -> SlackBlock {
    SlackHeaderBlock::new(plain(text)).into()
}

/// A divider.
pub fn divider() -> SlackBlock {
    SlackDividerBlock::new().into()
}

/// A button that sends `action` with `value` when clicked.
pub fn button(
    text: &str,
    action: Action,
    value: &str,
    style: Option<Style>,
) -> SlackBlockButtonElement {
    let mut label = SlackBlockPlainText::new(text.to_string());
    label.emoji = Some(true);
    let mut b = SlackBlockButtonElement::new(label.into());
    b.action_id = Some(action.as_str().into());
    b.value = Some(value.to_string());
    b.style = style.map(|s| match s {
        Style::Primary => SlackBlockButtonStyle::Primary,
        Style::Danger => SlackBlockButtonStyle::Danger,
    });
    b
}

/// A row of buttons.
pub fn actions(block_id: &str, buttons: Vec<SlackBlockButtonElement>) -> SlackBlock {
    let elements = buttons
        .into_iter()
        .map(SlackActionBlockElement::Button)
        .collect();
    SlackActionsBlock::new(elements)
        .with_block_id(block_id.into())
        .into()
}

/// The blocks as the JSON array the Web API takes.
pub fn to_json(blocks: &[SlackBlock]) -> Value {
    serde_json::to_value(blocks).unwrap_or_else(|e| {
        // Serialising these plain structs cannot fail; keep the message's text at least.
        tracing::error!(error = %e, "Block Kit blocks did not serialise");
        Value::Array(vec![])
    })
}
