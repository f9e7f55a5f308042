//! The `docplanner` command line client of `examples/docplanner`, run against the fake
//! Docplanner (`--fake`): its logic is `examples/docplanner/cli.rs`, included here. The
//! path that reads real credentials from the environment is never run by tests.
#![allow(clippy::unwrap_used)]

#[path = "../examples/docplanner/cli.rs"]
mod cli;

use http::Method;
use serde_json::json;

/// Run the command line with `args`; (exit status, stdout, stderr).
async fn run(args: &[&str]) -> (u8, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(&args, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

const BOOKING: &str = "/facilities/1/doctors/2/addresses/3/slots/2026-12-01T10:00:00+01:00/book";

#[tokio::test]
async fn get_prints_the_answer_as_pretty_json() {
    let (code, out, err) = run(&["--fake", "GET", "/facilities"]).await;
    assert_eq!(code, 0, "{err}");
    let expected = json!({"_items": [{"id": "1", "name": "Sample hospital"}]});
    assert_eq!(
        out,
        format!("{}\n", serde_json::to_string_pretty(&expected).unwrap())
    );
    assert_eq!(err, "GET /facilities -> 200 OK\n");
}

#[tokio::test]
async fn post_sends_the_json_body() {
    let body = r#"{"address_service_id":"1","duration":30,"patient":{}}"#;
    let (code, out, err) = run(&["POST", BOOKING, body, "--fake"]).await;
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["id"], "booking-1");
    assert_eq!(answer["start_at"], "2026-12-01T10:00:00+01:00");
    assert_eq!(
        answer["request"],
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
    assert!(out.contains("\n  \"id\": \"booking-1\""), "pretty: {out}");
    assert!(err.contains("201 Created"), "{err}");
}

/// Docplanner's error answers are printed too, and the exit status says it failed.
#[tokio::test]
async fn an_error_answer_is_printed_and_exits_1() {
    let (code, out, err) = run(&["--fake", "get", "/no/such/route"]).await;
    assert_eq!(code, 1);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["message"], "No route found");
    assert!(err.contains("404 Not Found"), "{err}");
}

#[tokio::test]
async fn bad_arguments_print_the_usage_and_exit_2() {
    for (args, problem) in [
        (&[][..], "give a method"),
        (&["--fake"][..], "give a method"),
        (&["GET"][..], "give a path"),
        (&["PUT", "/facilities"][..], "unsupported method `PUT`"),
        (&["GET", "facilities"][..], "is not an API path"),
        (&["GET", "/a b"][..], "is not an API path"),
        (&["GET", "/facilities", "{}"][..], "GET takes no body"),
        (&["POST", BOOKING][..], "POST needs a JSON body"),
        (&["POST", BOOKING, "{oops"][..], "not valid JSON"),
        (&["POST", BOOKING, "{}", "{}"][..], "too many arguments"),
        (
            &["--verbose", "GET", "/facilities"][..],
            "unknown option `--verbose`",
        ),
    ] {
        let (code, out, err) = run(args).await;
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(problem), "{args:?}: {err}");
        assert!(err.contains(cli::USAGE), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn help_prints_the_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let (code, out, err) = run(&["GET", flag]).await;
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(out, format!("{}\n", cli::USAGE));
    }
}

#[test]
fn parsing() {
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        cli::parse(&args(&["--fake", "POST", "/x?y=1", r#"{"a":[1]}"#])),
        Ok(cli::Command::Call {
            fake: true,
            domain: None,
            method: Method::POST,
            path: "/x?y=1".to_owned(),
            body: Some(json!({"a": [1]})),
        })
    );
    assert_eq!(
        cli::parse(&args(&["GET", "/facilities"])),
        Ok(cli::Command::Call {
            fake: false,
            domain: None,
            method: Method::GET,
            path: "/facilities".to_owned(),
            body: None,
        })
    );
    assert_eq!(
        cli::parse(&args(&["--domain", "pl", "GET", "/facilities"])),
        Ok(cli::Command::Call {
            fake: false,
            domain: Some("pl".to_owned()),
            method: Method::GET,
            path: "/facilities".to_owned(),
            body: None,
        })
    );
    assert!(cli::parse(&args(&["GET", "/facilities", "--domain"])).is_err());
}

#[tokio::test]
async fn with_several_fake_markets_domain_chooses_the_set_and_only_its_token_is_fetched() {
    let (code, out, err) =
        run(&["--fake", "--domain", "znanylekarz.pl", "GET", "/facilities"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Sample hospital"), "{out}");
    assert_eq!(
        err,
        "GET /facilities -> 200 OK\nfake markets, token requests: es=0 pl=1 it=0\n"
    );
    let (code, _, err) = run(&["--fake", "--domain", "it", "GET", "/facilities"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.ends_with("es=0 pl=0 it=1\n"), "{err}");
    let (code, _, err) = run(&["--fake", "--domain", "de", "GET", "/facilities"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--fake serves the markets es, pl, it"),
        "{err}"
    );
}
