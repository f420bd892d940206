//! A `GetFlowsRequest.field_mask` over `flow.Flow`: the server copies only
//! the named fields.
//!
//! To be built (see `FlowMask`).

use hubble_api::flow::Flow;

/// A compiled field mask; the empty mask keeps everything.
#[derive(Debug, Default)]
pub struct FlowMask {}

/// A path that names no field of `flow.Flow`.
#[derive(Debug, thiserror::Error)]
pub enum FieldMaskError {}

impl FlowMask {
    /// Compiles `mask` (`None` or no paths: keep everything).
    pub fn compile(_mask: Option<&prost_types::FieldMask>) -> Result<Self, FieldMaskError> {
        Ok(Self {})
    }

    /// `flow` with only the masked fields.
    pub fn apply(&self, flow: Flow) -> Flow {
        flow
    }
}
