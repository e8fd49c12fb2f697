//! The OCI error body: `{"errors":[{"code","message","detail"}]}`.

use serde::Serialize;

/// Error codes from the distribution spec; only these are ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    Toomanyrequests,
    /// distribution's code for 5xx answers; the spec defines codes for 4xx only.
    Unavailable,
}

#[derive(Debug, Serialize)]
struct ErrorEntry<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

/// Serialises one OCI error.
pub fn error_body(code: ErrorCode, message: &str, detail: Option<&serde_json::Value>) -> Vec<u8> {
    let body = ErrorBody {
        errors: [ErrorEntry {
            code,
            message,
            detail,
        }],
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"errors":[]}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_body_carries_code_and_detail() {
        let detail = serde_json::json!({"reason": "unsigned"});
        let body = error_body(ErrorCode::Denied, "not signed", Some(&detail));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED");
        assert_eq!(v["errors"][0]["detail"]["reason"], "unsigned");
    }
}
