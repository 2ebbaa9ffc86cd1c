//! Getting etcd out of NOSPACE: what `put_checkpoint` does once when etcd
//! refuses a write because its database reached the quota.
//!
//! Under the NOSPACE alarm etcd still serves reads, deletes, compaction,
//! defragmentation and alarm changes, so the store can: prune the job's
//! checkpoints beyond the retention (and the chunks nothing names any more),
//! compact to the current revision (the history of every overwritten and
//! deleted key is what fills the database), defragment every member (only
//! that gives the space back to the file the quota measures), and disarm
//! the alarm. If the database is still over the quota, the next write raises
//! the alarm again and fails with the out-of-space error.

use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, DeleteOptions, GetOptions,
};

use super::{Inner, connect_options, header_revision};
use crate::error::Result;
use crate::records::JobId;

/// Defragmenting a member blocks it and may take a while on a large database.
const DEFRAGMENT_TIMEOUT: Duration = Duration::from_secs(60);

impl Inner {
    pub(super) async fn recover_space(&self, job_id: JobId) -> Result<()> {
        // 1. The job's checkpoints beyond the retention (there are some only
        // when the retention was lowered; the newest `keep` always stay).
        let existing = self
            .get(
                "list checkpoints",
                &self.keys.checkpoints(job_id),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let keep = self.config.keep_checkpoints;
        if existing.kvs().len() > keep {
            let first_kept = existing.kvs()[existing.kvs().len() - keep].key().to_vec();
            let mut kv = self.kv();
            let delete = kv.delete(
                self.keys.checkpoints(job_id),
                Some(DeleteOptions::new().with_range(first_kept)),
            );
            self.rpc("prune checkpoints", delete).await?;
        }
        // 2. Chunks nothing names (deletes are allowed under the alarm).
        self.collect_garbage().await;

        // 3. Compact the history away.
        let now = self
            .get(
                "read the current revision",
                self.keys.root(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        let revision = header_revision(now.header())?;
        let mut kv = self.kv();
        let compact = kv.compact(revision, Some(CompactionOptions::new().with_physical()));
        match self.rpc("compact", compact).await {
            Ok(_) => {}
            // Someone compacted at least this far already.
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => return Err(e),
        }

        // 4. Give the space back, member by member.
        let options = connect_options(&self.config)?;
        for url in self.config.urls() {
            let defragment = async {
                let mut member = Client::connect([url.as_str()], Some(options.clone())).await?;
                member.defragment().await
            };
            match tokio::time::timeout(DEFRAGMENT_TIMEOUT, defragment).await {
                Ok(Ok(_)) => tracing::info!(endpoint = %url, "defragmented etcd member"),
                Ok(Err(e)) => {
                    tracing::warn!(endpoint = %url, error = %e, "defragmenting etcd member failed")
                }
                Err(_) => tracing::warn!(endpoint = %url, "defragmenting etcd member timed out"),
            }
        }

        // 5. Writes are refused until the alarm is gone.
        let mut maintenance = self.client.maintenance_client();
        let alarms = self
            .rpc(
                "list alarms",
                maintenance.alarm(AlarmAction::Get, AlarmType::None, None),
            )
            .await?;
        for alarm in alarms.alarms() {
            if alarm.alarm() != AlarmType::Nospace {
                continue;
            }
            let mut options = AlarmOptions::new();
            options.with_member(alarm.member_id());
            self.rpc(
                "disarm the NOSPACE alarm",
                maintenance.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options)),
            )
            .await?;
        }
        tracing::info!(revision, "compacted etcd and disarmed NOSPACE");
        Ok(())
    }
}
