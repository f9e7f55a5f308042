//! The logic of the `docplanner` command line client, shared by `main.rs` and
//! `tests/docplanner_cli.rs`: argument parsing, the request, the printing, the exit code.

use std::io::Write;

use bytes::Bytes;
use docplanner_auth::client::{https_client, HttpsClient};
use docplanner_auth::docplanner::{Credentials, Domain, Markets, ENV_DOMAIN, ENV_MARKETS};
use docplanner_auth::router::{Router, Set};
use docplanner_auth::testing::{client_trusting, FakeDocplanner};
use docplanner_auth::{BearerAuth, BearerAuthLayer, BoxError, ReplayBody};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

/// What `--help` and every usage error print.
pub(crate) const USAGE: &str = "\
usage: docplanner [--fake] [--domain <market>] GET <path>
       docplanner [--fake] [--domain <market>] POST <path> <json-body>

Calls the Docplanner Integrations API, https://www.{domain}/api/v3/integration<path>, with
the credentials in DOCPLANNER_DOMAIN (doctoralia.es, or a country code such as es),
DOCPLANNER_CLIENT_ID and DOCPLANNER_CLIENT_SECRET, and prints the JSON answer. With several
markets, set DOCPLANNER_MARKETS (es,pl,it) and DOCPLANNER_<M>_CLIENT_ID and
DOCPLANNER_<M>_CLIENT_SECRET for each (DOCPLANNER_ES_CLIENT_ID…), and choose the market
with --domain (the first listed by default).
  --domain <market>  the market to call (doctoralia.es, or a country code such as es)
  --fake      call an embedded fake Docplanner on 127.0.0.1 instead (no credentials needed;
              with --domain, three fake markets es, pl and it behind one client)
  -h, --help  print this help

Exit status: 0 for a 2xx answer, 1 for another answer or an error, 2 for bad arguments.

Examples:
  docplanner --fake GET /facilities
  docplanner --fake --domain pl GET /facilities
  docplanner GET /facilities/1/doctors
  docplanner POST /facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book \\
      '{\"address_service_id\":\"1\",\"duration\":30,\"patient\":{}}'";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Help,
    Call {
        fake: bool,
        /// `--domain`: the market to call.
        domain: Option<String>,
        method: Method,
        /// Starts with `/`; appended to the API base.
        path: String,
        body: Option<serde_json::Value>,
    },
}

/// Parse the arguments (without the program name).
pub(crate) fn parse(args: &[String]) -> Result<Command, String> {
    let mut fake = false;
    let mut domain = None;
    let mut positional = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--fake" => fake = true,
            "--domain" => match args.next() {
                Some(market) if !market.starts_with('-') => domain = Some(market.clone()),
                _ => return Err("--domain needs a market, such as es or doctoralia.es".to_owned()),
            },
            option if option.starts_with("--domain=") => {
                domain = Some(option["--domain=".len()..].to_owned());
            }
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
        domain,
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
        domain,
        method,
        path,
        body,
    } = command
    else {
        let _ = writeln!(out, "{USAGE}");
        return 0;
    };
    match call(fake, domain.as_deref(), method, &path, body, out, err).await {
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

/// The authenticated client every call goes through.
type Client = BearerAuth<HttpsClient<ReplayBody<Full<Bytes>>>>;

/// The markets `--fake --domain` serves, each from a fake of its own.
const FAKE_MARKETS: [&str; 3] = ["es", "pl", "it"];

async fn call(
    fake: bool,
    domain: Option<&str>,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<StatusCode, BoxError> {
    // The fakes, when asked for, live until the answer is printed.
    let (client, api_base, fakes) = match (fake, domain) {
        (true, None) => {
            let fake = FakeDocplanner::builder().start().await?;
            (fake.authenticated_client()?, fake.api_base(), vec![fake])
        }
        (true, Some(domain)) => fake_markets(domain).await?,
        (false, domain) => {
            let (client, api_base) = real_client(domain)
                .map_err(|e| format!("{e} (or try --fake, which needs no credentials)"))?;
            (client, api_base, Vec::new())
        }
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
    if fakes.len() > 1 {
        let token_requests: Vec<String> = FAKE_MARKETS
            .iter()
            .zip(&fakes)
            .map(|(market, fake)| format!("{market}={}", fake.stats().token_requests))
            .collect();
        writeln!(
            err,
            "fake markets, token requests: {}",
            token_requests.join(" ")
        )?;
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(json) => writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?,
        Err(_) if bytes.is_empty() => {}
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&bytes))?,
    }
    Ok(status)
}

/// The client for the real API: several markets when [`ENV_MARKETS`] is set (one
/// credential set each, `--domain` choosing where the request goes), else the one market
/// of [`ENV_DOMAIN`] (which `--domain` replaces).
fn real_client(domain: Option<&str>) -> Result<(Client, String), BoxError> {
    if std::env::var_os(ENV_MARKETS).is_none() {
        let credentials = Credentials::from_lookup(|name| match (name, domain) {
            (ENV_DOMAIN, Some(domain)) => Some(domain.to_owned()),
            _ => std::env::var(name).ok(),
        })?;
        let api_base = credentials.domain().api_base();
        return Ok((credentials.client()?, api_base));
    }
    let markets = Markets::from_env()?;
    let configured = markets.credentials();
    let chosen = match domain {
        Some(domain) => domain.parse::<Domain>()?,
        None => configured[0].domain().clone(),
    };
    if !configured.iter().any(|c| *c.domain() == chosen) {
        let listed: Vec<&str> = configured.iter().map(|c| c.domain().name()).collect();
        return Err(format!(
            "--domain {} is not one of the markets of {ENV_MARKETS} ({})",
            chosen.name(),
            listed.join(", ")
        )
        .into());
    }
    let layer = BearerAuthLayer::routed(markets.router()?);
    Ok((BearerAuth::new(https_client()?, &layer), chosen.api_base()))
}

/// Three fake markets (es, pl, it) behind one routed client; the request goes to `domain`.
async fn fake_markets(domain: &str) -> Result<(Client, String, Vec<FakeDocplanner>), BoxError> {
    let chosen = FAKE_MARKETS
        .iter()
        .position(|m| domain.parse::<Domain>().ok() == m.parse::<Domain>().ok())
        .ok_or_else(|| {
            format!(
                "--fake serves the markets {}: choose one",
                FAKE_MARKETS.join(", ")
            )
        })?;
    let mut fakes = Vec::new();
    let mut router: Option<docplanner_auth::router::RouterBuilder> = None;
    for market in FAKE_MARKETS {
        let fake = FakeDocplanner::builder()
            .client_id(&format!("{market}-id"))
            .start()
            .await?;
        let set = Set::new(fake.cache_builder()?.name(market).build(), &fake.api_base())?;
        router = Some(match router {
            None => Router::builder(set),
            Some(builder) => builder.set(set),
        });
        fakes.push(fake);
    }
    let router = router.ok_or("no market")?.build()?;
    let http = client_trusting(&fakes.iter().collect::<Vec<_>>())?;
    let client = BearerAuth::new(http, &BearerAuthLayer::routed(router));
    Ok((client, fakes[chosen].api_base(), fakes))
}
