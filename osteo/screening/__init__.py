"""`osteo screen`: every in-scope hip image scored by the champion, written back to the PACS as an SR and a
secondary capture, listed for referral, and checked against the DEXA that follows (docs/design.md)."""
