"""The ladder: run rungs cheapest first under cost meters, forecast, choose, report, track."""
