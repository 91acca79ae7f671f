//! vibe-operator (under construction)
