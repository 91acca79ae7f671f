//! Per-instance byte accounting.
//!
//! Bytes used = every object known to be in the instance's prefix (finalised or not) plus the
//! reservations of uploads in progress whose object has not been seen yet. A reservation is
//! taken when an upload URL is issued (for the declared size) or a streaming upload starts,
//! and turns into a known object when the upload is finalised or the sweep lists it. Uploads
//! that are never finalised are deleted by the sweep and stop counting then. The sweep also
//! reconciles the known objects with a listing of the bucket, so drift (a crash between an S3
//! call and the ledger update) heals by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use super::BlobError;

/// Thread-safe quota ledger of one instance.
#[derive(Debug)]
pub struct QuotaLedger {
    quota: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: HashMap<String, Known>,
    object_bytes: u64,
    reservations: HashMap<String, Reservation>,
    /// Sum of the reservations whose object is not known yet, kept up to date by every
    /// change so a request never walks all reservations (an app could hold many).
    reserved_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    size: u64,
    touched: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    size: u64,
    expires_at: SystemTime,
}

/// A snapshot of the accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of objects in the bucket.
    pub stored: u64,
    /// Bytes reserved by uploads in progress.
    pub reserved: u64,
    /// The quota.
    pub quota: u64,
}

impl Usage {
    /// Everything that counts against the quota.
    pub fn used(&self) -> u64 {
        self.stored + self.reserved
    }
}

