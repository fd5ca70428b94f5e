"""Safety gates: plain libraries (no Kafka). `streams/` wires them into the prompt and output gate stages."""
