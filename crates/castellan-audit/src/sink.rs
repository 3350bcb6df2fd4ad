//! Where the writer commits batches: the store, or a test double.

use std::future::Future;

use castellan_store::{AuditRecord, Store, StoreError};

/// Destination of audit batches.
pub trait AuditSink: Send + Sync + 'static {
    /// Commits all `records` or none of them. A sink that numbers records,
    /// as the store does, sets each record's `seq` once the batch commits.
    fn write_batch(
        &self,
        records: &mut [AuditRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl AuditSink for Store {
    async fn write_batch(&self, records: &mut [AuditRecord]) -> Result<(), StoreError> {
        let seqs = self.insert_audit_batch(records).await?;
        for (record, seq) in records.iter_mut().zip(seqs) {
            record.seq = Some(seq);
        }
        Ok(())
    }
}
