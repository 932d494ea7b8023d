//! Replication throttling, as Kafka's `ReplicationQuotaManager`: a leader sends, and a follower
//! fetches, the partitions named in a topic's `leader.replication.throttled.replicas` /
//! `follower.replication.throttled.replicas` at no more than the broker's
//! `leader.replication.throttled.rate` / `follower.replication.throttled.rate` (bytes/s, dynamic
//! broker configs). Replicas in the ISR are never throttled. Used by reassignments, so moving a
//! partition's data does not starve client traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::metadata::{
    ClusterImage, Throttled, FOLLOWER_THROTTLED_RATE, FOLLOWER_THROTTLED_REPLICAS,
    LEADER_THROTTLED_RATE, LEADER_THROTTLED_REPLICAS,
};

/// A byte-rate bound: a token bucket holding at most one second's worth of bytes. Sending is
/// allowed while the bucket is not in debt; what was sent is taken out afterwards, so one
/// batch may overshoot and is paid back before the next.
pub struct Quota {
    state: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes per second; None = unlimited.
    rate: Option<f64>,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(rate);
        }
        self.at = now;
    }
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            state: Mutex::new(Bucket {
                rate: None,
                tokens: 0.0,
                at: Instant::now(),
            }),
        }
    }
}

impl Quota {
    /// Sets the bound (None or `i64::MAX`: unlimited). An unchanged rate keeps the bucket.
    pub fn set_rate(&self, rate: Option<u64>) {
        let rate = rate.filter(|r| *r < i64::MAX as u64).map(|r| r as f64);
        let mut b = self.state.lock();
        if b.rate != rate {
            b.refill(Instant::now());
            b.rate = rate;
            b.tokens = rate.map_or(0.0, |r| b.tokens.min(r));
        }
    }

    #[cfg(test)]
    pub fn rate(&self) -> Option<u64> {
        self.state.lock().rate.map(|r| r as u64)
    }

    /// Whether throttled replicas must wait (the bucket is in debt).
    pub fn exceeded(&self) -> bool {
        let mut b = self.state.lock();
        if b.rate.is_none() {
            return false;
        }
        b.refill(Instant::now());
        b.tokens < 0.0
    }

    /// How long until the bucket is out of debt (zero when it is not in debt).
    pub fn wait(&self) -> Duration {
        let mut b = self.state.lock();
        let Some(rate) = b.rate else {
            return Duration::ZERO;
        };
        b.refill(Instant::now());
        if b.tokens >= 0.0 || rate <= 0.0 {
            // A zero rate never refills: check again later (the rate may change).
            return if rate <= 0.0 {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            };
        }
        Duration::from_secs_f64((-b.tokens / rate).min(1.0))
    }

    /// Takes `bytes` sent by a throttled replica out of the bucket.
    pub fn record(&self, bytes: u64) {
        let mut b = self.state.lock();
        if b.rate.is_some() {
            b.refill(Instant::now());
            b.tokens -= bytes as f64;
        }
    }
}

/// This broker's two quotas and the partitions they apply to, refreshed from each image.
#[derive(Default)]
pub struct Throttles {
    pub leader: Quota,
    pub follower: Quota,
    leader_replicas: RwLock<HashMap<String, Throttled>>,
    follower_replicas: RwLock<HashMap<String, Throttled>>,
    /// Whether any topic names replicas of this broker: fetches skip the lookups when none does.
    any: AtomicBool,
}

impl Throttles {
    /// Reads this broker's rates and throttled replicas from `image`.
    pub fn update(&self, image: &ClusterImage, node: i32) {
        let rate = |key| {
            image
                .broker_config(node, key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        self.leader.set_rate(rate(LEADER_THROTTLED_RATE));
        self.follower.set_rate(rate(FOLLOWER_THROTTLED_RATE));
        let sets = |key: &str| -> HashMap<String, Throttled> {
            image
                .topics
                .values()
                .filter_map(|t| {
                    let throttled = Throttled::parse(t.configs.get(key)?, node)?;
                    Some((t.name.clone(), throttled))
                })
                .collect()
        };
        let (leader, follower) = (
            sets(LEADER_THROTTLED_REPLICAS),
            sets(FOLLOWER_THROTTLED_REPLICAS),
        );
        self.any.store(
            !leader.is_empty() || !follower.is_empty(),
            Ordering::Relaxed,
        );
        *self.leader_replicas.write() = leader;
        *self.follower_replicas.write() = follower;
    }

    /// Whether this broker, leading `topic`-`partition`, throttles what it sends to followers
    /// outside the ISR.
    pub fn leader_throttled(&self, topic: &str, partition: i32) -> bool {
        self.any.load(Ordering::Relaxed)
            && self
                .leader_replicas
                .read()
                .get(topic)
                .is_some_and(|t| t.contains(partition))
    }

    /// Whether this broker, following `topic`-`partition` from outside the ISR, throttles its
    /// fetching.
    pub fn follower_throttled(&self, topic: &str, partition: i32) -> bool {
        self.any.load(Ordering::Relaxed)
            && self
                .follower_replicas
                .read()
                .get(topic)
                .is_some_and(|t| t.contains(partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_lets_bytes_through_at_its_rate() {
        let q = Quota::default();
        assert!(!q.exceeded(), "unlimited by default");
        q.record(u64::MAX / 2);
        assert!(!q.exceeded(), "unlimited ignores what is sent");
        q.set_rate(Some(1_000_000));
        assert!(!q.exceeded(), "a fresh bucket is not in debt");
        q.record(500_000);
        assert!(q.exceeded(), "half a second's worth of debt");
        let wait = q.wait();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        q.set_rate(Some(i64::MAX as u64));
        assert!(
            !q.exceeded(),
            "Kafka's default (Long.MAX_VALUE) is unlimited"
        );
        assert_eq!(q.rate(), None);
    }
}
