"""Approval requests for actions no standing scope covers, and the channels that reach approvers."""
