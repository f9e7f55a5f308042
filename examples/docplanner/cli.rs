//! The logic of the `docplanner` command line client, shared by `main.rs` and
//! `tests/docplanner_cli.rs`: argument parsing, the request, the printing, the exit code.

use std::io::Write;

use bytes::Bytes;
use docplanner_auth::docplanner::Credentials;
use docplanner_auth::testing::FakeDocplanner;
use docplanner_auth::BoxError;
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

/// What `--help` and every usage error print.
pub(crate) const USAGE: &str = "\
usage: docplanner [--fake] GET <path>
       docplanner [--fake] POST <path> <json-body>

Calls the Docplanner Integrations API, https://www.{domain}/api/v3/integration<path>, with
the credentials in DOCPLANNER_DOMAIN (doctoralia.es, or a country code such as es),
DOCPLANNER_CLIENT_ID and DOCPLANNER_CLIENT_SECRET, and prints the JSON answer.
  --fake      call an embedded fake Docplanner on 127.0.0.1 instead (no credentials needed)
  -h, --help  print this help

Exit status: 0 for a 2xx answer, 1 for another answer or an error, 2 for bad arguments.

Examples:
  docplanner --fake GET /facilities
  docplanner GET /facilities/1/doctors
  docplanner POST /facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book \\
      '{\"address_service_id\":\"1\",\"duration\":30,\"patient\":{}}'";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Help,
    Call {
        fake: bool,
        method: Method,
        /// Starts with `/`; appended to the API base.
        path: String,
        body: Option<serde_json::Value>,
    },
}

/// Parse the arguments (without the program name).
pub(crate) fn parse(args: &[String]) -> Result<Command, String> {
    let mut fake = false;
    let mut positional = Vec::new();
    for arg in args {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--fake" => fake = true,
            option if option.starts_with('-') => {
                return Err(format!("unknown option `{option}`"));
            }
            _ => positional.push(arg.as_str()),
        }
    }
    let (method, path, rest) = match positional.as_slice() {
        [] => return Err("give a method (GET or POST) and a path".to_owned()),
        [_] => return Err("give a path after the method, such as /facilities".to_owned()),
        [method, path, rest @ ..] => (*method, *path, rest),
    };
    let method = match method.to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        _ => return Err(format!("unsupported method `{method}`: use GET or POST")),
    };
    if !path.starts_with('/') || path.parse::<PathAndQuery>().is_err() {
        return Err(format!(
            "`{path}` is not an API path: give one such as /facilities (it is appended to \
             https://www.{{domain}}/api/v3/integration)"
        ));
    }
    let body = match (&method, rest) {
        (&Method::GET, []) => None,
        (&Method::GET, _) => return Err("GET takes no body".to_owned()),
        (_, []) => return Err("POST needs a JSON body argument".to_owned()),
        (_, [json]) => Some(
            serde_json::from_str(json).map_err(|e| format!("the body is not valid JSON: {e}"))?,
        ),
        (_, _) => return Err("too many arguments: quote the JSON body".to_owned()),
    };
    Ok(Command::Call {
        fake,
        method,
        path: path.to_owned(),
        body,
    })
}

/// Run the command line: parse, call, print the answer (pretty JSON) on `out` and the
/// status or the error on `err`. Returns the exit status.
pub(crate) async fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let command = match parse(args) {
        Ok(command) => command,
        Err(problem) => {
            let _ = writeln!(err, "error: {problem}\n\n{USAGE}");
            return 2;
        }
    };
    let Command::Call {
        fake,
        method,
        path,
        body,
    } = command
    else {
        let _ = writeln!(out, "{USAGE}");
        return 0;
    };
    match call(fake, method, &path, body, out, err).await {
        Ok(status) if status.is_success() => 0,
        Ok(_) => 1,
        Err(error) => {
            // Display only: our errors never contain a secret or a token.
            let _ = writeln!(err, "error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                let _ = writeln!(err, "  caused by: {cause}");
                source = cause.source();
            }
            1
        }
    }
}

async fn call(
    fake: bool,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<StatusCode, BoxError> {
    // The fake, when asked for, lives until the answer is printed.
    let (client, api_base, _fake) = if fake {
        let fake = FakeDocplanner::builder().start().await?;
        (fake.authenticated_client()?, fake.api_base(), Some(fake))
    } else {
        let credentials = Credentials::from_env()
            .map_err(|e| format!("{e} (or try --fake, which needs no credentials)"))?;
        let api_base = credentials.domain().api_base();
        (credentials.client()?, api_base, None)
    };
    let mut request = Request::builder()
        .method(method.clone())
        .uri(format!("{api_base}{path}"));
    let body = match body {
        Some(json) => {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(serde_json::to_vec(&json)?))
        }
        None => Full::default(),
    };
    let response = client.oneshot(request.body(body)?).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    writeln!(err, "{method} {path} -> {status}")?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(json) => writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?,
        Err(_) if bytes.is_empty() => {}
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&bytes))?,
    }
    Ok(status)
}
