//! A topic's storage fault: set by the write or sync that failed, cleared by the next
//! one that succeeds or by the sync thread's probe.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// An append failed (full disk, I/O error): cleared by a write or a space probe that
    /// succeeds.
    Write,
    /// A sync failed: cleared once a fresh segment has been synced.
    Sync,
}

impl TopicCore {
    pub(crate) fn set_fault(&self, e: &Error) {
        self.enter_fault(FaultKind::Write, e);
    }

    pub(crate) fn set_sync_fault(&self, e: &Error) {
        self.enter_fault(FaultKind::Sync, e);
    }

    pub(super) fn enter_fault(&self, kind: FaultKind, e: &Error) {
        if !e.is_storage_fault() {
            return;
        }
        let mut f = self.fault.lock();
        if f.is_none() {
            tracing::error!(topic = %self.name, error = %e, "storage error: publishes to this topic fail until it clears");
        }
        // A sync fault is the stronger condition: a write succeeding does not clear it.
        if f.as_ref().is_none_or(|(k, _)| *k == FaultKind::Write) {
            *f = Some((kind, e.to_string()));
        }
    }

    /// A write succeeded: a write fault is over.
    pub(crate) fn clear_fault(&self) {
        self.leave_fault(FaultKind::Write);
    }

    /// A sync of new data succeeded: a sync fault is over.
    pub(crate) fn clear_sync_fault(&self) {
        self.leave_fault(FaultKind::Sync);
    }

    pub(super) fn leave_fault(&self, kind: FaultKind) {
        let mut f = self.fault.lock();
        let clears = f.as_ref().is_some_and(|(k, _)| *k == kind);
        if clears {
            if let Some((_, was)) = f.take() {
                tracing::info!(topic = %self.name, was = %was, "storage error cleared");
            }
        }
    }

    pub(crate) fn fault(&self) -> Option<String> {
        self.fault.lock().as_ref().map(|(_, e)| e.clone())
    }

    /// Called by the sync thread while the topic is in a fault: check whether the
    /// condition is gone without waiting for a publish (space freed; a fresh segment in
    /// place of one whose sync failed, synced).
    pub(crate) fn probe(&self) {
        let Some(kind) = self.fault.lock().as_ref().map(|(k, _)| *k) else {
            return;
        };
        let mut st = self.state.lock();
        self.wait_appending(&mut st);
        let Some(log) = st.log.as_mut() else { return };
        let r = match kind {
            FaultKind::Write => log.probe_space(),
            FaultKind::Sync => log.replace_poisoned().and_then(|_| log.sync()),
        };
        drop(st);
        match (r, kind) {
            (Ok(()), FaultKind::Write) => self.clear_fault(),
            (Ok(()), FaultKind::Sync) => self.clear_sync_fault(),
            (Err(e), _) => tracing::debug!(topic = %self.name, error = %e, "still failing"),
        }
    }
}
