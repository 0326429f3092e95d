//! The control plane: creating, changing, publishing and deleting functions.

use std::sync::Arc;

use condo_store::{CodeError, StoreError, StoredCode};
use condo_types::{
    Architecture, EnvironmentVariables, FunctionConfig, FunctionName, LoggingConfig, MemorySize,
    NetworkAccess, Qualifier, Runtime, RuntimeFamily, TagSettings, Tags, TenancyConfig, Timeout,
    TmpSize, Version, TENANT_CONCURRENCY_TAG,
};

use crate::runtimes::RESERVED_VARIABLES;
use crate::{Engine, EngineError};

/// The settable parts of a function's configuration; `None` keeps the current value (or the
/// default at creation).
#[derive(Debug, Clone, Default)]
pub struct FunctionSettings {
    pub runtime: Option<Runtime>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<Timeout>,
    pub memory: Option<MemorySize>,
    pub tmp_size: Option<TmpSize>,
    pub environment: Option<EnvironmentVariables>,
    pub architecture: Option<Architecture>,
    pub logging: Option<LoggingConfig>,
}

#[derive(Debug, Clone)]
pub struct CreateFunction {
    pub name: FunctionName,
    pub settings: FunctionSettings,
    pub tenancy: Option<TenancyConfig>,
    pub tags: Tags,
    pub zip: Vec<u8>,
    pub publish: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ConfigurationUpdate {
    pub settings: FunctionSettings,
    pub revision_id: Option<String>,
}

fn now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string()
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Engine {
    pub fn function_arn(&self, name: &FunctionName) -> String {
        condo_types::Arn::function(self.region(), self.account_id(), name)
    }

    pub async fn create_function(
        &self,
        req: CreateFunction,
    ) -> Result<FunctionConfig, EngineError> {
        let s = &req.settings;
        let runtime = s.runtime.ok_or_else(|| {
            EngineError::InvalidParameter("Runtime and Handler are mandatory parameters for functions created with deployment packages.".into())
        })?;
        if runtime.family() != RuntimeFamily::Provided
            && s.handler.as_deref().unwrap_or("").is_empty()
        {
            return Err(EngineError::InvalidParameter(
                "Runtime and Handler are mandatory parameters for functions created with deployment packages.".into(),
            ));
        }
        let role = s
            .role
            .clone()
            .ok_or_else(|| EngineError::InvalidParameter("Role is a required parameter".into()))?;
        self.check_runtime(runtime)?;
        if let Some(env) = &s.environment {
            check_reserved(env)?;
        }
        let settings = self.tag_settings(&req.tags, req.tenancy.is_some())?;
        if self
            .shared
            .store
            .get_version(&req.name, Version::Latest)?
            .is_some()
        {
            return Err(EngineError::FunctionExists(self.function_arn(&req.name)));
        }
        let code = self.store_code(req.zip).await?;
        let config = FunctionConfig {
            name: req.name.clone(),
            version: Version::Latest,
            runtime,
            handler: s.handler.clone(),
            role,
            description: s.description.clone().unwrap_or_default(),
            timeout: s.timeout.unwrap_or_default(),
            memory: s.memory.unwrap_or_default(),
            tmp_size: s.tmp_size.unwrap_or_default(),
            environment: s.environment.clone().unwrap_or_default(),
            architecture: s.architecture.unwrap_or_default(),
            logging: s.logging.clone().unwrap_or_default(),
            tenancy: req.tenancy,
            network: settings.network,
            code_id: code.code_id,
            code_sha256: code.sha256_base64,
            code_size: code.zip_size,
            last_modified: now_iso(),
            revision_id: new_revision(),
        };
        match self.shared.store.create_function(
            &config,
            &req.tags,
            chrono::Utc::now().timestamp_millis(),
        ) {
            Err(StoreError::AlreadyExists) => {
                return Err(EngineError::FunctionExists(self.function_arn(&req.name)))
            }
            other => other?,
        }
        self.apply_tenant_cap(&req.name, settings.tenant_max_concurrency);
        if req.publish {
            return self.publish_version(&req.name, None, None).await;
        }
        Ok(config)
    }

    /// A version's configuration (cached). `None` or `$LATEST` is the latest.
    pub fn function(
        &self,
        name: &FunctionName,
        qualifier: Option<&Qualifier>,
    ) -> Result<Arc<FunctionConfig>, EngineError> {
        let version = match qualifier {
            None => Version::Latest,
            Some(Qualifier::Version(v)) => *v,
            Some(Qualifier::Alias(a)) => {
                return Err(EngineError::FunctionNotFound(format!(
                    "{}:{a}",
                    self.function_arn(name)
                )))
            }
        };
        let cache_key = (name.clone(), version);
        if let Some(found) = self
            .shared
            .configs
            .read()
            .ok()
            .and_then(|c| c.get(&cache_key).cloned())
        {
            return Ok(found);
        }
        let config = self
            .shared
            .store
            .get_version(name, version)?
            .ok_or_else(|| {
                let arn = self.function_arn(name);
                EngineError::FunctionNotFound(match version {
                    Version::Latest => arn,
                    v => format!("{arn}:{v}"),
                })
            })?;
        let config = Arc::new(config);
        if let Ok(mut c) = self.shared.configs.write() {
            c.insert(cache_key, config.clone());
        }
        Ok(config)
    }

    pub fn list_functions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FunctionConfig>, EngineError> {
        Ok(self.shared.store.list_functions(after, limit)?)
    }

    pub fn list_versions(&self, name: &FunctionName) -> Result<Vec<FunctionConfig>, EngineError> {
        let versions = self.shared.store.list_versions(name)?;
        if versions.is_empty() {
            return Err(EngineError::FunctionNotFound(self.function_arn(name)));
        }
        Ok(versions)
    }

    pub async fn update_code(
        &self,
        name: &FunctionName,
        zip: Vec<u8>,
        publish: bool,
        revision_id: Option<&str>,
    ) -> Result<FunctionConfig, EngineError> {
        let current = self.function(name, None)?;
        check_revision(&current, revision_id)?;
        let code = self.store_code(zip).await?;
        let mut next = (*current).clone();
        next.code_id = code.code_id;
        next.code_sha256 = code.sha256_base64;
        next.code_size = code.zip_size;
        self.replace_latest(next)?;
        if publish {
            return self.publish_version(name, None, None).await;
        }
        Ok((*self.function(name, None)?).clone())
    }

    pub async fn update_configuration(
        &self,
        name: &FunctionName,
        update: ConfigurationUpdate,
    ) -> Result<FunctionConfig, EngineError> {
        let current = self.function(name, None)?;
        check_revision(&current, update.revision_id.as_deref())?;
        let s = update.settings;
        let mut next = (*current).clone();
        if let Some(runtime) = s.runtime {
            self.check_runtime(runtime)?;
            next.runtime = runtime;
        }
        if let Some(env) = s.environment {
            check_reserved(&env)?;
            next.environment = env;
        }
        if let Some(v) = s.handler {
            next.handler = Some(v);
        }
        if let Some(v) = s.role {
            next.role = v;
        }
        if let Some(v) = s.description {
            next.description = v;
        }
        if let Some(v) = s.timeout {
            next.timeout = v;
        }
        if let Some(v) = s.memory {
            next.memory = v;
        }
        if let Some(v) = s.tmp_size {
            next.tmp_size = v;
        }
        if let Some(v) = s.architecture {
            next.architecture = v;
        }
        if let Some(v) = s.logging {
            next.logging = v;
        }
        self.replace_latest(next)?;
        Ok((*self.function(name, None)?).clone())
    }

    /// Publishes `$LATEST` as a new immutable version (or returns the newest one if nothing
    /// changed since, as Lambda does).
    pub async fn publish_version(
        &self,
        name: &FunctionName,
        description: Option<String>,
        revision_id: Option<&str>,
    ) -> Result<FunctionConfig, EngineError> {
        let latest = self.function(name, None)?;
        check_revision(&latest, revision_id)?;
        let mut candidate = (*latest).clone();
        if let Some(d) = description {
            candidate.description = d;
        }
        let published = self.shared.store.publish_version(&candidate, |existing| {
            existing.code_id == candidate.code_id && same_settings(existing, &candidate)
        })?;
        Ok(published)
    }

    /// Deletes a function, or one published version of it. Its idle environments stop now;
    /// busy ones stop when their invocation ends (their configuration no longer resolves).
    pub fn delete_function(
        &self,
        name: &FunctionName,
        qualifier: Option<&Qualifier>,
    ) -> Result<(), EngineError> {
        let version = match qualifier {
            None => None,
            Some(Qualifier::Version(Version::Latest)) => {
                return Err(EngineError::InvalidParameter(
                    "$LATEST version cannot be deleted without deleting the function.".into(),
                ))
            }
            Some(Qualifier::Version(v)) => Some(*v),
            Some(Qualifier::Alias(a)) => {
                return Err(EngineError::FunctionNotFound(format!(
                    "{}:{a}",
                    self.function_arn(name)
                )))
            }
        };
        if !self.shared.store.delete(name, version)? {
            return Err(EngineError::FunctionNotFound(self.function_arn(name)));
        }
        self.forget(name);
        if version.is_none() {
            if let Ok(mut p) = self.shared.pool.lock() {
                p.set_reserved(name, None);
                p.set_tenant_cap(name, None);
            }
        }
        self.collect_code_garbage();
        Ok(())
    }

    /// A function's tags.
    pub fn tags(&self, name: &FunctionName) -> Result<Tags, EngineError> {
        self.shared
            .store
            .tags(name)?
            .ok_or_else(|| EngineError::FunctionNotFound(self.function_arn(name)))
    }

    /// Adds tags to a function (or changes their values). A change of `condo:network` changes
    /// `$LATEST` and retires its idle environments, as a configuration update does.
    pub fn tag_function(&self, name: &FunctionName, added: &Tags) -> Result<(), EngineError> {
        let next = self
            .tags(name)?
            .merged(added)
            .map_err(|e| EngineError::InvalidParameter(e.constraint))?;
        self.replace_tags(name, next)
    }

    /// Removes tags from a function; keys it does not have are ignored.
    pub fn untag_function(&self, name: &FunctionName, keys: &[String]) -> Result<(), EngineError> {
        let next = self.tags(name)?.without(keys.iter().map(String::as_str));
        self.replace_tags(name, next)
    }

    fn replace_tags(&self, name: &FunctionName, tags: Tags) -> Result<(), EngineError> {
        let current = self.function(name, None)?;
        let settings = self.tag_settings(&tags, current.is_per_tenant())?;
        let latest = (current.network != settings.network).then(|| {
            let mut next = (*current).clone();
            next.network = settings.network;
            next.last_modified = now_iso();
            next.revision_id = new_revision();
            next
        });
        if !self.shared.store.set_tags(name, &tags, latest.as_ref())? {
            return Err(EngineError::FunctionNotFound(self.function_arn(name)));
        }
        if latest.is_some() {
            self.forget(name);
        }
        self.apply_tenant_cap(name, settings.tenant_max_concurrency);
        Ok(())
    }

    pub(crate) fn apply_tenant_cap(&self, name: &FunctionName, cap: Option<u32>) {
        if let Ok(mut p) = self.shared.pool.lock() {
            p.set_tenant_cap(name, cap);
        }
    }

    /// What condo's tags ask for, refused up front when this host cannot provide it or the
    /// function cannot use it.
    fn tag_settings(&self, tags: &Tags, per_tenant: bool) -> Result<TagSettings, EngineError> {
        let settings = tags
            .check_settable()
            .map_err(EngineError::InvalidParameter)?;
        if settings.tenant_max_concurrency.is_some() && !per_tenant {
            return Err(EngineError::InvalidParameter(format!(
                "The {TENANT_CONCURRENCY_TAG} tag applies only to functions in tenant isolation mode (TenancyConfig.TenantIsolationMode PER_TENANT)"
            )));
        }
        if settings.network == NetworkAccess::Outbound
            && self.shared.config.network_helper.is_none()
        {
            return Err(EngineError::InvalidParameter(format!(
                "{}=outbound needs the pasta network helper (Debian package passt) on this host",
                NetworkAccess::TAG
            )));
        }
        Ok(settings)
    }

    pub fn reserved_concurrency(&self, name: &FunctionName) -> Result<Option<u32>, EngineError> {
        self.function(name, None)?;
        Ok(self.shared.store.reserved_concurrency(name)?)
    }

    /// Sets (or with `None` removes) a function's reserved concurrency.
    pub fn set_reserved_concurrency(
        &self,
        name: &FunctionName,
        value: Option<u32>,
    ) -> Result<(), EngineError> {
        self.function(name, None)?;
        let account = self.shared.config.limits.account_concurrency;
        let minimum_unreserved = (account / 10).max(1);
        if let Some(n) = value {
            let others: u32 = self
                .shared
                .store
                .all_reserved_concurrency()?
                .into_iter()
                .filter(|(f, _)| f != name.as_str())
                .map(|(_, n)| n)
                .sum();
            if others.saturating_add(n) > account.saturating_sub(minimum_unreserved) {
                return Err(EngineError::InvalidParameter(format!(
                    "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{minimum_unreserved}]."
                )));
            }
        }
        self.shared.store.set_reserved_concurrency(name, value)?;
        if let Ok(mut p) = self.shared.pool.lock() {
            p.set_reserved(name, value);
        }
        Ok(())
    }

    /// Tenant offboarding: stops every idle environment of one tenant of a function now.
    /// Returns how many were stopped.
    pub fn evict_tenant(&self, name: &FunctionName, tenant: &condo_types::TenantId) -> usize {
        let evicted = self
            .shared
            .pool
            .lock()
            .map(|mut p| p.evict_tenant(name, tenant))
            .unwrap_or_default();
        let n = evicted.len();
        self.shared.stop_all(evicted);
        n
    }

    /// Concurrency not reserved by any function.
    pub fn unreserved_concurrency(&self) -> u32 {
        self.shared
            .pool
            .lock()
            .map(|p| p.unreserved_concurrency())
            .unwrap_or(0)
    }

    fn check_runtime(&self, runtime: Runtime) -> Result<(), EngineError> {
        if self.shared.runtimes.supports(runtime) {
            Ok(())
        } else {
            Err(EngineError::UnsupportedRuntime {
                runtime: runtime.to_string(),
                supported: self.shared.runtimes.supported().join(", "),
            })
        }
    }

    async fn store_code(&self, zip: Vec<u8>) -> Result<StoredCode, EngineError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.code.put_zip(&zip))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .map_err(|e| match e {
                CodeError::UnzippedTooLarge => EngineError::CodeTooLarge,
                other => EngineError::InvalidCode(other),
            })
    }

    fn replace_latest(&self, mut next: FunctionConfig) -> Result<(), EngineError> {
        next.last_modified = now_iso();
        next.revision_id = new_revision();
        self.shared.store.update_version(&next)?;
        self.forget(&next.name);
        self.collect_code_garbage();
        Ok(())
    }

    /// Drops cached configurations and idle environments of a function after a change.
    fn forget(&self, name: &FunctionName) {
        if let Ok(mut c) = self.shared.configs.write() {
            c.retain(|(n, _), _| n != name);
        }
        let evicted = self
            .shared
            .pool
            .lock()
            .map(|mut p| p.evict_function(name))
            .unwrap_or_default();
        self.shared.stop_all(evicted);
    }

    /// Removes code no version refers to any more (best effort).
    fn collect_code_garbage(&self) {
        let Ok(referenced) = self.shared.store.referenced_code() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(self.shared.config.data_dir.join("code")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.trim_end_matches(".zip");
            // Fresh code may belong to a function being created right now.
            let recent = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().map_or(true, |age| age.as_secs() < 300))
                .unwrap_or(true);
            if id.len() == 64 && !recent && !referenced.iter().any(|r| r == id) {
                let _ = self.shared.code.remove(id);
            }
        }
    }
}

fn check_revision(current: &FunctionConfig, expected: Option<&str>) -> Result<(), EngineError> {
    match expected {
        Some(rev) if rev != current.revision_id => Err(EngineError::RevisionMismatch),
        _ => Ok(()),
    }
}

fn check_reserved(env: &EnvironmentVariables) -> Result<(), EngineError> {
    let used: Vec<&str> = env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| RESERVED_VARIABLES.contains(k))
        .collect();
    if used.is_empty() {
        Ok(())
    } else {
        Err(EngineError::ReservedVariables(used.join(", ")))
    }
}

/// Whether two versions would behave the same (ignoring identity and timestamps).
fn same_settings(a: &FunctionConfig, b: &FunctionConfig) -> bool {
    a.runtime == b.runtime
        && a.handler == b.handler
        && a.role == b.role
        && a.description == b.description
        && a.timeout == b.timeout
        && a.memory == b.memory
        && a.tmp_size == b.tmp_size
        && a.environment == b.environment
        && a.architecture == b.architecture
        && a.logging == b.logging
        && a.network == b.network
}
