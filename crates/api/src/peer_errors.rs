//! What `api` provides to the distributed layer: the one error mapping, for the answers
//! this peer gives other peers.

use crate::envelope::ApiError;
use distributed::peer::PeerError;
use distributed::service::ErrorMap;
use distributed::DistError;

pub struct ApiErrors;

impl ErrorMap for ApiErrors {
    fn describe(&self, e: DistError) -> PeerError {
        let e = ApiError::from(e);
        PeerError::new(e.status.as_u16(), e.message)
    }
}
