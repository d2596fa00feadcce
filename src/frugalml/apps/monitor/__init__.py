"""Financial sentiment monitor: score a stream of texts, track negative sentiment per topic,
alert on abnormal shifts with the texts that caused them, and watch the model itself.

Modules: `events` (records and file/stdin sources), `redis_source` (a Redis Streams consumer
group), `scoring` (sentiment and topics), `store` (SQLite/PostgreSQL), `detect` (CUSUM, EWMA,
volume surge, corrected shares), `drift` (model monitoring), `pipeline` (the monitor),
`sinks`, `report` (HTML), `serving` (routes on `frugalml serve`), `cli`.
"""
