//! What `api` provides to the distributed layer: reads on this peer's local points (the
//! same code that answers a single node) and the error mapping for peer answers.

use crate::envelope::ApiError;
use crate::handlers::local_read;
use crate::AppState;
use distributed::peer::{PeerError, PeerFuture, ReadKind};
use distributed::service::LocalReads;
use distributed::DistError;
use serde_json::Value;

pub struct LocalApi {
    pub st: AppState,
}

impl LocalReads for LocalApi {
    fn read(&self, kind: ReadKind, collection: String, body: Value) -> PeerFuture<'_, Value> {
        Box::pin(async move {
            local_read(self.st.clone(), kind, collection, body)
                .await
                .map_err(|e| PeerError::new(e.status.as_u16(), e.message))
        })
    }

    fn describe(&self, e: DistError) -> PeerError {
        let e = ApiError::from(e);
        PeerError::new(e.status.as_u16(), e.message)
    }
}
