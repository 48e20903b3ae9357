//! Pure rules of the platform: parsing user input into types that cannot be wrong, password
//! rules and hash formats, the hardening policy, labels. Nothing here does IO; callers hand in
//! values and get values back.

pub mod app;
pub mod backup_plan;
pub mod compose;
pub mod dockerfile;
pub mod hardening;
pub mod health;
pub mod host;
pub mod image;
pub mod labels;
pub mod password;
pub mod route;
pub mod service_spec;
pub mod state;
pub mod templates;
pub mod token;
pub mod volume;
