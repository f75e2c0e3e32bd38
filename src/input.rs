//! placeholder until the helper's version lands
use serde::{Deserialize, Serialize};
/// Visibility rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Visible,
    Isolated,
}
/// One sequence.
#[derive(Clone, Debug)]
pub struct SequenceInput {
    pub token_ids: Vec<u32>,
    pub positions: Vec<i64>,
    pub groups: Vec<i32>,
    pub visibility: Visibility,
}
