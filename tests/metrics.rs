//! The metrics of feature `metrics`, captured by a debugging recorder. A binary of its own:
//! the recorder is process-wide.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)]

mod support;

use docplanner_auth::testing::FakeDocplanner;
use support::full_run;

#[tokio::test]
async fn metrics_count_fetches_invalidations_replays_and_refusals() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let fake = FakeDocplanner::builder().start().await.unwrap();
    full_run(&fake).await.unwrap();

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let value = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        seen.insert(name, value);
    }
    let get = |name: &str| {
        *seen
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {seen:#?}"))
    };
    let cache = "cache=fake-docplanner";
    assert_eq!(
        get(&format!(
            "docplanner_auth_token_fetches_total{{{cache},outcome=ok}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "docplanner_auth_token_fetches_total{{{cache},outcome=transient_error}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "docplanner_auth_token_fetches_total{{{cache},outcome=permanent_error}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "docplanner_auth_token_fetch_duration_seconds{{{cache},outcome=ok}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!("docplanner_auth_invalidations_total{{{cache}}}")),
        1.0
    );
    assert_eq!(
        get(&format!("docplanner_auth_replays_total{{{cache}}}")),
        1.0
    );
    assert_eq!(
        get(&format!(
            "docplanner_auth_refused_requests_total{{{cache},reason=insecure_scheme}}"
        )),
        1.0
    );
    let remaining = get(&format!(
        "docplanner_auth_token_remaining_seconds{{{cache}}}"
    ));
    assert!(remaining > 3000.0 && remaining <= 3600.0, "{remaining}");
    assert!(
        get(&format!(
            "docplanner_auth_token_expiry_timestamp_seconds{{{cache}}}"
        )) > 1.7e9
    );
}
