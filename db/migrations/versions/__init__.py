"""One file per schema revision, oldest first: 0001 is the schema of commit 82910aa (docs/production.md)."""
