"""buildplane: a local_resource pipeline engine."""
