"""Freshness (DESIGN §6): what an image and a release are built from, hashed cheaply, so a step runs
only when its inputs changed."""
from .digests import (ImageInputs, StatCache, changed_files, image_inputs, release_files, release_inputs, shown_paths,
                      target_inputs, tree_hashes, walk_context)
from .dockerignore import DockerIgnore

__all__ = ["ImageInputs", "StatCache", "changed_files", "image_inputs", "release_files", "release_inputs", "shown_paths",
           "target_inputs", "tree_hashes", "walk_context", "DockerIgnore"]
