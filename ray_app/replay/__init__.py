"""Turn MovieLens ratings into a time-ordered stream of line-dialect events on Kafka."""
