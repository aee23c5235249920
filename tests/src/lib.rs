//! Shared fixtures for the workspace integration tests live here.
