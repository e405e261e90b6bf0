"""The store format: attrs schema, key space (layout), block wire format, zarr arrays."""
