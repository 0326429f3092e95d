//! CPU fairness between the tenants of a function: under contention, all of one tenant's
//! environments together weigh what one environment weighs, so a tenant that scales out to
//! many environments cannot crowd out a tenant with one.
//!
//! The natural shape would be one cgroup per tenant with its environments inside, but a
//! sandbox joins its cgroup while it is prepared, before anyone knows its tenant, and moving a
//! process to another cgroup later costs an RCU grace period (milliseconds) on cgroup v1. So each
//! environment keeps its own group and its weight is divided by the number of environments its
//! tenant has: the same arithmetic, with one file write per environment when the count changes.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use condo_sandbox::CpuWeight;
use condo_types::{FunctionName, TenantId};

/// Something whose CPU weight can be set: a sandbox's group, or a recorder in tests.
pub(crate) trait WeightSetter: Send + 'static {
    fn set(&self, weight: u32, divisor: u32) -> io::Result<()>;
}

impl WeightSetter for CpuWeight {
    fn set(&self, weight: u32, divisor: u32) -> io::Result<()> {
        CpuWeight::set(self, weight, divisor)
    }
}

type GroupKey = (FunctionName, TenantId);

struct Member<W> {
    id: u64,
    weight: W,
    /// The environment's own weight, from its memory size.
    base: u32,
    /// The divisor last written, so a write happens only when it changes.
    divisor: u32,
}

struct Groups<W> {
    next_id: u64,
    groups: HashMap<GroupKey, Vec<Member<W>>>,
}

/// Every tenant's environments, by function and tenant.
pub(crate) struct TenantShares<W: WeightSetter = CpuWeight> {
    inner: Mutex<Groups<W>>,
}

impl<W: WeightSetter> TenantShares<W> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Groups {
                next_id: 0,
                groups: HashMap::new(),
            }),
        })
    }

    /// Counts a new environment of `tenant` whose group already has weight `base` (divisor 1),
    /// and rebalances the tenant. The environment leaves when the guard is dropped.
    pub(crate) fn join(
        self: &Arc<Self>,
        function: FunctionName,
        tenant: TenantId,
        weight: W,
        base: u32,
    ) -> ShareGuard<W> {
        let key = (function, tenant);
        let id = match self.inner.lock() {
            Ok(mut inner) => {
                inner.next_id += 1;
                let id = inner.next_id;
                let members = inner.groups.entry(key.clone()).or_default();
                members.push(Member {
                    id,
                    weight,
                    base,
                    divisor: 1,
                });
                rebalance(members);
                id
            }
            // A poisoned lock only loses fairness, never an environment.
            Err(_) => 0,
        };
        ShareGuard {
            shares: self.clone(),
            key,
            id,
        }
    }

    fn leave(&self, key: &GroupKey, id: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(members) = inner.groups.get_mut(key) else {
            return;
        };
        members.retain(|m| m.id != id);
        if members.is_empty() {
            inner.groups.remove(key);
        } else {
            rebalance(members);
        }
    }

    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.inner.lock().map(|i| i.groups.len()).unwrap_or(0)
    }
}

/// Gives every member of one tenant its weight divided by the tenant's environment count.
fn rebalance<W: WeightSetter>(members: &mut [Member<W>]) {
    let divisor = u32::try_from(members.len()).unwrap_or(u32::MAX);
    for m in members.iter_mut().filter(|m| m.divisor != divisor) {
        match m.weight.set(m.base, divisor) {
            Ok(()) => m.divisor = divisor,
            Err(e) => tracing::debug!("could not set an environment's CPU weight: {e}"),
        }
    }
}

/// One environment's place in its tenant's share.
pub(crate) struct ShareGuard<W: WeightSetter = CpuWeight> {
    shares: Arc<TenantShares<W>>,
    key: GroupKey,
    id: u64,
}

impl<W: WeightSetter> Drop for ShareGuard<W> {
    fn drop(&mut self) {
        self.shares.leave(&self.key, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the divisor each environment was last given.
    #[derive(Clone)]
    struct Recorder(Arc<Mutex<Vec<(u32, u32)>>>);

    impl WeightSetter for Recorder {
        fn set(&self, weight: u32, divisor: u32) -> io::Result<()> {
            self.0.lock().expect("recorder").push((weight, divisor));
            Ok(())
        }
    }

    fn recorder() -> Recorder {
        Recorder(Arc::new(Mutex::new(Vec::new())))
    }

    fn last(r: &Recorder) -> Option<(u32, u32)> {
        r.0.lock().expect("recorder").last().copied()
    }

    fn key(tenant: &str) -> (FunctionName, TenantId) {
        (
            FunctionName::parse("f").expect("name"),
            TenantId::parse(tenant).expect("tenant"),
        )
    }

    #[test]
    fn a_tenant_weighs_one_environment_whatever_its_count() {
        let shares = TenantShares::<Recorder>::new();
        let (f, wide) = key("wide");
        let (_, narrow) = key("narrow");
        let alone = recorder();
        let _narrow = shares.join(f.clone(), narrow, alone.clone(), 7);
        // One environment keeps the weight its limits gave it: nothing is written.
        assert_eq!(last(&alone), None);

        let recorders: Vec<Recorder> = (0..3).map(|_| recorder()).collect();
        let mut guards: Vec<_> = recorders
            .iter()
            .map(|r| shares.join(f.clone(), wide.clone(), r.clone(), 7))
            .collect();
        for r in &recorders {
            assert_eq!(last(r), Some((7, 3)));
        }
        assert_eq!(last(&alone), None, "another tenant is never touched");

        drop(guards.pop());
        for r in &recorders[..2] {
            assert_eq!(last(r), Some((7, 2)));
        }
        drop(guards);
        assert_eq!(shares.tenants(), 1);
    }

    #[test]
    fn the_same_tenant_of_another_function_is_another_group() {
        let shares = TenantShares::<Recorder>::new();
        let (a, b) = (recorder(), recorder());
        let _a = shares.join(
            FunctionName::parse("one").expect("name"),
            TenantId::parse("t").expect("tenant"),
            a.clone(),
            7,
        );
        let _b = shares.join(
            FunctionName::parse("two").expect("name"),
            TenantId::parse("t").expect("tenant"),
            b.clone(),
            7,
        );
        assert_eq!((last(&a), last(&b)), (None, None));
    }
}
