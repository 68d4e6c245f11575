"""The store on disk: its schema, layout, subject table, checksums, k-space codecs and remote access."""
