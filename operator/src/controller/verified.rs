//! Buckets found in order recently, so the reconciles that the children's watch events trigger
//! while an instance comes up (five or more per instance) do not each repeat the two S3
//! requests of [`crate::bucket::BucketClient::ensure`] (issue 14: 1,000 instances). A bucket is
//! checked again once its last check is older than the resync period, i.e. on the periodic
//! resync, which is what catches a bucket deleted behind the operator's back.

use crate::bucket::{BucketState, LifecycleState};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each bucket was last found in order, and in what state.
#[derive(Debug)]
pub struct VerifiedBuckets {
    fresh_for: Duration,
    checked: Mutex<HashMap<String, (Instant, BucketState)>>,
}

impl VerifiedBuckets {
    /// Checks stay valid for `fresh_for` (the resync period).
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            checked: Mutex::default(),
        }
    }

    /// The state of a bucket checked less than `fresh_for` ago, as a new check would report
    /// it (not created now, its lifecycle rule present).
    pub fn get(&self, bucket: &str) -> Option<BucketState> {
        let checked = self.checked.lock().expect("bucket memo lock");
        let (at, state) = checked.get(bucket)?;
        (at.elapsed() < self.fresh_for).then_some(BucketState {
            created: false,
            lifecycle: match state.lifecycle {
                LifecycleState::Applied => LifecycleState::Present,
                other => other,
            },
        })
    }

    /// Records a successful check.
    pub fn remember(&self, bucket: &str, state: BucketState) {
        self.checked
            .lock()
            .expect("bucket memo lock")
            .insert(bucket.to_string(), (Instant::now(), state));
    }

    /// Forgets a bucket (deleted, or its instance is going away).
    pub fn forget(&self, bucket: &str) {
        self.checked
            .lock()
            .expect("bucket memo lock")
            .remove(bucket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLIED: BucketState = BucketState {
        created: true,
        lifecycle: LifecycleState::Applied,
    };

    #[test]
    fn a_check_is_reused_within_the_period_as_a_new_check_would_report_it() {
        let memo = VerifiedBuckets::new(Duration::from_secs(300));
        assert_eq!(memo.get("vibe-alice"), None, "never checked");
        memo.remember("vibe-alice", APPLIED);
        assert_eq!(
            memo.get("vibe-alice"),
            Some(BucketState {
                created: false,
                lifecycle: LifecycleState::Present
            })
        );
        assert_eq!(memo.get("vibe-bob"), None);
        memo.forget("vibe-alice");
        assert_eq!(memo.get("vibe-alice"), None, "forgotten");
    }

    #[test]
    fn a_check_older_than_the_period_is_not_reused() {
        let memo = VerifiedBuckets::new(Duration::from_millis(20));
        memo.remember("vibe-alice", APPLIED);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(memo.get("vibe-alice"), None, "the resync checks again");
    }
}
