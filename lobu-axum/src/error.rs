//! [`ApiError`]: one failed HTTP request, always answered as `{"error": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lobu_core::ErrorKind;

/// One failed HTTP request: a status and a message naming the problem, sent as
/// `{"error": "..."}`. Client mistakes are 4xx, never 5xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is wrong (an id, the body, a query parameter). Sizes over a limit
    /// are 413 and bodies that are not declared JSON 415 (see [`ApiError::new`]).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no key, or a key the server does not know.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or unknown API key: send `Authorization: Bearer <key>`",
        )
    }

    /// 404: nothing here for this caller.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 503: the server cannot answer now (shutting down, store unreachable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent as `error`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<lobu_core::Error> for ApiError {
    fn from(error: lobu_core::Error) -> Self {
        let status = match error.kind() {
            // Every input the HTTP layer passes on is the client's: ids, text, cursors, limits.
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Busy | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if !status.is_server_error() {
            return ApiError::new(status, error.message().to_owned());
        }
        // The chain goes to the log; clients get no database names, paths or SQL.
        tracing::error!(error = &error as &dyn std::error::Error, "request failed");
        let message = if status == StatusCode::SERVICE_UNAVAILABLE {
            "the store is unavailable; try again later"
        } else {
            "internal server error (details are in the server log)"
        };
        ApiError::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_from_lobu_are_4xx_and_keep_their_message() {
        let e = ApiError::from(lobu_core::Error::invalid(
            "agent id may only contain [A-Za-z0-9_-]",
        ));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.message(), "agent id may only contain [A-Za-z0-9_-]");
        let e = ApiError::from(lobu_core::Error::too_large("run payload is 2000000 bytes"));
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.message(), "run payload is 2000000 bytes");
    }

    #[test]
    fn server_errors_do_not_leak_store_details() {
        let e = ApiError::from(lobu_core::Error::corrupt(
            "state.json of /var/lib/x is torn",
        ));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("/var/lib"), "{}", e.message());
        let e = ApiError::from(lobu_core::Error::unavailable("db \"prod\" is gone"));
        assert!(!e.message().contains("prod"), "{}", e.message());
    }

    #[test]
    fn store_outages_are_503_and_missing_things_404() {
        assert_eq!(
            ApiError::from(lobu_core::Error::unavailable("pool closed")).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(lobu_core::Error::not_found("no run")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from(lobu_core::Error::corrupt("torn head")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn unauthorized_answers_carry_a_bearer_challenge() {
        let response = ApiError::unauthorized().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
