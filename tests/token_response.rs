//! Bad input from the token endpoint: each malformed answer gives a typed error whose
//! message says what to do, never a panic; harmless oddities are accepted.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use docplanner_auth::testing::{FakeDocplanner, TokenFault};
use docplanner_auth::Error;
use http::StatusCode;

fn body(status: u16, content_type: &'static str, body: &str) -> TokenFault {
    TokenFault::Body {
        status: StatusCode::from_u16(status).unwrap(),
        content_type,
        body: body.to_owned(),
    }
}

fn json(status: u16, body: &str) -> TokenFault {
    body_of(status, body)
}

fn body_of(status: u16, b: &str) -> TokenFault {
    body(status, "application/json", b)
}

type Check = fn(&Error) -> bool;

enum Expect {
    Err(Check, &'static str),
    Lifetime(u64),
}

async fn outcome(fault: TokenFault) -> Result<Duration, Error> {
    let fake = FakeDocplanner::builder().in_process();
    fake.fail_next_token_requests(1, fault);
    let cache = fake.cache().unwrap();
    cache.token().await.map(|t| t.lifetime())
}

#[tokio::test]
async fn malformed_token_responses_are_typed_errors() {
    use Expect::*;
    let huge_body = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(70 * 1024));
    let rows: Vec<(&str, TokenFault, Expect)> = vec![
        (
            "not JSON",
            body(200, "text/plain", "hello"),
            Err(Error::is_invalid_response, "not a JSON token"),
        ),
        (
            "JSON array",
            json(200, "[1,2]"),
            Err(Error::is_invalid_response, "JSON that is not an object"),
        ),
        (
            "HTML page with 200",
            body(200, "text/html", "<html><body>Login</body></html>"),
            Err(Error::is_invalid_response, "an HTML page"),
        ),
        (
            "HTML page without markup at its start",
            body(200, "text/html; charset=utf-8", "Please log in"),
            Err(
                Error::is_invalid_response,
                "with an HTML page, not a JSON token",
            ),
        ),
        (
            "HTML page served as text/plain",
            body(200, "text/plain", "  <!doctype html><p>Login</p>"),
            Err(
                Error::is_invalid_response,
                "with an HTML page, not a JSON token",
            ),
        ),
        (
            "neither JSON nor HTML",
            body(200, "application/octet-stream", "\x01\x02\x03 binary"),
            Err(
                Error::is_invalid_response,
                "with 10 bytes of something else",
            ),
        ),
        (
            "HTML error page 502",
            body(502, "text/html", "<html>Bad gateway</html>"),
            Err(Error::is_transient, "retrying with backoff"),
        ),
        (
            "missing access_token",
            json(200, r#"{"expires_in":3600,"token_type":"bearer"}"#),
            Err(Error::is_invalid_response, "without an access_token"),
        ),
        (
            "empty access_token",
            json(200, r#"{"access_token":"","expires_in":3600}"#),
            Err(
                Error::is_invalid_response,
                "may use the client-credentials grant",
            ),
        ),
        (
            "numeric access_token",
            json(200, r#"{"access_token":12345,"expires_in":3600}"#),
            Err(
                Error::is_invalid_response,
                "not a string: check the token URL",
            ),
        ),
        (
            "token with a space",
            json(200, r#"{"access_token":"abc def","expires_in":3600}"#),
            Err(
                Error::is_invalid_response,
                "cannot be sent in an HTTP header",
            ),
        ),
        (
            "token with a newline",
            json(200, r#"{"access_token":"abc\ndef","expires_in":3600}"#),
            Err(
                Error::is_invalid_response,
                "cannot be sent in an HTTP header",
            ),
        ),
        (
            "token with non-ASCII",
            json(200, r#"{"access_token":"tök","expires_in":3600}"#),
            Err(
                Error::is_invalid_response,
                "cannot be sent in an HTTP header",
            ),
        ),
        (
            "token_type mac",
            json(200, r#"{"access_token":"abc","token_type":"mac"}"#),
            Err(Error::is_invalid_response, "not a bearer token"),
        ),
        (
            "negative expires_in",
            json(200, r#"{"access_token":"abc","expires_in":-5}"#),
            Err(Error::is_invalid_response, "expected a positive number"),
        ),
        (
            "negative fractional expires_in",
            json(200, r#"{"access_token":"abc","expires_in":-0.5}"#),
            Err(
                Error::is_invalid_response,
                "expires_in = -0.5: expected a positive number",
            ),
        ),
        (
            "zero expires_in",
            json(200, r#"{"access_token":"abc","expires_in":0}"#),
            Err(Error::is_invalid_response, "already be expired"),
        ),
        (
            "huge expires_in",
            json(200, r#"{"access_token":"abc","expires_in":1e300}"#),
            Err(Error::is_invalid_response, "out of range"),
        ),
        (
            "string expires_in",
            json(200, r#"{"access_token":"abc","expires_in":"soon"}"#),
            Err(Error::is_invalid_response, "not a number"),
        ),
        (
            "object expires_in",
            json(200, r#"{"access_token":"abc","expires_in":{}}"#),
            Err(Error::is_invalid_response, "of type object"),
        ),
        (
            "200 with an OAuth error",
            json(
                200,
                r#"{"error":"invalid_client","error_description":"The client credentials are invalid"}"#,
            ),
            Err(
                Error::is_credentials,
                "check the client id and secret for fake-docplanner.test",
            ),
        ),
        (
            "400 invalid_client",
            TokenFault::InvalidClient(StatusCode::BAD_REQUEST),
            Err(Error::is_credentials, "check the client id and secret"),
        ),
        (
            "401 invalid_client",
            TokenFault::InvalidClient(StatusCode::UNAUTHORIZED),
            Err(Error::is_credentials, "check the client id and secret"),
        ),
        (
            "400 invalid_scope",
            json(400, r#"{"error":"invalid_scope"}"#),
            Err(Error::is_permanent, "ask Docplanner to enable integrations"),
        ),
        (
            "400 unauthorized_client",
            json(400, r#"{"error":"unauthorized_client"}"#),
            Err(Error::is_credentials, "ask Docplanner to enable it"),
        ),
        (
            "404",
            body(404, "text/plain", "no"),
            Err(Error::is_permanent, "check the token URL"),
        ),
        (
            "truncated body",
            TokenFault::CloseMidBody,
            Err(Error::is_transient, "the connection broke"),
        ),
        (
            "oversized body",
            json(200, &huge_body),
            Err(Error::is_invalid_response, "larger than 64 KiB"),
        ),
        // Oddities that are harmless are accepted.
        (
            "token_type BEARER",
            json(
                200,
                r#"{"access_token":"abc","token_type":"BEARER","expires_in":60}"#,
            ),
            Lifetime(60),
        ),
        (
            "missing expires_in",
            json(200, r#"{"access_token":"abc","token_type":"bearer"}"#),
            Lifetime(3600),
        ),
        (
            "numeric-string expires_in",
            json(200, r#"{"access_token":"abc","expires_in":"120"}"#),
            Lifetime(120),
        ),
        (
            "expires_in above 24 h",
            json(200, r#"{"access_token":"abc","expires_in":999999999999}"#),
            Lifetime(86_400),
        ),
    ];
    assert!(rows.iter().filter(|r| matches!(r.2, Err(..))).count() >= 12);
    for (name, fault, expect) in rows {
        let result = outcome(fault).await;
        match (expect, result) {
            (Err(check, words), Result::Err(error)) => {
                assert!(check(&error), "{name}: wrong kind: {error:?}");
                assert!(error.is_token_endpoint(), "{name}: {error:?}");
                let message = error.to_string();
                assert!(message.contains(words), "{name}: {message}");
                assert!(message.len() < 400, "{name}: message too long: {message}");
            }
            (Lifetime(secs), Ok(lifetime)) => {
                assert_eq!(lifetime, Duration::from_secs(secs), "{name}")
            }
            (_, other) => panic!("{name}: unexpected {other:?}"),
        }
    }
}
