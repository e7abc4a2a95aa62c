"""The agent's tools: thin typed adapters over tools.domain and tools.store (see tools.catalog)."""
