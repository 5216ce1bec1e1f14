"""Program messages: the send API's batches, decided by the sending rules and queued in the outbox.

A layer above the outbox (it queues into it) and below the reports and the web edge.
"""
