//! The server's error type and the one place errors become HTTP responses: a status from
//! the engine's [`ErrorKind`] and an OpenAI-shaped body
//! (`{"error": {"message", "type", "param", "code"}}`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tribute::ErrorKind;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Status of a request the client gave up on (nginx's "client closed request").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine refused or failed the call; the status follows [`tribute::Error::kind`].
    #[error(transparent)]
    Engine(#[from] tribute::Error),
    /// The request is malformed or asks for something the API does not offer.
    #[error("{message}")]
    BadRequest {
        /// What is wrong and how to fix it.
        message: String,
        /// The offending request field, when there is one.
        param: Option<&'static str>,
    },
    /// The body could not be read as the endpoint's JSON (status from axum: 400 bad JSON,
    /// 413 too large, 415 wrong content type, 422 wrong shape).
    #[error("{message}")]
    Body {
        /// The HTTP status.
        status: StatusCode,
        /// What axum reported.
        message: String,
    },
    /// No model, adapter or receipt has this id.
    #[error("{what} not found: {id}")]
    NotFound {
        /// `model`, `receipt`, …
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Too many requests are in flight or waiting; retry after `retry_after_secs`.
    #[error(
        "the server is overloaded: {in_flight} requests are running and {waiting} are waiting, \
         the most it queues; retry later"
    )]
    Overloaded {
        /// Requests running.
        in_flight: usize,
        /// Requests waiting (the queue's limit).
        waiting: usize,
        /// The `Retry-After` the client is told.
        retry_after_secs: u64,
    },
    /// No API key, or one the server does not know (401). The message never holds the key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The key is valid but its scope does not allow the request (403).
    #[error("{message}")]
    Forbidden {
        /// What the key may not do.
        message: String,
        /// The request field that asks for it, when there is one.
        param: Option<&'static str>,
    },
    /// A keys file could not be read or holds a bad entry.
    #[error("API keys: {0}")]
    Keys(String),
    /// No API keys are configured and the address is not a loopback one.
    #[error(
        "refusing to serve without API keys on {0}, which is not a loopback address: add keys \
         (`tribute serve keys add`) or allow an open server explicitly (--allow-open)"
    )]
    OpenOnPublicAddress(std::net::SocketAddr),
    /// A blocking engine call panicked or was aborted.
    #[error("the engine call failed: {0}")]
    Task(String),
    /// The listener could not be bound or served.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    /// The OpenTelemetry exporter could not be built, flushed or shut down.
    #[error("OpenTelemetry: {0}")]
    Telemetry(String),
}

impl Error {
    /// A 400 about `param`.
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Error::BadRequest {
            message: message.into(),
            param,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Engine(e) => kind_status(e.kind()),
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Body { status, .. } => *status,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Keys(_)
            | Error::OpenOnPublicAddress(_)
            | Error::Task(_)
            | Error::Io(_)
            | Error::Telemetry(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type` and a stable `code` for this error.
    fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Error::Engine(e) => match e.kind() {
                ErrorKind::Request => ("invalid_request_error", "invalid_request"),
                ErrorKind::Adapter => ("invalid_request_error", "adapter_error"),
                ErrorKind::Overloaded => ("rate_limit_error", "overloaded"),
                ErrorKind::Cancelled => ("invalid_request_error", "cancelled"),
                ErrorKind::KnowledgeBase => ("server_error", "knowledge_base_error"),
                ErrorKind::Model => ("server_error", "model_error"),
                ErrorKind::Attribution => ("server_error", "attribution_error"),
                ErrorKind::Receipt => ("server_error", "receipt_error"),
                ErrorKind::Chain => ("server_error", "chain_error"),
                ErrorKind::Config => ("server_error", "config_error"),
                _ => ("server_error", "internal_error"),
            },
            Error::BadRequest { .. } => ("invalid_request_error", "invalid_request"),
            Error::Body { status, .. } => match status.as_u16() {
                413 => ("invalid_request_error", "request_too_large"),
                415 => ("invalid_request_error", "unsupported_media_type"),
                _ => ("invalid_request_error", "invalid_json"),
            },
            Error::NotFound { what: "model", .. } => ("invalid_request_error", "model_not_found"),
            Error::NotFound { .. } => ("invalid_request_error", "not_found"),
            Error::Overloaded { .. } => ("rate_limit_error", "overloaded"),
            Error::Unauthorized(_) => ("invalid_request_error", "invalid_api_key"),
            Error::Forbidden { .. } => ("permission_error", "insufficient_scope"),
            Error::Keys(_)
            | Error::OpenOnPublicAddress(_)
            | Error::Task(_)
            | Error::Io(_)
            | Error::Telemetry(_) => ("server_error", "internal_error"),
        }
    }

    /// The OpenAI-shaped error body.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.type_and_code();
        let param = match self {
            Error::BadRequest { param, .. } | Error::Forbidden { param, .. } => *param,
            Error::NotFound { what: "model", .. } => Some("model"),
            _ => None,
        };
        json!({
            "error": {
                "message": tribute::common::error_chain(self),
                "type": kind,
                "param": param,
                "code": code,
            }
        })
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Overloaded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Error::Engine(e) if e.kind() == ErrorKind::Overloaded => Some(1),
            _ => None,
        }
    }
}

/// The status of an engine error's domain.
pub fn kind_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Request | ErrorKind::Adapter => StatusCode::BAD_REQUEST,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Cancelled => {
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::REQUEST_TIMEOUT)
        }
        ErrorKind::Chain => StatusCode::BAD_GATEWAY,
        ErrorKind::Model => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(%status, error = %tribute::common::error_chain(&self), "request failed");
        } else {
            tracing::debug!(%status, error = %tribute::common::error_chain(&self), "request refused");
        }
        let mut response = (status, Json(self.body())).into_response();
        if matches!(self, Error::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_domains_map_to_statuses_and_openai_bodies() {
        let e = Error::from(tribute::Error::InvalidRequest(
            "top_k must be at least 1".into(),
        ));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        assert!(
            e.body()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("top_k"))
        );
        assert_eq!(
            Error::from(tribute::Error::Cancelled).status().as_u16(),
            499
        );
        assert_eq!(
            Error::from(tribute::Error::Task("x".into())).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let busy = Error::Overloaded {
            in_flight: 1,
            waiting: 0,
            retry_after_secs: 2,
        };
        let r = busy.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let missing = Error::NotFound {
            what: "model",
            id: "gpt-4".into(),
        };
        assert_eq!(missing.body()["error"]["code"], "model_not_found");
        assert_eq!(missing.body()["error"]["param"], "model");
    }
}
