//! Replay protection that survives a restart: the newest request timestamp accepted from each user is
//! kept in the database (`users.last_request_ms`), and after a restart a user's requests must carry a
//! timestamp strictly after it (and within the clock-skew window, as always). While the registry runs,
//! the in-memory signature cache (`auth.rs`) refuses exact replays; the floor covers what that cache
//! forgets when the process ends.
//!
//! Why the floor is not also enforced *within* a run: a client sends concurrent requests on separate
//! connections (the push stream, a long-poll, a call action), so they may arrive out of timestamp order;
//! refusing the older one would break honest clients. The signature cache is exact for that case.
//!
//! Durability: accepted timestamps are written in batches, by a background writer or by a request that
//! needs its own on disk (group commit: whoever holds the flush lock writes everything pending, so
//! concurrent requests share one fsync). Requests whose replay after a restart could *do* something wait for their
//! timestamp to be on disk before they act: `/register` writes it in its own transaction, and
//! `/call/initiate` and `/events` wait for the batch ([`Floors::durable`]). Every other signed request
//! reads or acts on calls, and calls do not survive a restart (the call book is in memory, so replaying
//! an accept, confirm or hang-up afterwards finds no call); those timestamps are written within
//! milliseconds but not waited for. Graceful shutdown writes everything pending.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::error::ApiError;
use crate::store::Store;

#[derive(Debug, Default)]
struct Pending {
    /// Timestamps accepted but not yet written.
    writes: HashMap<String, u64>,
    /// The newest timestamp known to be on disk per user.
    persisted: HashMap<String, u64>,
}

/// Per-user replay floors and their writer.
#[derive(Debug)]
pub struct Floors {
    /// Floors read from the database at start: a request must be strictly newer.
    loaded: HashMap<String, u64>,
    state: Mutex<Pending>,
    wake: Notify,
    /// Bumped after every committed batch.
    committed: watch::Sender<u64>,
    /// Held while a batch is written.
    flushing: tokio::sync::Mutex<()>,
}

impl Floors {
    /// Floors as loaded from the database.
    pub fn new(loaded: HashMap<String, u64>) -> Self {
        let persisted = loaded.clone();
        Self {
            loaded,
            state: Mutex::new(Pending { writes: HashMap::new(), persisted }),
            wake: Notify::new(),
            committed: watch::channel(0).0,
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// The floor for `user` loaded at start (0 if none).
    pub fn loaded(&self, user: &str) -> u64 {
        self.loaded.get(user).copied().unwrap_or(0)
    }

    /// Refuses a timestamp that is not after the floor loaded for `user` at start.
    ///
    /// Fails with `NotAfterFloor`.
    pub fn check(&self, user: &str, ts: u64) -> Result<(), ApiError> {
        if ts <= self.loaded(user) { Err(ApiError::NotAfterFloor) } else { Ok(()) }
    }

    /// Records an accepted timestamp; the writer puts it on disk soon.
    pub fn record(&self, user: &str, ts: u64) {
        let Ok(mut st) = self.state.lock() else { return };
        if st.persisted.get(user).is_some_and(|&p| p >= ts) {
            return;
        }
        let w = st.writes.entry(user.to_owned()).or_insert(0);
        *w = (*w).max(ts);
        drop(st);
        self.wake.notify_one();
    }

    /// Notes that `ts` for `user` was written by another transaction (the registration itself).
    pub fn persisted_elsewhere(&self, user: &str, ts: u64) {
        if let Ok(mut st) = self.state.lock() {
            let p = st.persisted.entry(user.to_owned()).or_insert(0);
            *p = (*p).max(ts);
            if st.writes.get(user).is_some_and(|&w| w <= ts) {
                st.writes.remove(user);
            }
        }
    }

    fn is_persisted(&self, user: &str, ts: u64) -> bool {
        self.state.lock().is_ok_and(|st| st.persisted.get(user).is_some_and(|&p| p >= ts))
    }

    /// Waits until `ts` (recorded for `user`) is on disk, writing the pending batch itself unless another
    /// request or the writer is already doing so.
    ///
    /// Fails with `Internal` when the database write fails.
    pub async fn durable(state: &crate::AppState, user: &str, ts: u64) -> Result<(), ApiError> {
        let floors = state.floors();
        loop {
            if floors.is_persisted(user, ts) {
                return Ok(());
            }
            let _leader = floors.flushing.lock().await;
            if floors.is_persisted(user, ts) {
                return Ok(());
            }
            let st = state.clone();
            tokio::task::spawn_blocking(move || st.floors().flush_blocking(st.store()))
                .await
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("replay-floor task: {e}")))??;
            if !floors.is_persisted(user, ts) {
                // Not recorded before this call (a caller bug); record it so the next round writes it.
                floors.record(user, ts);
            }
        }
    }

