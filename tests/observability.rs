//! What the crate tells the outside world through `tracing`: the output of a full run
//! has its spans and events, and no secret or token anywhere.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use docplanner_auth::testing::FakeDocplanner;

const SECRET: &str = "Obs3rvable-Secret-9d1c";

/// A `MakeWriter` collecting everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn tracing_shows_the_story_and_never_a_secret() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeDocplanner::builder()
        .client_id("clinic-7")
        .client_secret(SECRET)
        .start()
        .await
        .unwrap();
    support::full_run(&fake).await.unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
