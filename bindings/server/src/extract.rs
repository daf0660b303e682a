//! [`ApiJson`]: axum's JSON body extractor with its rejections answered as OpenAI-shaped
//! errors (400 bad JSON, 413 too large, 415 wrong content type, 422 wrong shape).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(rejection: JsonRejection) -> Error {
    let status = rejection.status();
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a request with Content-Type: application/json".to_owned()
        }
        JsonRejection::BytesRejection(_) if status.as_u16() == 413 => {
            "the request body is larger than the server accepts".to_owned()
        }
        _ => rejection.body_text(),
    };
    Error::Body { status, message }
}
