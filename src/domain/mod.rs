//! Pure rules of the platform: parsing user input into types that cannot be wrong, password
//! rules and hash formats. Nothing here does IO; callers hand in bytes and get values back.

pub mod password;
pub mod route;
