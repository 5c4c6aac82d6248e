"""Repository tools, not the product: the docs' generated tables and the multi-node cost model they print."""