impl QuotaLedger {
    /// An empty ledger for `quota` bytes.
    pub fn new(quota: u64) -> Self {
        Self {
            quota,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The configured quota.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Current usage.
    pub fn usage(&self) -> Usage {
        let inner = self.lock();
        Usage {
            stored: inner.object_bytes,
            reserved: inner.reserved_bytes(),
            quota: self.quota,
        }
    }

    /// Reserves `size` bytes for an upload to `key` until `expires_at` (after which the sweep
    /// may drop it), or refuses with [`BlobError::QuotaExceeded`].
    pub fn reserve(&self, key: &str, size: u64, expires_at: SystemTime) -> Result<(), BlobError> {
        let mut inner = self.lock();
        let used = inner.object_bytes + inner.reserved_bytes();
        if used.saturating_add(size) > self.quota {
            return Err(BlobError::QuotaExceeded {
                used,
                requested: size,
                quota: self.quota,
            });
        }
        inner.set_reservation(key, Reservation { size, expires_at });
        Ok(())
    }

    /// Counts an object that exists (a finalised upload, or a streamed one) and drops its
    /// reservation. Fails with [`BlobError::QuotaExceeded`] when the object is larger than its
    /// reservation and the difference does not fit; nothing changes then.
    pub fn commit(&self, key: &str, size: u64) -> Result<(), BlobError> {
        let mut inner = self.lock();
        // What this key counts now: the known object, else its reservation.
        let counted = match inner.objects.get(key) {
            Some(known) => known.size,
            None => inner.reservations.get(key).map_or(0, |r| r.size),
        };
        let used = inner.object_bytes + inner.reserved_bytes();
        let without_this = used.saturating_sub(counted);
        if size > counted && without_this.saturating_add(size) > self.quota {
            return Err(BlobError::QuotaExceeded {
                used: without_this,
                requested: size,
                quota: self.quota,
            });
        }
        inner.remove_reservation(key);
        inner.insert_object(key, size);
        Ok(())
    }

    /// Drops a reservation whose upload failed.
    pub fn release(&self, key: &str) {
        self.lock().remove_reservation(key);
    }

    /// Stops counting a deleted object (and any reservation for it).
    pub fn forget(&self, key: &str) {
        let mut inner = self.lock();
        inner.remove_reservation(key);
        inner.remove_object(key);
    }

    /// Whether `key` has a reservation that has not expired at `now`.
    pub fn has_active_reservation(&self, key: &str, now: SystemTime) -> bool {
        self.lock()
            .reservations
            .get(key)
            .is_some_and(|r| r.expires_at > now)
    }

    /// Replaces the known objects with a listing taken after `listed_since`: entries changed
    /// after that instant by concurrent uploads or deletes are kept as they are. Reservations
    /// that expired before `now` are dropped.
    pub fn reconcile(
        &self,
        listing: &HashMap<String, u64>,
        listed_since: Instant,
        now: SystemTime,
    ) {
        let mut inner = self.lock();
        let stale: Vec<String> = inner
            .objects
            .iter()
            .filter(|(k, v)| v.touched < listed_since && !listing.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            inner.remove_object(&key);
        }
        for (key, size) in listing {
            match inner.objects.get(key) {
                Some(known) if known.touched >= listed_since => {}
                _ => inner.insert_object_at(key, *size, listed_since),
            }
        }
        // An expired reservation is dropped: either its object is listed (and counted as an
        // object now) or the client never uploaded. Live ones stay; `reserved_bytes` skips
        // those whose object is already known.
        inner.drop_expired_reservations(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than refusing every upload would, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Bytes of reservations whose object is not known yet.
    fn reserved_bytes(&self) -> u64 {
        self.reserved_bytes
    }

    /// The reservation of `key` counts only while its object is unknown.
    fn counted_reservation(&self, key: &str) -> u64 {
        match self.reservations.get(key) {
            Some(r) if !self.objects.contains_key(key) => r.size,
            _ => 0,
        }
    }

    fn set_reservation(&mut self, key: &str, reservation: Reservation) {
        self.reserved_bytes -= self.counted_reservation(key);
        self.reservations.insert(key.to_string(), reservation);
        self.reserved_bytes += self.counted_reservation(key);
    }

    fn remove_reservation(&mut self, key: &str) {
        self.reserved_bytes -= self.counted_reservation(key);
        self.reservations.remove(key);
    }

    fn drop_expired_reservations(&mut self, now: SystemTime) {
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove_reservation(&key);
        }
    }

    fn insert_object(&mut self, key: &str, size: u64) {
        self.insert_object_at(key, size, Instant::now());
    }

    fn insert_object_at(&mut self, key: &str, size: u64, touched: Instant) {
        self.reserved_bytes -= self.counted_reservation(key);
        if let Some(old) = self
            .objects
            .insert(key.to_string(), Known { size, touched })
        {
            self.object_bytes -= old.size;
        }
        self.object_bytes += size;
    }

    fn remove_object(&mut self, key: &str) {
        if let Some(old) = self.objects.remove(key) {
            self.object_bytes -= old.size;
            self.reserved_bytes += self.counted_reservation(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later(secs: u64) -> SystemTime {
        SystemTime::now() + Duration::from_secs(secs)
    }

    #[test]
    fn reservations_and_objects_count_against_the_quota() {
        let ledger = QuotaLedger::new(100);
        ledger.reserve("a", 60, later(60)).unwrap();
        let err = ledger.reserve("b", 41, later(60)).unwrap_err();
        assert!(matches!(
            err,
            BlobError::QuotaExceeded {
                used: 60,
                requested: 41,
                quota: 100
            }
        ));
        ledger.reserve("b", 40, later(60)).unwrap();
        assert_eq!(ledger.usage().used(), 100);
        ledger.commit("a", 60).unwrap();
        assert_eq!(
            ledger.usage(),
            Usage {
                stored: 60,
                reserved: 40,
                quota: 100
            }
        );
        ledger.release("b");
        ledger.forget("a");
        assert_eq!(ledger.usage().used(), 0);
    }

    #[test]
    fn commit_of_a_larger_object_must_fit() {
        let ledger = QuotaLedger::new(100);
        ledger.reserve("a", 10, later(60)).unwrap();
        ledger.commit("other", 80).unwrap();
        assert!(ledger.commit("a", 30).is_err());
        assert_eq!(ledger.usage().used(), 90);
        ledger.commit("a", 20).unwrap();
        assert_eq!(ledger.usage().used(), 100);
        // Committing the same object again does not double count.
        ledger.commit("a", 20).unwrap();
        assert_eq!(ledger.usage().used(), 100);
    }

    #[test]
    fn reconcile_replaces_stale_entries_but_keeps_concurrent_ones() {
        let ledger = QuotaLedger::new(1000);
        ledger.commit("gone", 50).unwrap();
        ledger
            .reserve(
                "never-uploaded",
                30,
                SystemTime::now() - Duration::from_secs(1),
            )
            .unwrap();
        ledger.reserve("uploaded", 20, later(60)).unwrap();
        ledger.reserve("pending", 10, later(60)).unwrap();
        let since = Instant::now();
        ledger.commit("fresh", 7).unwrap(); // finalised while the listing ran
        let listing = HashMap::from([("uploaded".to_string(), 20u64), ("old".to_string(), 5u64)]);
        ledger.reconcile(&listing, since, SystemTime::now());
        // fresh 7 + uploaded 20 + old 5 stored, pending 10 reserved.
        assert_eq!(
            ledger.usage(),
            Usage {
                stored: 32,
                reserved: 10,
                quota: 1000
            }
        );
    }

    /// The running sums always equal what a full walk of the maps gives, whatever the order
    /// of reservations, commits, releases, deletions and reconciliations.
    #[test]
    fn running_sums_match_a_full_recount_after_every_operation() {
        fn recount(ledger: &QuotaLedger) -> (u64, u64) {
            let inner = ledger.lock();
            let stored = inner.objects.values().map(|o| o.size).sum();
            let reserved = inner
                .reservations
                .iter()
                .filter(|(k, _)| !inner.objects.contains_key(*k))
                .map(|(_, r)| r.size)
                .sum();
            (stored, reserved)
        }
        let ledger = QuotaLedger::new(u64::MAX / 2);
        // A small deterministic generator: the sequence is the same on every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        for step in 0..5_000 {
            let key = &keys[next(keys.len() as u64) as usize];
            let size = 1 + next(100);
            match next(6) {
                0 => {
                    let expires = if next(3) == 0 {
                        SystemTime::now() - Duration::from_secs(1)
                    } else {
                        later(60)
                    };
                    ledger.reserve(key, size, expires).unwrap();
                }
                1 => ledger.commit(key, size).unwrap(),
                2 => ledger.release(key),
                3 => ledger.forget(key),
                4 => {
                    let since = Instant::now();
                    let mut listing = HashMap::new();
                    for k in &keys {
                        if next(2) == 0 {
                            listing.insert(k.clone(), 1 + next(100));
                        }
                    }
                    ledger.reconcile(&listing, since, SystemTime::now());
                }
                _ => {
                    let _ = ledger.has_active_reservation(key, SystemTime::now());
                }
            }
            let usage = ledger.usage();
            assert_eq!(
                (usage.stored, usage.reserved),
                recount(&ledger),
                "after step {step}"
            );
        }
    }
}
