"""The reviewer console: queues, claims, decisions, admin view; HTML and a JSON API over the same actions."""
