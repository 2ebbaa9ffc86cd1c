//! The ranks of a running attempt as the coordinator follows them: who
//! offered rendezvous data, who finished, the attempt's secret and its log
//! line allowance. Pure bookkeeping; [`Cluster`](super::Cluster) keeps one
//! [`Group`] per running attempt and sends what it decides.
//!
//! Invariants: the `Rendezvous` goes out once every rank of the world
//! offered (again on a repeated offer); only rank 0's NCCL id is used; an
//! offer of `0.0.0.0` takes the address its worker connects from; the
//! attempt completes with rank 0's final checkpoint once every rank sent
//! `TaskDone`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use camshaft_proto::v1;

/// The ranks of a running attempt.
#[derive(Debug, Default)]
pub struct Group {
    world_size: u32,
    /// Worker ids, in the rank order of their first rank.
    workers: Vec<String>,
    offers: BTreeMap<u32, v1::RendezvousOffer>,
    done: BTreeSet<u32>,
    /// Rank 0's final checkpoint.
    checkpoint: String,
    /// `Assignment.attempt_secret`: only the group's workers have it.
    secret: Vec<u8>,
    /// Log lines kept for this attempt, and dropped past the limit.
    log_lines: u32,
    logs_dropped: u64,
}

/// What becomes of a rank's log line.
#[derive(Debug, PartialEq, Eq)]
pub enum LogAdmission {
    /// Kept as it is.
    Keep,
    /// The first line past the limit: replaced by a warning that says so.
    Overflow,
    /// Dropped (counted).
    Drop,
}

impl Group {
    /// The group of an attempt of `world_size` ranks on `workers`.
    pub fn new(world_size: u32, workers: Vec<String>, secret: Vec<u8>) -> Group {
        Group {
            world_size,
            workers,
            secret,
            ..Group::default()
        }
    }

    /// The group's worker ids, in rank order.
    pub fn workers(&self) -> &[String] {
        &self.workers
    }

    /// Records `offer`; once every rank offered, the `Rendezvous` they all
    /// get.
    pub fn offer(&mut self, job_id: String, offer: v1::RendezvousOffer) -> Option<v1::Rendezvous> {
        let attempt = offer.attempt;
        self.offers.insert(offer.rank, offer);
        (self.offers.len() == self.world_size as usize).then(|| {
            let offers: Vec<&v1::RendezvousOffer> = self.offers.values().collect();
            v1::Rendezvous {
                job_id,
                attempt,
                nccl_unique_id: offers[0].nccl_unique_id.clone(),
                ring_peers: offers.iter().map(|o| o.ring_address.clone()).collect(),
            }
        })
    }

    /// The ranks that have not offered yet.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.world_size)
            .filter(|r| !self.offers.contains_key(r))
            .collect()
    }

    /// Records that `rank` finished (rank 0 with the attempt's final
    /// checkpoint); once every rank did, that checkpoint.
    pub fn rank_done(&mut self, rank: u32, final_checkpoint_id: &str) -> Option<String> {
        self.done.insert(rank);
        if rank == 0 {
            self.checkpoint = final_checkpoint_id.to_string();
        }
        (self.done.len() == self.world_size as usize).then(|| self.checkpoint.clone())
    }

    /// Whether `secret` is the attempt's (compared in time independent of
    /// where the first difference is).
    pub fn secret_matches(&self, secret: &[u8]) -> bool {
        let a = &self.secret;
        !a.is_empty()
            && a.len() == secret.len()
            && a.iter().zip(secret).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Counts one more log line against `max_lines`.
    pub fn admit_log_line(&mut self, max_lines: u32) -> LogAdmission {
        if self.log_lines >= max_lines {
            self.logs_dropped += 1;
            if self.logs_dropped > 1 {
                LogAdmission::Drop
            } else {
                LogAdmission::Overflow
            }
        } else {
            self.log_lines += 1;
            LogAdmission::Keep
        }
    }
}

/// `offer` as the group records it: a `0.0.0.0` (or `::`) ring host
/// replaced by `peer_ip`, the address its worker connects from, and the
/// NCCL id cleared on every rank but 0 (nobody else may supply one).
pub fn normalise_offer(
    mut offer: v1::RendezvousOffer,
    peer_ip: Option<IpAddr>,
) -> v1::RendezvousOffer {
    if let (Some(ip), Some((host, port))) = (peer_ip, offer.ring_address.rsplit_once(':'))
        && matches!(host, "0.0.0.0" | "[::]" | "::")
    {
        offer.ring_address = SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string();
    }
    if offer.rank != 0 {
        offer.nccl_unique_id = Default::default();
    }
    offer
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn offer(rank: u32, ring: &str) -> v1::RendezvousOffer {
        v1::RendezvousOffer {
            rank,
            attempt: 2,
            ring_address: ring.into(),
            nccl_unique_id: vec![rank as u8 + 1].into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_rendezvous_waits_for_every_rank_and_uses_rank_0s_id() {
        let mut g = Group::new(2, vec!["a".into(), "b".into()], vec![7; 4]);
        assert_eq!(g.missing(), [0, 1]);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(
            g.offer(
                "j-1".into(),
                normalise_offer(offer(1, "0.0.0.0:9"), Some(ip))
            )
            .is_none()
        );
        assert_eq!(g.missing(), [0]);
        let r = g
            .offer("j-1".into(), normalise_offer(offer(0, "h:8"), Some(ip)))
            .unwrap();
        assert_eq!(r.ring_peers, ["h:8", "10.0.0.9:9"]);
        assert_eq!(&r.nccl_unique_id[..], [1]);
        assert_eq!((r.job_id.as_str(), r.attempt), ("j-1", 2));
        assert!(
            normalise_offer(offer(1, "x:1"), None)
                .nccl_unique_id
                .is_empty()
        );
    }

    #[test]
    fn done_needs_every_rank_and_returns_rank_0s_checkpoint() {
        let mut g = Group::new(3, Vec::new(), Vec::new());
        assert_eq!(g.rank_done(0, "17"), None);
        assert_eq!(g.rank_done(2, ""), None);
        assert_eq!(g.rank_done(2, ""), None, "a repeated rank counts once");
        assert_eq!(g.rank_done(1, "").as_deref(), Some("17"));
    }

    #[test]
    fn secrets_and_log_lines() {
        let g = Group::new(1, Vec::new(), vec![1, 2]);
        assert!(g.secret_matches(&[1, 2]));
        assert!(!g.secret_matches(&[1, 3]) && !g.secret_matches(&[1]));
        assert!(
            !Group::default().secret_matches(&[]),
            "no secret matches nothing"
        );
        let mut g = Group::default();
        let admitted: Vec<LogAdmission> = (0..4).map(|_| g.admit_log_line(2)).collect();
        use LogAdmission::*;
        assert_eq!(admitted, [Keep, Keep, Overflow, Drop]);
    }
}
