"""The ledger: append-only records in canonical JSON, their hashes, and their verification."""

from etlb.ledger.records import LedgerEntry, RecordType, chain_hash, envelope, leaf_hash

__all__ = ["LedgerEntry", "RecordType", "chain_hash", "envelope", "leaf_hash"]
