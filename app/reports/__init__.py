"""What staff and third parties read: search, exports, the dashboard's figures and evidence
bundles.
"""
