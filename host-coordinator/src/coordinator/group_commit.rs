//! Group commit: the coordinator's writes commit without an fsync, and one flush (an `fdatasync` of
//! the database's redo log, see `core::store`) makes every write so far durable at once. Whoever is about to tell a peer something it may rely on — "your job is
//! recorded", a final report, a receipt — waits for a flush that covers it first; nothing else waits.
//! Requests that arrive while a flush runs are served together by the next one, so under load one
//! fsync covers many jobs, and when idle a lone request costs one fsync, as before.

use std::sync::Arc;
use std::time::Duration;

use icn_mesh_core::store::Db;
use tokio::sync::{Notify, watch};

#[derive(Debug)]
pub struct GroupCommit {
    db: Db,
    wanted: Notify,
    durable: watch::Sender<u64>,
}

impl GroupCommit {
    /// Switches `db` to group commit and starts the flusher on the current runtime.
    pub fn start(db: Db) -> Arc<Self> {
        // Everything written before this point was committed durably.
        let (durable, _) = watch::channel(db.written());
        db.group_commit();
        let this = Arc::new(Self { db, wanted: Notify::new(), durable });
        let flusher = Arc::clone(&this);
        tokio::spawn(async move { flusher.run().await });
        this
    }

    async fn run(&self) {
        loop {
            self.wanted.notified().await;
            if self.db.written() <= *self.durable.borrow() {
                // A request that an earlier flush already covered.
                continue;
            }
            let db = self.db.clone();
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(Ok(covered)) => {
                    tracing::debug!("flush covering {covered} writes took {:?}", started.elapsed());
                    self.durable.send_replace(covered);
                    // Once the log is long, redb takes it over (the waiters above are already free).
                    let db = self.db.clone();
                    match tokio::task::spawn_blocking(move || db.checkpoint_if_due()).await {
                        Ok(Ok(true)) => tracing::debug!("checkpoint took {:?}", started.elapsed()),
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => tracing::error!("checkpointing the coordinator's database failed: {e}"),
                        Err(e) => tracing::error!("checkpoint task: {e}"),
                    }
                }
                Ok(Err(e)) => {
                    // Nobody waiting is released: they are told nothing that is not on disk.
                    tracing::error!("flushing the coordinator's database failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.wanted.notify_one();
                }
                Err(e) => tracing::error!("flush task: {e}"),
            }
        }
    }

    /// Returns once every write made before this call is durable.
    pub async fn durable(&self) {
        let need = self.db.written();
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= need {
            return;
        }
        self.wanted.notify_one();
        let _ = rx.wait_for(|covered| *covered >= need).await;
    }

    /// Asks for a flush if anything is not yet durable (the coordinator's tick calls this, so no
    /// write stays volatile for long even when nobody waits for it).
    pub fn nudge(&self) {
        if *self.durable.borrow() < self.db.written() {
            self.wanted.notify_one();
        }
    }
}
