"""Field mappings between remote records and canonical incident fields: model, validation,
transforms and hot reload. Pure: the only I/O is reading the mapping files themselves."""

from syncd.mapping.loader import default_mapping_path, load_mapping, parse_mapping, validate_files
from syncd.mapping.model import Mapping, MappingError, Problem, UnmappableValue
from syncd.mapping.reload import MappingSet, ReloadResult

__all__ = ["Mapping", "MappingError", "MappingSet", "Problem", "ReloadResult",
           "UnmappableValue", "default_mapping_path", "load_mapping", "parse_mapping", "validate_files"]
