"""Model architectures and cached, seeded training."""
