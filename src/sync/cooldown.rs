//! The cooldown after failed jobs, computed from the job history alone (pure: no I/O, no clock).
//!
//! Without it a location whose credentials GHL refuses is stale forever, so every read would
//! start a job that fails, and the next read another: a revoked app hammering GHL for as long as
//! users read. After `n` failed jobs in a row, no automatic sync (a read, the scheduler) starts
//! before `base × 2^(n-1)` (at most `max`) has passed since the last one ended; a manual refresh
//! may still try, once per step. A success ends the run of failures, and so does a reconnect (the
//! store's reset mark). Jobs a stopped process left interrupted count for nothing.
//!
//! Kept in the database (the job rows and the reset mark), not in memory: a restart or another
//! replica sees the same cooldown, and `ghl-gateway connect` (another process) can reset it.

use chrono::Duration;

use crate::domain::{Cooldown, JobState, SyncJob, to_ms};

/// How many of a location's latest jobs the cooldown looks at: enough for the delay to reach any
/// sensible cap (the 17th doubling of a second is a day and a half).
pub(super) const HISTORY: u64 = 16;

/// The cooldown's steps: the first delay, doubled after each further failure, up to `max`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Policy {
    pub base: Duration,
    pub max: Duration,
}

impl Policy {
    /// The delay after `failures` failed jobs in a row.
    pub(super) fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::zero();
        }
        let factor = 1i32 << (failures - 1).min(30);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The location's cooldown, from its latest jobs (newest first) and the time of its last
    /// reconnect (ms); `None` when its last finished job succeeded or the policy is off.
    pub(super) fn cooldown(&self, jobs: &[SyncJob], reset_at: Option<i64>) -> Option<Cooldown> {
        if self.base <= Duration::zero() {
            return None;
        }
        let failed: Vec<&SyncJob> = jobs
            .iter()
            .filter(|j| j.state.is_finished() && !j.interrupted())
            .take_while(|j| {
                j.state == JobState::Failed && reset_at.is_none_or(|r| to_ms(j.started_at) >= r)
            })
            .collect();
        let last = failed.first()?;
        let failures = u32::try_from(failed.len()).unwrap_or(u32::MAX);
        let failed_at = last.finished_at.unwrap_or(last.started_at);
        // The last job started before the cooldown of the one before it ended: it was this
        // step's manual retry.
        let retry_spent = failed.get(1).is_some_and(|previous| {
            let previous_end = previous.finished_at.unwrap_or(previous.started_at);
            last.started_at < previous_end + self.delay(failures - 1)
        });
        Some(Cooldown {
            failures,
            failed_at,
            next_attempt_at: failed_at + self.delay(failures),
            last_error: last.error.clone(),
            retry_spent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SyncMode, from_ms};

    const MIN: i64 = 60_000;

    fn policy() -> Policy {
        Policy {
            base: Duration::minutes(1),
            max: Duration::hours(1),
        }
    }

    /// A job that ran from `start` to `end` (ms).
    fn job(state: JobState, start: i64, end: i64, error: Option<&str>) -> SyncJob {
        SyncJob {
            id: format!("j{start}"),
            location_id: "l".into(),
            mode: SyncMode::Incremental,
            state,
            mark: start,
            started_at: from_ms(start),
            finished_at: Some(from_ms(end)),
            error: error.map(str::to_owned),
        }
    }

    fn failed(start: i64) -> SyncJob {
        job(JobState::Failed, start, start + 1_000, Some("GHL refused"))
    }

    #[test]
    fn the_delay_doubles_from_the_base_up_to_the_cap() {
        let minutes: Vec<i64> = (0..=9).map(|n| policy().delay(n).num_minutes()).collect();
        assert_eq!(minutes, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(policy().delay(u32::MAX), Duration::hours(1));
    }

    #[test]
    fn consecutive_failures_since_the_last_success_set_the_next_attempt() {
        // Newest first: three failures, each after the previous one's cooldown, then a success.
        let jobs = [
            failed(10 * MIN),
            failed(5 * MIN),
            failed(2 * MIN),
            job(JobState::Succeeded, 0, 1_000, None),
            failed(-MIN),
        ];
        let cooldown = policy().cooldown(&jobs, None).expect("cooling down");
        assert_eq!(cooldown.failures, 3);
        assert_eq!(cooldown.failed_at, from_ms(10 * MIN + 1_000));
        assert_eq!(cooldown.next_attempt_at, from_ms(14 * MIN + 1_000));
        assert_eq!(cooldown.last_error.as_deref(), Some("GHL refused"));
        assert!(!cooldown.retry_spent);
        assert!(cooldown.active(from_ms(14 * MIN)));
        assert!(!cooldown.active(from_ms(14 * MIN + 1_000)));
    }

    #[test]
    fn a_success_a_reconnect_or_a_policy_of_zero_ends_the_cooldown() {
        let success_last = [job(JobState::Succeeded, 3 * MIN, 4 * MIN, None), failed(0)];
        assert_eq!(policy().cooldown(&success_last, None), None);
        let jobs = [failed(3 * MIN), failed(0)];
        assert_eq!(policy().cooldown(&jobs, Some(3 * MIN + 1)), None);
        let after_reconnect = policy().cooldown(&jobs, Some(MIN)).unwrap();
        assert_eq!(after_reconnect.failures, 1);
        let off = Policy {
            base: Duration::zero(),
            max: Duration::zero(),
        };
        assert_eq!(off.cooldown(&jobs, None), None);
        assert_eq!(policy().cooldown(&[], None), None);
    }

    #[test]
    fn interrupted_and_running_jobs_count_for_nothing() {
        let interrupted = job(
            JobState::Failed,
            4 * MIN,
            5 * MIN,
            Some("interrupted: the gateway stopped during the sync"),
        );
        let mut running = failed(6 * MIN);
        running.state = JobState::Running;
        running.finished_at = None;
        let jobs = [running, interrupted, failed(0)];
        let cooldown = policy().cooldown(&jobs, None).unwrap();
        assert_eq!((cooldown.failures, cooldown.failed_at), (1, from_ms(1_000)));
    }

    #[test]
    fn a_retry_started_during_the_previous_cooldown_spends_the_steps_manual_retry() {
        // The first failure ends at 1 s and cools down until 61 s; a retry at 30 s is early.
        let early = [failed(30_000), failed(0)];
        let cooldown = policy().cooldown(&early, None).unwrap();
        assert!(cooldown.retry_spent);
        assert_eq!(cooldown.next_attempt_at, from_ms(31_000 + 2 * MIN));
        // A retry after the cooldown ended leaves the next step's retry available.
        let on_time = [failed(61_000), failed(0)];
        assert!(!policy().cooldown(&on_time, None).unwrap().retry_spent);
    }
}
