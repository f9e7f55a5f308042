//! What the crate tells the outside world through `tracing`: the output of a full run
//! has its spans and events, and no secret or token anywhere.
#![allow(clippy::unwrap_used)]

mod support;

use docplanner_auth::testing::FakeDocplanner;
use support::Captured;

const SECRET: &str = "Obs3rvable-Secret-9d1c";

#[tokio::test]
async fn tracing_shows_the_story_and_never_a_secret() {
    let (captured, _guard) = Captured::install(tracing::Level::TRACE);

    let fake = FakeDocplanner::builder()
        .client_id("clinic-7")
        .client_secret(SECRET)
        .start()
        .await
        .unwrap();
    support::full_run(&fake).await.unwrap();

    let text = captured.text();
    for expected in [
        "docplanner_auth.refresh",
        "trigger=\"waiting\"",
        "outcome=\"ok\"",
        "new access token stored",
        "token rejected (401): suspect until a new one arrives",
        "replaying a request",
        "token refresh failed; backing off",
        "request refused before sending",
        "check the client id and secret",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("clinic-7:{SECRET}"));
    assert!(!text.contains(SECRET), "the secret leaked");
    assert!(!text.contains(&basic), "the basic credentials leaked");
    let tokens = fake.issued_tokens();
    assert!(tokens.len() >= 2);
    for token in tokens {
        assert!(!text.contains(&token), "a token leaked");
    }
    if std::env::var_os("SHOW_TRACING").is_some() {
        println!("{text}");
    }
}
