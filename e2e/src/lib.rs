//! vibe-e2e (under construction)
