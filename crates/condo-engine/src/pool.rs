//! The pool of execution environments: which environment serves which invocation, and the
//! concurrency and environment limits that decide when to start one or to throttle.
//!
//! One owner (the engine, behind a mutex held only for these short, non-async calls). Idle
//! environments live here; a busy one is owned by the invocation using it and comes back
//! through [`Pool::release`], filed under the key it was built with. There is no way to change
//! an environment's key, so an environment that served tenant A can never be handed to tenant B.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use condo_types::{FunctionName, TenantId, Version};

/// What an environment is bound to for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub function: FunctionName,
    pub version: Version,
    /// The configuration revision: a code or configuration change never reuses old environments.
    pub revision: String,
    /// `Some` for PER_TENANT functions; `None` means environments are shared, as plain Lambda.
    pub tenant: Option<TenantId>,
}

/// Anything the pool can hold: it only needs to know the key it was built with.
pub trait Pooled {
    fn key(&self) -> &PoolKey;
}

/// Why an invocation was refused. Maps to `TooManyRequestsException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The account-wide concurrency is in use.
    ConcurrentInvocationLimitExceeded,
    /// The function's reserved concurrency is in use.
    ReservedFunctionConcurrentInvocationLimitExceeded,
    /// Every tenant environment the function may keep is busy (2,500 per 1,000 concurrency).
    TenantEnvironmentLimitExceeded,
    /// The host holds as many environments as it is configured to, and none is idle.
    HostEnvironmentLimitExceeded,
    /// This tenant has as many invocations of the function in flight as the function allows
    /// one tenant (`condo:tenant-max-concurrency`); other tenants are unaffected.
    TenantConcurrencyLimitExceeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Account concurrency: invocations in flight at once, over all functions.
    pub account_concurrency: u32,
    /// Environments (busy or idle) of PER_TENANT functions per unit of concurrency, ×1000.
    /// Lambda allows 2,500 per 1,000 concurrent executions.
    pub tenant_envs_per_mille: u32,
    /// Environments (busy or idle) the host keeps at most, over all functions.
    pub max_environments: u32,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            account_concurrency: 64,
            tenant_envs_per_mille: 2500,
            max_environments: 1024,
        }
    }
}

/// The result of asking for an environment.
#[derive(Debug)]
pub enum Checkout<E> {
    /// A warm environment of exactly this key.
    Warm(E),
    /// None idle: the caller must start one. `evicted` are idle environments of other keys that
    /// were removed to make room and must be stopped.
    Cold { evicted: Vec<E> },
}

struct Idle<E> {
    env: E,
    since: Instant,
}

#[derive(Default)]
struct FunctionCounts {
    in_flight: u32,
    environments: u32,
}

pub struct Pool<E> {
    limits: PoolLimits,
    idle: HashMap<PoolKey, Vec<Idle<E>>>,
    /// Idle keys in the order they went idle, for least-recently-used eviction.
    idle_order: VecDeque<(PoolKey, Instant)>,
    in_flight: u32,
    per_function: HashMap<FunctionName, FunctionCounts>,
    reserved: HashMap<FunctionName, u32>,
    /// Invocations one tenant may have in flight, for functions that cap it.
    tenant_caps: HashMap<FunctionName, u32>,
    /// In-flight invocations per tenant, for functions that cap it (no entry at zero).
    tenant_in_flight: HashMap<(FunctionName, TenantId), u32>,
}

