"""Test helpers shipped with cairn: contract suites every backend must pass, and fixtures.

- :mod:`cairn.testing.store_contract`: ``MetadataStoreContract`` (subclass it and provide a
  ``store`` fixture) for metadata store backends;
- :mod:`cairn.testing.populate`: fill a metadata store with synthetic executions fast.

Modules are imported on use (the contract suites need pytest).
"""