    fn take_batch(&self) -> Vec<(String, u64)> {
        self.state.lock().map(|mut st| st.writes.drain().collect()).unwrap_or_default()
    }

    fn committed_batch(&self, batch: &[(String, u64)]) {
        if let Ok(mut st) = self.state.lock() {
            for (user, ts) in batch {
                let p = st.persisted.entry(user.clone()).or_insert(0);
                *p = (*p).max(*ts);
            }
        }
        self.committed.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn requeue(&self, batch: Vec<(String, u64)>) {
        if let Ok(mut st) = self.state.lock() {
            for (user, ts) in batch {
                let w = st.writes.entry(user).or_insert(0);
                *w = (*w).max(ts);
            }
        }
    }

    /// Writes everything pending now (blocking; used at shutdown).
    ///
    /// Fails on database errors.
    pub fn flush_blocking(&self, store: &Store) -> anyhow::Result<()> {
        let batch = self.take_batch();
        if batch.is_empty() {
            return Ok(());
        }
        match store.persist_request_floors(&batch) {
            Ok(()) => {
                self.committed_batch(&batch);
                Ok(())
            }
            Err(e) => {
                self.requeue(batch);
                Err(e)
            }
        }
    }

    /// The writer: waits for recorded timestamps and commits them in batches until `shutdown` turns true,
    /// then writes what is left.
    pub async fn run_writer(state: crate::AppState, mut shutdown: watch::Receiver<bool>) {
        loop {
            let stopping = tokio::select! {
                () = state.floors().wake.notified() => false,
                r = shutdown.wait_for(|&s| s) => { let _ = r; true }
            };
            let _leader = state.floors().flushing.lock().await;
            let st = state.clone();
            let result = tokio::task::spawn_blocking(move || st.floors().flush_blocking(st.store())).await;
            drop(_leader);
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = format!("{e:#}"), "could not persist replay floors; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    state.floors().wake.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "replay-floor writer task failed"),
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_refuses_old_and_equal_timestamps_only() {
        let f = Floors::new(HashMap::from([("alice".to_owned(), 1_000)]));
        assert_eq!(f.check("alice", 999).unwrap_err().code(), crate::error::ErrorCode::Replayed);
        assert_eq!(f.check("alice", 1_000).unwrap_err().code(), crate::error::ErrorCode::Replayed);
        f.check("alice", 1_001).unwrap();
        f.check("bob", 1).unwrap();
    }

    #[test]
    fn record_keeps_the_newest_pending_and_skips_persisted() {
        let f = Floors::new(HashMap::from([("alice".to_owned(), 1_000)]));
        f.record("alice", 900);
        assert!(f.take_batch().is_empty(), "already covered by the loaded floor");
        f.record("alice", 1_500);
        f.record("alice", 1_200);
        f.record("bob", 7);
        let mut b = f.take_batch();
        b.sort();
        assert_eq!(b, vec![("alice".to_owned(), 1_500), ("bob".to_owned(), 7)]);
        f.committed_batch(&b);
        assert!(f.is_persisted("alice", 1_500));
        assert!(!f.is_persisted("alice", 1_501));
        f.persisted_elsewhere("carol", 50);
        assert!(f.is_persisted("carol", 50));
    }
}