impl<E: Pooled> Pool<E> {
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            limits,
            idle: HashMap::new(),
            idle_order: VecDeque::new(),
            in_flight: 0,
            per_function: HashMap::new(),
            reserved: HashMap::new(),
            tenant_caps: HashMap::new(),
            tenant_in_flight: HashMap::new(),
        }
    }

    /// Sets (or with `None` removes) how many invocations one tenant may have in flight.
    pub fn set_tenant_cap(&mut self, function: &FunctionName, cap: Option<u32>) {
        match cap {
            Some(n) => self.tenant_caps.insert(function.clone(), n),
            None => self.tenant_caps.remove(function),
        };
    }

    pub fn set_reserved(&mut self, function: &FunctionName, reserved: Option<u32>) {
        match reserved {
            Some(n) => self.reserved.insert(function.clone(), n),
            None => self.reserved.remove(function),
        };
    }

    /// Concurrency the unreserved functions share: the account's minus every reservation.
    pub fn unreserved_concurrency(&self) -> u32 {
        let reserved: u32 = self.reserved.values().sum();
        self.limits.account_concurrency.saturating_sub(reserved)
    }

    /// Takes a warm environment for `key`, or admits a cold start, or throttles.
    pub fn checkout(&mut self, key: &PoolKey) -> Result<Checkout<E>, Throttle> {
        let function_limit = self.function_concurrency(&key.function);
        let counts = self.per_function.entry(key.function.clone()).or_default();
        if self.in_flight >= self.limits.account_concurrency {
            return Err(Throttle::ConcurrentInvocationLimitExceeded);
        }
        if counts.in_flight >= function_limit {
            return Err(if self.reserved.contains_key(&key.function) {
                Throttle::ReservedFunctionConcurrentInvocationLimitExceeded
            } else {
                Throttle::ConcurrentInvocationLimitExceeded
            });
        }
        if let (Some(tenant), Some(&cap)) = (&key.tenant, self.tenant_caps.get(&key.function)) {
            let busy = self
                .tenant_in_flight
                .get(&(key.function.clone(), tenant.clone()))
                .copied()
                .unwrap_or(0);
            if busy >= cap {
                return Err(Throttle::TenantConcurrencyLimitExceeded);
            }
        }
        if let Some(env) = self.take_idle(key) {
            self.admit(key);
            return Ok(Checkout::Warm(env));
        }
        let mut evicted = Vec::new();
        if key.tenant.is_some() {
            let cap = self.tenant_environment_cap(&key.function);
            let environments = self
                .per_function
                .get(&key.function)
                .map_or(0, |c| c.environments);
            if environments >= cap {
                // Make room by stopping this function's least recently used idle environment.
                match self.evict_lru(|k| k.function == key.function) {
                    Some(env) => evicted.push(env),
                    None => return Err(Throttle::TenantEnvironmentLimitExceeded),
                }
            }
        }
        if evicted.is_empty() && self.environment_count() >= self.limits.max_environments {
            match self.evict_lru(|_| true) {
                Some(env) => evicted.push(env),
                None => return Err(Throttle::HostEnvironmentLimitExceeded),
            }
        }
        self.admit(key);
        self.per_function
            .entry(key.function.clone())
            .or_default()
            .environments += 1;
        Ok(Checkout::Cold { evicted })
    }

    /// Gives an environment back after an invocation. A healthy one goes idle under its own key;
    /// an unhealthy one is returned to the caller to be stopped.
    pub fn release(&mut self, env: E, healthy: bool, now: Instant) -> Option<E> {
        let function = env.key().function.clone();
        self.finish(env.key());
        if healthy {
            let key = env.key().clone();
            self.idle_order.push_back((key.clone(), now));
            self.idle
                .entry(key)
                .or_default()
                .push(Idle { env, since: now });
            None
        } else {
            self.forget_environment(&function);
            Some(env)
        }
    }

    /// A cold start that never produced an environment.
    pub fn cold_start_failed(&mut self, key: &PoolKey) {
        self.finish(key);
        self.forget_environment(&key.function);
    }

    /// Removes idle environments unused for `max_idle` and returns them to be stopped.
    pub fn reap(&mut self, now: Instant, max_idle: Duration) -> Vec<E> {
        self.remove_idle_where(|_, since| now.saturating_duration_since(since) >= max_idle)
    }

    /// Removes every idle environment of a function (code or configuration changed, deleted).
    pub fn evict_function(&mut self, function: &FunctionName) -> Vec<E> {
        self.remove_idle_where(|k, _| &k.function == function)
    }

    /// Removes every idle environment of one tenant of a function (tenant offboarding).
    pub fn evict_tenant(&mut self, function: &FunctionName, tenant: &TenantId) -> Vec<E> {
        self.remove_idle_where(|k, _| &k.function == function && k.tenant.as_ref() == Some(tenant))
    }

    /// Removes everything idle (shutdown).
    pub fn drain(&mut self) -> Vec<E> {
        self.remove_idle_where(|_, _| true)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn environment_count(&self) -> u32 {
        self.per_function.values().map(|c| c.environments).sum()
    }

    fn function_concurrency(&self, function: &FunctionName) -> u32 {
        match self.reserved.get(function) {
            Some(&n) => n,
            None => self.unreserved_concurrency(),
        }
    }

    fn tenant_environment_cap(&self, function: &FunctionName) -> u32 {
        let concurrency = u64::from(self.function_concurrency(function));
        let cap = concurrency * u64::from(self.limits.tenant_envs_per_mille) / 1000;
        u32::try_from(cap).unwrap_or(u32::MAX).max(1)
    }

    fn admit(&mut self, key: &PoolKey) {
        self.in_flight += 1;
        self.per_function
            .entry(key.function.clone())
            .or_default()
            .in_flight += 1;
        if let Some(tenant) = &key.tenant {
            if self.tenant_caps.contains_key(&key.function) {
                *self
                    .tenant_in_flight
                    .entry((key.function.clone(), tenant.clone()))
                    .or_default() += 1;
            }
        }
    }

    fn finish(&mut self, key: &PoolKey) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(c) = self.per_function.get_mut(&key.function) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        if let Some(tenant) = &key.tenant {
            let entry = (key.function.clone(), tenant.clone());
            if let Some(n) = self.tenant_in_flight.get_mut(&entry) {
                *n -= 1;
                if *n == 0 {
                    self.tenant_in_flight.remove(&entry);
                }
            }
        }
    }

    fn forget_environment(&mut self, function: &FunctionName) {
        if let Some(c) = self.per_function.get_mut(function) {
            c.environments = c.environments.saturating_sub(1);
            if c.environments == 0 && c.in_flight == 0 {
                self.per_function.remove(function);
            }
        }
    }

    fn take_idle(&mut self, key: &PoolKey) -> Option<E> {
        let stack = self.idle.get_mut(key)?;
        // The most recently used environment is the warmest.
        let idle = stack.pop()?;
        if stack.is_empty() {
            self.idle.remove(key);
        }
        debug_assert!(idle.env.key() == key);
        Some(idle.env)
    }

    fn evict_lru(&mut self, matches: impl Fn(&PoolKey) -> bool) -> Option<E> {
        // idle_order may hold stale entries (taken or reaped since); skip those.
        let mut i = 0;
        while i < self.idle_order.len() {
            let (key, since) = &self.idle_order[i];
            if matches(key) {
                if let Some(stack) = self.idle.get_mut(key) {
                    if let Some(pos) = stack.iter().position(|e| e.since == *since) {
                        let idle = stack.remove(pos);
                        if stack.is_empty() {
                            self.idle.remove(&idle.env.key().clone());
                        }
                        self.idle_order.remove(i);
                        self.forget_environment(&idle.env.key().function.clone());
                        return Some(idle.env);
                    }
                }
                self.idle_order.remove(i);
                continue;
            }
            i += 1;
        }
        None
    }

    fn remove_idle_where(&mut self, pred: impl Fn(&PoolKey, Instant) -> bool) -> Vec<E> {
        let mut removed = Vec::new();
        self.idle.retain(|key, stack| {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(stack)
                .into_iter()
                .partition(|i| pred(key, i.since));
            *stack = kept;
            removed.extend(gone.into_iter().map(|i| i.env));
            !stack.is_empty()
        });
        for env in &removed {
            self.forget_environment(&env.key().function.clone());
        }
        let idle = &self.idle;
        self.idle_order.retain(|(k, since)| {
            idle.get(k)
                .is_some_and(|s| s.iter().any(|i| i.since == *since))
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stand-in environment that remembers every tenant it ever served.
    #[derive(Debug)]
    struct Recorder {
        key: PoolKey,
        served: Vec<Option<TenantId>>,
    }

    impl Pooled for Recorder {
        fn key(&self) -> &PoolKey {
            &self.key
        }
    }

    fn key(function: &str, tenant: Option<&str>) -> PoolKey {
        PoolKey {
            function: FunctionName::parse(function).unwrap(),
            version: Version::Latest,
            revision: "r".into(),
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Invoke { function: u8, tenant: Option<u8> },
        Finish { slot: usize, healthy: bool },
        Reap,
        EvictTenant { tenant: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..2, proptest::option::of(0u8..6)).prop_map(|(function, tenant)| Op::Invoke { function, tenant }),
            3 => (0usize..8, proptest::bool::weighted(0.9)).prop_map(|(slot, healthy)| Op::Finish { slot, healthy }),
            1 => Just(Op::Reap),
            1 => (0u8..6).prop_map(|tenant| Op::EvictTenant { tenant }),
        ]
    }

    proptest! {
        /// The isolation invariant: no environment ever serves two tenants, and a shared
        /// (non-isolated) environment never serves a tenant-isolated key.
        #[test]
        fn an_environment_never_serves_two_tenants(ops in proptest::collection::vec(op(), 1..300)) {
            let mut pool: Pool<Recorder> = Pool::new(PoolLimits { account_concurrency: 4, tenant_envs_per_mille: 2500, max_environments: 1024 });
            let mut busy: Vec<Recorder> = Vec::new();
            let start = Instant::now();
            let mut clock = 0u64;
            for op in ops {
                clock += 1;
                let now = start + Duration::from_millis(clock * 10);
                match op {
                    Op::Invoke { function, tenant } => {
                        // Function 0 is PER_TENANT (always has a tenant), function 1 is shared.
                        let k = if function == 0 {
                            key("iso", Some(&format!("T{}", tenant.unwrap_or(0))))
                        } else {
                            key("shared", None)
                        };
                        match pool.checkout(&k) {
                            Ok(Checkout::Warm(mut env)) => {
                                prop_assert_eq!(env.key(), &k);
                                env.served.push(k.tenant.clone());
                                busy.push(env);
                            }
                            Ok(Checkout::Cold { .. }) => {
                                busy.push(Recorder { key: k.clone(), served: vec![k.tenant.clone()] });
                            }
                            Err(_) => prop_assert!(pool.in_flight() <= 4),
                        }
                    }
                    Op::Finish { slot, healthy } => {
                        if !busy.is_empty() {
                            let env = busy.swap_remove(slot % busy.len());
                            let _ = pool.release(env, healthy, now);
                        }
                    }
                    Op::Reap => { pool.reap(now, Duration::from_millis(50)); }
                    Op::EvictTenant { tenant } => {
                        let t = TenantId::parse(&format!("T{tenant}")).unwrap();
                        pool.evict_tenant(&FunctionName::parse("iso").unwrap(), &t);
                    }
                }
                for env in &busy {
                    let first = &env.served[0];
                    prop_assert!(env.served.iter().all(|t| t == first), "environment served {:?}", env.served);
                    prop_assert_eq!(first, &env.key.tenant);
                }
                prop_assert!(pool.in_flight() as usize == busy.len());
                prop_assert!(pool.in_flight() <= 4);
            }
        }
    }

    #[test]
    fn a_tenant_cap_throttles_only_that_tenant() {
        let mut pool: Pool<Recorder> = Pool::new(PoolLimits::default());
        let f = FunctionName::parse("f").unwrap();
        pool.set_tenant_cap(&f, Some(2));
        let noisy = key("f", Some("Noisy"));
        let quiet = key("f", Some("Quiet"));
        let env = |k: &PoolKey| Recorder {
            key: k.clone(),
            served: vec![],
        };
        assert!(pool.checkout(&noisy).is_ok());
        assert!(pool.checkout(&noisy).is_ok());
        assert_eq!(
            pool.checkout(&noisy).err(),
            Some(Throttle::TenantConcurrencyLimitExceeded)
        );
        // Another tenant of the same function still gets in.
        assert!(pool.checkout(&quiet).is_ok());
        // A finished invocation frees a place, warm or failed cold start alike.
        assert!(pool.release(env(&noisy), true, Instant::now()).is_none());
        assert!(matches!(pool.checkout(&noisy), Ok(Checkout::Warm(_))));
        pool.cold_start_failed(&noisy);
        assert!(pool.checkout(&noisy).is_ok());
        assert_eq!(pool.in_flight(), 3);
        // Without the cap the tenant may use the function's whole concurrency.
        pool.set_tenant_cap(&f, None);
        assert!(pool.checkout(&noisy).is_ok());
    }

    #[test]
    fn warm_reuse_within_a_tenant_and_never_across() {
        let mut pool = Pool::new(PoolLimits::default());
        let now = Instant::now();
        let blue = key("f", Some("Blue"));
        let green = key("f", Some("Green"));
        assert!(matches!(pool.checkout(&blue), Ok(Checkout::Cold { .. })));
        assert!(pool
            .release(
                Recorder {
                    key: blue.clone(),
                    served: vec![]
                },
                true,
                now
            )
            .is_none());
        assert!(matches!(pool.checkout(&green), Ok(Checkout::Cold { .. })));
        assert!(matches!(pool.checkout(&blue), Ok(Checkout::Warm(e)) if e.key == blue));
        assert_eq!(pool.environment_count(), 2);
    }

    #[test]
    fn throttles_with_a_reason() {
        let mut pool: Pool<Recorder> = Pool::new(PoolLimits {
            account_concurrency: 2,
            tenant_envs_per_mille: 2500,
            max_environments: 1024,
        });
        let f = FunctionName::parse("f").unwrap();
        pool.set_reserved(&f, Some(1));
        assert!(pool.checkout(&key("f", None)).is_ok());
        assert_eq!(
            pool.checkout(&key("f", None)).unwrap_err(),
            Throttle::ReservedFunctionConcurrentInvocationLimitExceeded
        );
        assert!(pool.checkout(&key("g", None)).is_ok());
        assert_eq!(
            pool.checkout(&key("h", None)).unwrap_err(),
            Throttle::ConcurrentInvocationLimitExceeded
        );
    }

    #[test]
    fn tenant_environment_cap_evicts_idle_then_throttles() {
        // Concurrency 2 -> at most 5 tenant environments.
        let mut pool = Pool::new(PoolLimits {
            account_concurrency: 2,
            tenant_envs_per_mille: 2500,
            max_environments: 1024,
        });
        let now = Instant::now();
        for t in 0..5 {
            let k = key("f", Some(&format!("T{t}")));
            assert!(matches!(pool.checkout(&k), Ok(Checkout::Cold { .. })));
            pool.release(
                Recorder {
                    key: k,
                    served: vec![],
                },
                true,
                now + Duration::from_millis(t),
            );
        }
        // A sixth tenant evicts the least recently used idle one (T0).
        match pool.checkout(&key("f", Some("T5"))) {
            Ok(Checkout::Cold { evicted }) => {
                assert_eq!(evicted.len(), 1);
                assert_eq!(evicted[0].key, key("f", Some("T0")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.environment_count(), 5);
    }
}
