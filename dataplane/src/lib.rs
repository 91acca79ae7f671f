//! vibe-dataplane (under construction)
