"""The review domain: tasks (severity, SLA), which decision counts, claims with leases, queue read models.

A plain library: no Kafka, no Faust, nothing from `streams` or `review_ui`; both of those use it.
"""
