//! The monitoring page (placeholder until the page lands).

use std::sync::Arc;

use axum::Router;

use super::Server;

/// The page's routes.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
}
