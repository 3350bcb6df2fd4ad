//! Where the writer commits batches: the store, or a test double.

use std::future::Future;

use castellan_store::{AuditRecord, Store, StoreError};

/// Destination of audit batches.
pub trait AuditSink: Send + Sync + 'static {
    /// Commits all `records` or none of them.
    fn write_batch(
        &self,
        records: &[AuditRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl AuditSink for Store {
    fn write_batch(
        &self,
        records: &[AuditRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.insert_audit_batch(records)
    }
}
