//! Which CPU a busy environment runs on.
//!
//! While few environments are busy, each runs wherever the kernel puts it: spreading one
//! environment's threads over idle CPUs is what answers a lone request soonest. Once more are
//! busy than the host has CPUs, every environment that starts an invocation is confined to one
//! CPU, its home, given round-robin when it was created. A runtime hands each invocation between
//! its threads several times (a runtime library's connection thread and its handler thread), and
//! on a saturated host each hand-off that crosses CPUs costs a cross-CPU wake-up; kept on one
//! CPU, the hand-offs are local. On a 2-CPU host this raised warm throughput at concurrency 16
//! by about a tenth; confining at concurrency 1 cost a tenth of the latency, hence only under
//! contention. Environments are freed again once no more than half the CPUs' count is busy; the
//! gap between the two thresholds keeps a load near one of them from flipping placements on
//! every invocation.
//!
//! Homes never change: choosing the least busy CPU at each invocation instead moved
//! environments taken in turn from a shared pool on most invocations, and a move costs a write
//! per thread.
//!
//! A placement, not a limit: nothing here is an isolation promise, and a failed placement only
//! loses speed.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use condo_sandbox::CpuAffinity;

/// Something whose threads can be placed on CPUs: a sandbox, or a recorder in tests.
pub(crate) trait Placeable: Send + Sync + 'static {
    fn place(&self, cpus: &[usize]) -> io::Result<()>;
}

impl Placeable for CpuAffinity {
    fn place(&self, cpus: &[usize]) -> io::Result<()> {
        self.set(cpus)
    }
}

/// One environment's handle, its home CPU, and whether it is confined there now.
pub(crate) struct Placement<P: Placeable = CpuAffinity> {
    target: P,
    /// Index into [`CpuPlacer::cpus`].
    home: usize,
    confined: AtomicBool,
}

/// The host's CPUs and how many environments are busy.
pub(crate) struct CpuPlacer {
    cpus: Vec<usize>,
    busy: AtomicUsize,
    next_home: AtomicUsize,
}

impl CpuPlacer {
    /// Places on `cpus`, the ones the platform itself may use.
    pub(crate) fn new(cpus: Vec<usize>) -> Self {
        Self {
            cpus,
            busy: AtomicUsize::new(0),
            next_home: AtomicUsize::new(0),
        }
    }

    /// The placement of a new environment, free to run anywhere until the load asks otherwise.
    pub(crate) fn place<P: Placeable>(&self, target: P) -> Placement<P> {
        let home = self.next_home.fetch_add(1, Ordering::Relaxed) % self.cpus.len().max(1);
        Placement {
            target,
            home,
            confined: AtomicBool::new(false),
        }
    }

    /// Counts `env` busy until the guard drops, and confines or frees it as the load asks.
    pub(crate) fn busy<P: Placeable>(&self, env: &Placement<P>) -> Busy<'_> {
        let busy = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        let n = self.cpus.len();
        let confine = if n > 1 && busy > n {
            Some(true)
        } else if busy <= (n / 2).max(1) {
            Some(false)
        } else {
            None
        };
        // One invocation at a time runs in an environment, so its flag has one writer.
        if let Some(confine) = confine.filter(|&c| c != env.confined.load(Ordering::Relaxed)) {
            let cpus = if confine {
                &self.cpus[env.home..=env.home]
            } else {
                &self.cpus[..]
            };
            match env.target.place(cpus) {
                Ok(()) => env.confined.store(confine, Ordering::Relaxed),
                Err(e) => tracing::debug!("could not place an environment on CPUs {cpus:?}: {e}"),
            }
        }
        Busy { placer: self }
    }
}

/// One environment counted busy (see [`CpuPlacer::busy`]).
pub(crate) struct Busy<'a> {
    placer: &'a CpuPlacer,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.placer.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records every placement it is given.
    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<Vec<usize>>>>);

    impl Placeable for Recorder {
        fn place(&self, cpus: &[usize]) -> io::Result<()> {
            self.0.lock().unwrap().push(cpus.to_vec());
            Ok(())
        }
    }

    impl Recorder {
        fn last(&self) -> Option<Vec<usize>> {
            self.0.lock().unwrap().last().cloned()
        }
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    fn envs(placer: &CpuPlacer, n: usize) -> Vec<(Recorder, Placement<Recorder>)> {
        (0..n)
            .map(|_| {
                let r = Recorder::default();
                (r.clone(), placer.place(r))
            })
            .collect()
    }

    #[test]
    fn no_more_busy_than_cpus_leaves_environments_where_the_kernel_puts_them() {
        let placer = CpuPlacer::new(vec![0, 1]);
        let envs = envs(&placer, 2);
        let _a = placer.busy(&envs[0].1);
        let _b = placer.busy(&envs[1].1);
        assert_eq!(envs[0].0.count() + envs[1].0.count(), 0);
    }

    #[test]
    fn past_the_cpu_count_each_starting_environment_is_confined_to_its_home() {
        let placer = CpuPlacer::new(vec![2, 5]);
        let envs = envs(&placer, 6);
        let guards: Vec<_> = envs.iter().map(|(_, p)| placer.busy(p)).collect();
        // The first two started unconfined; the next four on their homes, given in turn.
        assert_eq!(envs[0].0.last(), None);
        assert_eq!(envs[1].0.last(), None);
        let placed: Vec<_> = envs[2..].iter().map(|(r, _)| r.last().unwrap()).collect();
        assert_eq!(placed, vec![vec![2], vec![5], vec![2], vec![5]]);
        drop(guards);
        assert_eq!(placer.busy.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_confined_environment_is_placed_once_while_the_load_stays_high() {
        let placer = CpuPlacer::new(vec![0, 1]);
        let envs = envs(&placer, 4);
        let _held: Vec<_> = envs[..3].iter().map(|(_, p)| placer.busy(p)).collect();
        for _ in 0..3 {
            drop(placer.busy(&envs[3].1));
        }
        assert_eq!(envs[3].0.count(), 1, "no write when nothing changes");
        assert_eq!(envs[3].0.last(), Some(vec![1]));
    }

    #[test]
    fn between_the_thresholds_a_placement_is_left_as_it_is() {
        let placer = CpuPlacer::new(vec![0, 1, 2, 3]);
        let envs = envs(&placer, 6);
        let held: Vec<_> = envs.iter().map(|(_, p)| placer.busy(p)).collect();
        assert_eq!(envs[4].0.last(), Some(vec![0]));
        drop(held);
        // Three busy of four CPUs: neither confined nor freed.
        let _others: Vec<_> = envs[..2].iter().map(|(_, p)| placer.busy(p)).collect();
        drop(placer.busy(&envs[4].1));
        assert_eq!(envs[4].0.count(), 1);
    }

    #[test]
    fn when_the_load_falls_a_confined_environment_is_freed_at_its_next_invocation() {
        let placer = CpuPlacer::new(vec![0, 1]);
        let envs = envs(&placer, 3);
        let held: Vec<_> = envs.iter().map(|(_, p)| placer.busy(p)).collect();
        assert_eq!(envs[2].0.last(), Some(vec![0]));
        drop(held);
        let _alone = placer.busy(&envs[2].1);
        assert_eq!(envs[2].0.last(), Some(vec![0, 1]));
    }

    #[test]
    fn one_cpu_never_confines() {
        let placer = CpuPlacer::new(vec![0]);
        let envs = envs(&placer, 3);
        let _held: Vec<_> = envs.iter().map(|(_, p)| placer.busy(p)).collect();
        assert!(envs.iter().all(|(r, _)| r.count() == 0));
    }
}
