"""Collector storage: where accepted batches and attachments are kept."""
