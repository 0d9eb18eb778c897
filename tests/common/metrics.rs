//! Reading samples from a proxy's `/metrics` (OpenMetrics text).

use super::http::http;
use super::proxy::TestProxy;

/// The value of the series `name` (with its labels, as the exposition
/// prints them, e.g. `portcullis_redirects_total{listener="public"}`) in
/// `text`, if it has a sample.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `proxy`'s `/metrics` and returns the series `name`; panics,
/// showing the scrape, if it has no sample.
pub async fn metric(proxy: &TestProxy, name: &str) -> f64 {
    let r = http(&proxy.admin_addr(), "GET", "/metrics", None).await;
    sample(&r.body, name).unwrap_or_else(|| panic!("no {name} in\n{}", r.body))
}

/// Like [`metric`], but 0 while the series has no sample yet (a labeled
/// counter appears at its first count).
pub async fn metric_or_zero(proxy: &TestProxy, name: &str) -> f64 {
    let body = http(&proxy.admin_addr(), "GET", "/metrics", None)
        .await
        .body;
    sample(&body, name).unwrap_or(0.0)
}
