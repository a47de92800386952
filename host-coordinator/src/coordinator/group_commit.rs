//! Group commit: the coordinator's writes commit without an fsync, and one flush (an `fdatasync` of
//! the database's redo log, see `core::store`) makes every write so far durable at once. Whoever is
//! about to tell a peer something it may rely on — "your job is recorded", a final report, a
//! receipt — waits for a flush that covers it first; nothing else waits. Requests that arrive while
//! a flush runs are served together by the next one, so under load one fsync covers many jobs, and
//! when idle a lone request costs one fsync, as before.
//!
//! The flusher is a thread of its own, not a task that hands each flush to tokio's blocking pool
//! (twice: the flush, then the checkpoint check): those hand-offs (a spawn, a pool thread's wake-up,
//! a wake back) took about 3% of the runtime thread in a latency run and sat on every final
//! report's path. A want is now one condvar signal, and the thread publishes what is durable
//! through a watch channel, which wakes the waiting tasks directly.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use icn_mesh_core::store::Db;
use tokio::sync::watch;

#[derive(Debug)]
pub struct GroupCommit {
    db: Db,
    signal: Arc<Signal>,
    durable: Arc<watch::Sender<u64>>,
    flusher: Option<JoinHandle<()>>,
}

/// What the flusher waits for: a flush wanted, or the end.
#[derive(Debug, Default)]
struct Signal {
    state: Mutex<Wanted>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Wanted {
    flush: bool,
    closed: bool,
}

impl Signal {
    /// Asks for a flush.
    fn want(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).flush = true;
        self.changed.notify_one();
    }

