use segment::store::StoreError;

/// Errors of the collection layer. The `api` crate maps each variant to an HTTP status once.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    /// 404: collection (or alias) does not exist.
    #[error("Not found: Collection `{0}` doesn't exist!")]
    CollectionNotFound(String),
    /// 404: point does not exist.
    #[error("Not found: No point with id {0} found")]
    PointNotFound(String),
    /// 409: collection already exists.
    #[error("Wrong input: Collection `{0}` already exists!")]
    AlreadyExists(String),
    /// 409: the name is taken by something else (an alias named like a collection).
    #[error("Wrong input: {0}")]
    Conflict(String),
    /// 400: request is well-formed JSON but semantically wrong.
    #[error("Wrong input: {0}")]
    BadInput(String),
    /// 422: request fails validation of field values.
    #[error("Validation error: {0}")]
    Validation(String),
    /// 400: feature accepted by the API but not implemented by Sextant yet.
    #[error("Wrong input: {0} is not supported by Sextant yet")]
    Unsupported(String),
    /// 500: storage failure.
    #[error("Service internal error: {0}")]
    Service(String),
}

impl From<StoreError> for CollectionError {
    fn from(e: StoreError) -> Self {
        // StoreError texts already start with "Wrong input: "
        let s = e.to_string();
        CollectionError::BadInput(s.strip_prefix("Wrong input: ").unwrap_or(&s).to_string())
    }
}

impl From<std::io::Error> for CollectionError {
    fn from(e: std::io::Error) -> Self {
        CollectionError::Service(e.to_string())
    }
}

impl From<wal::WalError> for CollectionError {
    fn from(e: wal::WalError) -> Self {
        CollectionError::Service(e.to_string())
    }
}

impl CollectionError {
    /// The request was wrong (4xx), as opposed to a storage failure.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, CollectionError::Service(_))
    }
}

pub type CResult<T> = Result<T, CollectionError>;
