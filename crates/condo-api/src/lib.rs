//! The Lambda REST API (2015-03-31 and friends) over HTTP: wire shapes, SigV4 authentication,
//! and the one place where engine errors become AWS error shapes.
//!
//! Architecture invariant: this crate alone knows AWS wire shapes, error type strings and SigV4;
//! it holds no state of its own beyond the credentials it checks.
#![forbid(unsafe_code)]

mod auth;
mod error;
mod functions;
mod invoke;
pub mod sigv4;
mod wire;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;
use condo_engine::Engine;

pub use auth::ApiCredentials;
pub use error::ApiError;
pub use invoke::COLD_START_HEADER;

/// Largest request body: a 50 MB ZIP, base64-encoded inside JSON.
pub const MAX_REQUEST_BYTES: usize = 70 * 1024 * 1024;

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Engine,
    pub credentials: Arc<ApiCredentials>,
}

/// The whole API as one router; serve it with `axum::serve`.
pub fn router(engine: Engine, credentials: ApiCredentials) -> Router {
    let state = AppState {
        engine,
        credentials: Arc::new(credentials),
    };
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/2015-03-31/functions/{function}",
            get(functions::get).delete(functions::delete),
        )
        .route(
            "/2015-03-31/functions/{function}/configuration",
            get(functions::get_configuration).put(functions::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{function}/code",
            put(functions::update_code),
        )
        .route(
            "/2015-03-31/functions/{function}/versions",
            post(functions::publish_version).get(functions::list_versions),
        )
        .route(
            "/2015-03-31/functions/{function}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2017-10-31/functions/{function}/concurrency",
            put(functions::put_concurrency).delete(functions::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{function}/concurrency",
            get(functions::get_concurrency),
        )
        .route(
            "/2016-08-19/account-settings",
            get(functions::account_settings),
        )
        .route(
            "/2017-03-31/tags/{resource}",
            get(functions::list_tags)
                .post(functions::tag_resource)
                .delete(functions::untag_resource),
        )
        .route("/condo/code/{code}", get(functions::download_code))
        .fallback(error::unknown_operation)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}
