"""The topology: one YAML file → frozen typed models, validated once (DESIGN §5)."""
from .load import load, topology_path
from .model import (BUILD_MODES, DEFAULT_TOPOLOGY, MODES, TAG_FIELDS, Argo, BuildMode, Target, Topology)

__all__ = ["load", "topology_path", "BUILD_MODES", "DEFAULT_TOPOLOGY", "MODES", "TAG_FIELDS", "Argo", "BuildMode",
           "Target", "Topology"]
