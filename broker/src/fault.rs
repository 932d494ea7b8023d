//! Failure injection for end-to-end tests: `KAIROS_FAULT` names points (comma-separated) at
//! which the process aborts, so a test can stop a broker at an exact step of a protocol (say,
//! between delivering a batch and recording it as delivered) instead of hoping a SIGKILL lands
//! there. Unset in production; every point is a no-op then.

use std::sync::OnceLock;

/// After a Redis-scheduled retry batch was delivered, before its entries are finalized.
pub const RETRY_AFTER_SEND: &str = "retry-after-send";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("KAIROS_FAULT")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Aborts the process (as SIGKILL would stop it: no clean shutdown) when `point` is armed.
pub fn point(point: &str) {
    if armed().iter().any(|p| p == point) {
        tracing::error!("KAIROS_FAULT={point}: aborting here");
        std::process::abort();
    }
}