    /// Ends the flusher.
    fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.changed.notify_one();
    }

    /// Blocks until a flush is wanted (true, and the want is taken) or the end (false).
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.closed {
                return false;
            }
            if std::mem::take(&mut state.flush) {
                return true;
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl GroupCommit {
    /// Switches `db` to group commit and starts the flusher thread.
    pub fn start(db: Db) -> std::io::Result<Arc<Self>> {
        // Everything written before this point was committed durably.
        let (durable, _) = watch::channel(db.written());
        let durable = Arc::new(durable);
        db.group_commit();
        let signal = Arc::new(Signal::default());
        let flusher = {
            let (db, signal, durable) = (db.clone(), Arc::clone(&signal), Arc::clone(&durable));
            std::thread::Builder::new()
                .name("icn-flush".into())
                .spawn(move || flush_loop(&db, &signal, &durable))?
        };
        Ok(Arc::new(Self { db, signal, durable, flusher: Some(flusher) }))
    }

    /// Returns once every write made before this call is durable.
    pub async fn durable(&self) {
        self.covers(self.want()).await;
    }

    /// Returns once every write made before this call is durable, giving other waiters `window` to
    /// ask for the flush that covers it before asking itself. For a promise that is not urgent — a
    /// job recorded — which the flush a moment later (a short job's final report) keeps as well: on
    /// a quiet mesh a trivial job then costs one fsync, not two.
    pub async fn durable_within(&self, window: Duration) {
        let mark = self.db.written();
        if tokio::time::timeout(window, self.covers(mark)).await.is_err() {
            self.signal.want();
            self.covers(mark).await;
        }
    }

    /// Notes the writes made so far, asks for a flush if they are not durable yet, and returns the
    /// mark to wait for with [`GroupCommit::covers`].
    pub fn want(&self) -> u64 {
        let need = self.db.written();
        if *self.durable.borrow() < need {
            self.signal.want();
        }
        need
    }

    /// Returns once the writes up to `mark` (from [`GroupCommit::want`]) are durable.
    pub async fn covers(&self, mark: u64) {
        let mut rx = self.durable.subscribe();
        let _ = rx.wait_for(|covered| *covered >= mark).await;
    }

    /// The last write known durable.
    #[cfg(test)]
    pub fn durable_mark(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Asks for a flush if anything is not yet durable (the coordinator's tick calls this, so no
    /// write stays volatile for long even when nobody waits for it).
    pub fn nudge(&self) {
        if *self.durable.borrow() < self.db.written() {
            self.signal.want();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.signal.close();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

fn flush_loop(db: &Db, signal: &Signal, durable: &watch::Sender<u64>) {
    while signal.wait() {
        if db.written() <= *durable.borrow() {
            // A want that an earlier flush already covered.
            continue;
        }
        let started = std::time::Instant::now();
        match db.flush() {
            Ok(covered) => {
                tracing::debug!("flush covering {covered} writes took {:?}", started.elapsed());
                durable.send_replace(covered);
                // Once the log is long, redb takes it over (the waiters above are already free).
                match db.checkpoint_if_due() {
                    Ok(true) => tracing::debug!("checkpoint took {:?}", started.elapsed()),
                    Ok(false) => {}
                    Err(e) => tracing::error!("checkpointing the coordinator's database failed: {e}"),
                }
            }
            Err(e) => {
                // Nobody waiting is released: they are told nothing that is not on disk.
                tracing::error!("flushing the coordinator's database failed: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
                signal.want();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icn_mesh_core::store::Store;

    #[test]
    fn a_promise_that_can_wait_rides_on_the_next_flush_or_asks_for_one_after_its_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::coordinator::open_db(&dir.path().join("store.redb")).expect("db");
        let store = Arc::new(Store::within(db.clone()).expect("store"));
        let group = GroupCommit::start(db.clone()).expect("flusher");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            // Someone else's flush, asked for within the window, keeps the promise: it returns long
            // before its own window would have run out.
            store.put_blob(b"recorded").expect("put");
            let recorded = db.written();
            let started = std::time::Instant::now();
            let waiting = {
                let group = Arc::clone(&group);
                tokio::spawn(async move { group.durable_within(Duration::from_secs(30)).await })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(group.durable_mark() < recorded, "nobody has asked for a flush yet");
            store.put_blob(b"settled").expect("put");
            group.durable().await;
            tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("released by the other flush")
                .expect("task");
            assert!(started.elapsed() < Duration::from_secs(10));
            // Alone, it asks for the flush itself once its window is over.
            store.put_blob(b"alone").expect("put");
            let alone = db.written();
            tokio::time::timeout(Duration::from_secs(10), group.durable_within(Duration::from_millis(50)))
                .await
                .expect("it asked for its own flush");
            assert!(group.durable_mark() >= alone);
        });
    }

    #[test]
    fn every_waiter_is_released_by_a_flush_and_the_flusher_ends_with_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let db = crate::coordinator::open_db(&path).expect("db");
        let store = Arc::new(Store::within(db.clone()).expect("store"));
        let group = GroupCommit::start(db.clone()).expect("flusher");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        let blobs: Vec<Vec<u8>> = (0u32..50).map(|n| n.to_be_bytes().to_vec()).collect();
        local.block_on(&rt, async {
            let waiters: Vec<_> = blobs
                .iter()
                .cloned()
                .map(|blob| {
                    let (store, group, db) = (Arc::clone(&store), Arc::clone(&group), db.clone());
                    tokio::task::spawn_local(async move {
                        store.put_blob(&blob).expect("put");
                        let need = db.written();
                        group.durable().await;
                        // The flusher has published a flush covering this write.
                        assert!(*group.durable.borrow() >= need);
                    })
                })
                .collect();
            let all = async {
                for w in waiters {
                    w.await.expect("waiter");
                }
            };
            tokio::time::timeout(Duration::from_secs(10), all).await.expect("every waiter released");
        });
        // Dropping the group ends its thread, which releases its handle on the database: the file
        // opens again (redb refuses a file another handle holds) with every blob in it.
        drop((group, store, db));
        let reopened = Store::within(crate::coordinator::open_db(&path).expect("reopens")).expect("store");
        for blob in &blobs {
            let cid = icn_mesh_core::dag::blob_cid(blob);
            assert_eq!(reopened.blob(&cid).expect("read").as_deref(), Some(blob.as_slice()));
        }
    }
}
