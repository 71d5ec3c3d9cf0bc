"""Adapters that put the gate at the interception points agent runtimes already have."""
