"""Scripts of studies whose answers are pending: each writes its record under docs/records/."""
