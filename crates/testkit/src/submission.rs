//! Submissions as tests type them: who asks and the strings they typed, in one value, filed
//! through [`Engine::validate`] like every surface's (via [`Engine::submit_raw`]).

use std::future::Future;

use access_core::engine::{Engine, EngineError};
use access_core::request::RequestKind;
use access_core::submission::RawSubmission;
use access_core::{AccessRequest, Subject};

/// A request as a test types it.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Who asks.
    pub subject: Subject,
    /// The resource name as typed.
    pub resource: String,
    /// The duration as typed (`None`: the resource's default).
    pub duration: Option<String>,
    /// The justification as typed.
    pub justification: String,
    /// A new request or an extension.
    pub kind: RequestKind,
}

impl Ask {
    /// The typed part, for [`Engine::validate`].
    pub fn raw(&self) -> RawSubmission {
        RawSubmission {
            resource: self.resource.clone(),
            duration: self.duration.clone(),
            justification: self.justification.clone(),
            kind: self.kind,
        }
    }
}

/// Files an [`Ask`]: validated, then submitted.
pub trait SubmitTyped {
    /// [`Engine::submit_raw`] for an [`Ask`].
    fn submit_typed(
        &self,
        a: Ask,
    ) -> impl Future<Output = Result<AccessRequest, EngineError>> + Send;
    /// [`Engine::submit_emergency_raw`] for an [`Ask`].
    fn submit_emergency_typed(
        &self,
        a: Ask,
    ) -> impl Future<Output = Result<AccessRequest, EngineError>> + Send;
}

impl SubmitTyped for Engine {
    async fn submit_typed(&self, a: Ask) -> Result<AccessRequest, EngineError> {
        self.submit_raw(a.subject.clone(), &a.raw()).await
    }

    async fn submit_emergency_typed(&self, a: Ask) -> Result<AccessRequest, EngineError> {
        self.submit_emergency_raw(a.subject.clone(), &a.raw()).await
    }
}
